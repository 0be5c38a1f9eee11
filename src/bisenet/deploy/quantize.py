"""Static int8 quantisation of an exported ONNX model with onnxruntime (QDQ format)."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def quantize_onnx(
    fp32_path: str | os.PathLike,
    int8_path: str | os.PathLike,
    calibration: Sequence[torch.Tensor],
    per_channel: bool = True,
    keep_fp32: Sequence[str] = (),
) -> dict[str, object]:
    """Write an int8 QDQ copy of an fp32 ONNX model, calibrated on normalised NCHW batches.

    The classifier (the last Conv) stays in float, as do nodes whose name contains one of
    `keep_fp32`: its outputs are the logits whose argmax is the label, and on a trained
    BiSeNetV2 quantising it too drops agreement with fp32 from ~99.4% to 98.7% for ~2% speed.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {"input": np.ascontiguousarray(item.numpy(), dtype=np.float32)}

    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    with tempfile.TemporaryDirectory(prefix="bisenet-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Shape inference and graph fusion first, as onnxruntime recommends for static quantisation.
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        convs = [n.name for n in graph.node if n.op_type == "Conv"]  # nodes are in topological order
        exclude = [n.name for n in graph.node if any(k in n.name for k in keep_fp32)] + convs[-1:]
        quantize_static(
            str(prepared), str(int8_path), Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,  # u8 activations x s8 weights: the VNNI fast path
            weight_type=QuantType.QInt8,
            # Relu listed so that it shares the conv's output scale: otherwise every conv ends
            # in a dequantise/requantise pair (41 of them in BiSeNetV2, ~12% of the time).
            op_types_to_quantize=["Conv", "Relu", "Add", "Mul", "Concat", "MaxPool", "AveragePool", "Resize", "Sigmoid", "GlobalAveragePool"],
            nodes_to_exclude=exclude,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    return {"calibration_batches": len(calibration), "fp32_nodes": len(exclude), "per_channel": per_channel}
