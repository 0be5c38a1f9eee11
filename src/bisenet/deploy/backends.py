"""Inference backends behind one interface: normalised float32 NCHW in, float32 logits NCHW out.

`build_backend(name, model, device)` is what predict, eval and bench call; `BACKENDS` maps
each name to its constructor.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bisenet.engine.distributed import resolve_device
from bisenet.errors import BisenetError, nearest
from bisenet.models.layers import check_input_size


class Backend:
    """Callable on a normalised float32 N x 3 x H x W tensor; returns float32 logits on the same device."""

    name: str = "backend"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TorchBackend(Backend):
    """A PyTorch module run under inference mode: optionally channels_last, autocast, or low-precision weights."""

    def __init__(self, name: str, module: Callable, device: torch.device, channels_last: bool = False,
                 autocast: torch.dtype | None = None, input_dtype: torch.dtype | None = None) -> None:
        self.name, self.module, self.device = name, module, device
        self.channels_last, self.autocast, self.input_dtype = channels_last, autocast, input_dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.input_dtype is not None:
            x = x.to(self.input_dtype)
        amp = torch.autocast(self.device.type, dtype=self.autocast) if self.autocast else contextlib.nullcontext()
        with torch.inference_mode(), amp:
            return self.module(x).float()


class OnnxBackend(Backend):
    """An onnxruntime session; inputs go through host memory (numpy) both ways."""

    def __init__(self, name: str, path: str | os.PathLike, device: torch.device, keep: Any = None) -> None:
        from bisenet.deploy.export import ort_session

        self.name, self.device = name, device
        self.session = ort_session(path, str(device))
        self.providers = self.session.get_providers()
        self._keep = keep  # the temp folder holding the .onnx lives as long as the backend

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x)  # the model's own message, not onnxruntime's broadcast failure deep in the graph
        feed = x.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self.session.run(None, {"input": feed})[0]
        return torch.from_numpy(out).to(self.device)


def _amp_dtype(device: torch.device, dtype: str | None) -> torch.dtype:
    # bf16 on CPU (AVX-512 BF16 / AMX kernels), fp16 on CUDA (tensor cores; bf16 on request).
    name = dtype or ("fp16" if device.type == "cuda" else "bf16")
    table = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if name not in table:
        raise BisenetError(f"amp dtype {name!r}: use one of {', '.join(table)}")
    if name == "bf16" and device.type == "cpu":
        _warn_if_bf16_is_slow()
    return table[name]


def _warn_if_bf16_is_slow() -> None:
    from bisenet.engine.monitor import warn
    from bisenet.runtime import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        warn("bf16 on this CPU (no AVX-512 BF16 or AMX) runs several times slower than fp32; "
             "use the fold_bn, onnxruntime or openvino backend")


def build_eager(model: nn.Module, device: torch.device) -> Backend:
    """fp32 PyTorch, as is: the reference every other backend is compared with."""
    return TorchBackend("eager", model.to(device).eval(), device)


def build_amp(model: nn.Module, device: torch.device, dtype: str | None = None) -> Backend:
    """channels_last + autocast (bf16 on CPU, fp16 on CUDA) on a copy of the model."""
    net = copy.deepcopy(model).to(device).eval().to(memory_format=torch.channels_last)
    return TorchBackend("amp", net, device, channels_last=True, autocast=_amp_dtype(device, dtype))


def build_fold_bn(model: nn.Module, device: torch.device) -> Backend:
    """fp32 with every conv -> BN pair folded into one conv, channels_last (a copy of the model)."""
    from bisenet.deploy.fold import fold_batchnorm

    # channels_last alone makes oneDNN's fp32 convs about 1.5x faster on CPU, at no cost in accuracy.
    net = fold_batchnorm(model.to(device)).to(memory_format=torch.channels_last)
    return TorchBackend("fold_bn", net, device, channels_last=True)


def build_compile(model: nn.Module, device: torch.device, dtype: str | None = None,
                  mode: str | None = None) -> Backend:
    """torch.compile (inductor, frozen weights) of the BN-folded channels_last model in bf16 (CPU) / fp16 (CUDA).

    The weights themselves are cast (not autocast): no per-call weight casts, and about 15%
    faster than autocast on CPU. dtype="fp32" compiles the fp32 model instead.
    """
    from bisenet.deploy.fold import fold_batchnorm

    cast = None if dtype == "fp32" else _amp_dtype(device, dtype)
    net = fold_batchnorm(model.to(device)).to(memory_format=torch.channels_last)
    if cast is not None:
        net = net.to(cast)
    # freezing: weights become constants, so inductor can pre-pack them for oneDNN on CPU.
    compiled = torch.compile(net, mode=mode, options={"freezing": True} if device.type == "cpu" else None)
    return TorchBackend("compile", compiled, device, channels_last=True, input_dtype=cast)


def build_compile_graphs(model: nn.Module, device: torch.device, dtype: str | None = None) -> Backend:
    """`compile` whose forward replays a CUDA graph (inductor's mode="reduce-overhead"); CUDA only.

    At batch 1 a real-time model's kernels are short, so launching them costs a share of the
    time that one graph replay removes. Each call copies the logits out of the graph's buffers.
    """
    check_available("compile_graphs", device)
    backend = build_compile(model, device, dtype=dtype, mode="reduce-overhead")
    graphed = backend.module

    def forward(x: torch.Tensor) -> torch.Tensor:
        torch.compiler.cudagraph_mark_step_begin()  # the previous call's outputs may be overwritten now
        return graphed(x).clone()

    backend.name, backend.module = "compile_graphs", forward
    return backend


def _export_temp(model: nn.Module, size: tuple[int, int]) -> tuple[tempfile.TemporaryDirectory, Path]:
    from bisenet.deploy.export import export_onnx

    folder = tempfile.TemporaryDirectory(prefix="bisenet-onnx-")
    path = Path(folder.name) / "model.onnx"
    export_onnx(model, path, *size, dynamic=True, check=False)
    return folder, path


def build_onnxruntime(model: nn.Module, device: torch.device, export_size: tuple[int, int] = (256, 256)) -> Backend:
    """onnxruntime (CUDA EP where present, else CPU EP) on a temporary dynamic-shape ONNX export."""
    folder, path = _export_temp(model, export_size)
    return OnnxBackend("onnxruntime", path, device, keep=folder)


def _calibration_batches(calibration: Any, size: tuple[int, int] | None, mean: Sequence[float] | None,
                         std: Sequence[float] | None, limit: int, backend: str) -> list[torch.Tensor]:
    """Normalised 1 x 3 x H x W calibration batches from a folder, a list of image files, or a list of images."""
    from bisenet.deploy.images import IMAGENET_MEAN, IMAGENET_STD, as_batches, read_folder

    if calibration is None:
        raise BisenetError(f"the {backend} backend needs calibration images: pass calibration=<folder or list of images> "
                           "(--calibration DIR on the CLI)")
    files = isinstance(calibration, (list, tuple)) and all(isinstance(c, (str, os.PathLike)) for c in calibration)
    if isinstance(calibration, (str, os.PathLike)) or (calibration and files):  # a folder or image files
        if mean is None or std is None:  # ImageNet's would fit the ranges to input the model never sees
            raise BisenetError(f"the {backend} backend reads calibration images from files: pass mean= and std=, the "
                               "normalisation the model was trained with (its config's data.mean/data.std, or "
                               f"Segmenter.info.mean/std; ImageNet's is mean={list(IMAGENET_MEAN)} std={list(IMAGENET_STD)})")
        # size None: the first image's, rounded to multiples of 32
        calibration = read_folder(calibration, size, mean, std, limit)
    batches = as_batches(calibration)
    return batches[:limit] if limit else batches


def build_int8(model: nn.Module, device: torch.device, calibration: Any = None, size: tuple[int, int] | None = None,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None, limit: int = 8,
               keep_fp32: Sequence[str] = ()) -> Backend:
    """onnxruntime static int8 (QDQ) calibrated on a folder of images or a list of normalised images."""
    from bisenet.deploy.quantize import onnx_float_nodes, quantize_onnx

    batches = _calibration_batches(calibration, size, mean, std, limit, "int8")
    if not keep_fp32:  # the exporter names nodes after module paths: /bga/..., /head/...
        # The model's int8-sensitive modules stay fp32: on a trained Dubai model agreement with
        # fp32 went from 87.9% (classifier alone kept) to 99.2%, at ~1.5x the all-int8 time.
        keep_fp32 = onnx_float_nodes(model)
    folder, fp32 = _export_temp(model, tuple(batches[0].shape[-2:]))
    int8 = fp32.with_name("model_int8.onnx")
    quantize_onnx(fp32, int8, batches, keep_fp32=keep_fp32)
    return OnnxBackend("int8", int8, device, keep=folder)


def build_int8_compile(model: nn.Module, device: torch.device, calibration: Any = None,
                       size: tuple[int, int] | None = None, mean: Sequence[float] | None = None,
                       std: Sequence[float] | None = None, limit: int = 8) -> Backend:
    """PyTorch int8 (torchao pt2e, x86 oneDNN VNNI) + torch.compile, the float parts in bf16; CPU only."""
    from bisenet.deploy.quantize import quantize_pt2e

    check_available("int8_compile", device)
    batches = _calibration_batches(calibration, size, mean, std, limit, "int8_compile")
    quantized = quantize_pt2e(model.to(device), batches)
    # dynamic=False: oneDNN's int8 weight prepacking needs concrete shapes, so each new input
    # size compiles once (~10 s); a fixed deployment size compiles once in all.
    # Freezing through the global config: passed as torch.compile(options=...) it misses the
    # int8 weight-prepacking pass (torch 2.13), and compilation fails on onednn.qconv_prepack.
    from torch._inductor import config as inductor_config

    compiled = inductor_config.patch(freezing=True)(torch.compile(quantized, dynamic=False))
    _warn_if_bf16_is_slow()
    return TorchBackend("int8_compile", compiled, device, autocast=torch.bfloat16)


def build_openvino(model: nn.Module, device: torch.device, **opts: Any) -> Backend:
    """OpenVINO on the CPU, bf16 where the CPU has it (bisenet.deploy.openvino)."""
    from bisenet.deploy.openvino import build_openvino as build

    return build(model, device, **opts)


def build_int8_openvino(model: nn.Module, device: torch.device, **opts: Any) -> Backend:
    """OpenVINO int8, NNCF-quantised convolutions calibrated on images (bisenet.deploy.openvino)."""
    from bisenet.deploy.openvino import build_int8_openvino as build

    return build(model, device, **opts)


# Backends that need calibration images (calibration=, size=, mean=, std=, limit=).
CALIBRATED = ("int8", "int8_compile", "int8_openvino")

BACKENDS: dict[str, Callable[..., Backend]] = {
    "eager": build_eager,
    "amp": build_amp,
    "fold_bn": build_fold_bn,
    "compile": build_compile,
    "compile_graphs": build_compile_graphs,
    "onnxruntime": build_onnxruntime,
    "int8": build_int8,
    "int8_compile": build_int8_compile,
    "openvino": build_openvino,
    "int8_openvino": build_int8_openvino,
}


# What each backend needs beyond PyTorch: packages (by import name) and a device type.
NEEDS_PACKAGES = {"onnxruntime": ("onnxruntime",), "int8": ("onnxruntime",), "int8_compile": ("torchao",),
                  "openvino": ("openvino",), "int8_openvino": ("openvino", "nncf")}
NEEDS_DEVICE = {"compile_graphs": "cuda", "int8_compile": "cpu", "openvino": "cpu", "int8_openvino": "cpu"}


def check_available(name: str, device: str | torch.device) -> None:
    """Refuse (one line, with the fix) a backend whose package or device is missing, before anything is built."""
    import importlib.util

    missing = [package for package in NEEDS_PACKAGES.get(name, ()) if importlib.util.find_spec(package) is None]
    if missing:
        raise BisenetError(f"the {name} backend needs {' and '.join(missing)}: pip install {' '.join(missing)} "
                           "(or pip install -e '.[deploy]')")
    wanted, device = NEEDS_DEVICE.get(name), resolve_device(device)  # 'auto' as the CLI takes it
    if wanted == "cuda" and device.type != "cuda":
        raise BisenetError(f"the {name} backend replays CUDA graphs and needs --device cuda (device='cuda' in Python); "
                           "on CPU use compile")
    if wanted == "cpu" and device.type != "cpu":
        raise BisenetError(f"the {name} backend runs on the CPU only, not {device}; on a GPU use compile or onnxruntime")


def backend_options(name: str) -> list[str]:
    """The keyword options the named backend's builder takes (beyond model and device)."""
    builder = BACKENDS[name]
    if builder in (build_openvino, build_int8_openvino):  # thin wrappers: the options are the real builder's
        from bisenet.deploy import openvino

        builder = getattr(openvino, builder.__name__)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in inspect.signature(builder).parameters.values()
            if p.kind in kinds and p.name not in ("model", "device")]


def build_backend(name: str, model: nn.Module, device: str | torch.device = "cpu", **opts: Any) -> Backend:
    """The named backend around an eval-mode `model`; unknown names, and options it does not take, are refused."""
    if name not in BACKENDS:
        raise BisenetError(f"unknown backend {name!r}{nearest(name, BACKENDS)}; valid: {', '.join(BACKENDS)}")
    check_available(name, device)
    accepted = backend_options(name)
    for key in opts:  # a misspelt dtpye= would otherwise be ignored and the default silently used
        if key not in accepted:
            raise BisenetError(f"the {name} backend takes no option {key}={opts[key]!r}{nearest(key, accepted)}; "
                               f"its options: {', '.join(accepted) or 'none'}")
    return BACKENDS[name](model.eval(), resolve_device(device), **opts)
