"""Deployment and speed: ONNX export, inference backends, int8 quantisation, benchmarks.

Heavy imports (onnx, onnxruntime) happen inside the functions, so importing this package is cheap.
"""

from bisenet.deploy.backends import BACKENDS, Backend, build_backend
from bisenet.deploy.bench import format_table, run_benchmark
from bisenet.deploy.export import ExportCheckError, export_onnx
from bisenet.deploy.fold import fold_batchnorm

__all__ = ["BACKENDS", "Backend", "ExportCheckError", "build_backend", "export_onnx", "fold_batchnorm", "format_table", "run_benchmark"]
