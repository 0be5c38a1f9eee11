"""Static int8 quantisation of an exported ONNX model with onnxruntime (QDQ format)."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def onnx_float_nodes(model: torch.nn.Module) -> list[str]:
    """ONNX node-name prefixes of the model's `quant_float_modules` (the exporter names nodes /bga/..., /head/...)."""
    return [f"/{name.replace('.', '/')}/" for name in getattr(model, "quant_float_modules", ())]


def quantize_onnx(
    fp32_path: str | os.PathLike,
    int8_path: str | os.PathLike,
    calibration: Sequence[torch.Tensor],
    per_channel: bool = True,
    keep_fp32: Sequence[str] = (),
    unsigned_weights: bool | None = None,
) -> dict[str, object]:
    """Write an int8 QDQ copy of an fp32 ONNX model, calibrated on normalised NCHW batches.

    The classifier (the last Conv) stays in float, as do nodes whose name contains one of
    `keep_fp32`: its outputs are the logits whose argmax is the label, and on a trained
    BiSeNetV2 quantising it too drops agreement with fp32 from ~99.4% to 98.7% for ~2% speed.
    Weights are s8 where the CPU has VNNI. Without it, onnxruntime's u8 x s8 kernels sum pairs
    of products into int16 with saturation (VPMADDUBSW), which cost a trained Dubai model 7
    points of agreement on an AVX2 EPYC (91.2% vs 98.2% for the same graph run in float); u8
    weights (`unsigned_weights`, the default there) avoid it at ~1.6x the time, where 7-bit
    weights (onnxruntime's reduce_range) lost 2 points of their own.
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

    from bisenet.runtime import cpu_has_vnni

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {"input": np.ascontiguousarray(item.numpy(), dtype=np.float32)}

    unsigned_weights = not cpu_has_vnni() if unsigned_weights is None else unsigned_weights
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
            weight_type=QuantType.QUInt8 if unsigned_weights else QuantType.QInt8,
            # Relu listed so that it shares the conv's output scale: otherwise every conv ends
            # in a dequantise/requantise pair (41 of them in BiSeNetV2, ~12% of the time).
            op_types_to_quantize=["Conv", "Relu", "Add", "Mul", "Concat", "MaxPool", "AveragePool", "Resize", "Sigmoid", "GlobalAveragePool"],
            nodes_to_exclude=exclude,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    return {"calibration_batches": len(calibration), "fp32_nodes": len(exclude), "per_channel": per_channel,
            "unsigned_weights": unsigned_weights}


def _import_pt2e():
    """torchao's pt2e quantisation API, quietly (its import logs about CUDA-only kernels), or a clear error."""
    import logging

    quiet = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer
    except ImportError:
        from bisenet.errors import BisenetError

        raise BisenetError("the int8_compile backend needs torchao: pip install torchao (or pip install -e '.[deploy]')") from None
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    return prepare_pt2e, convert_pt2e, x86_inductor_quantizer


def quantize_pt2e(model: torch.nn.Module, calibration: Sequence[torch.Tensor],
                  keep_float: Sequence[str] | None = None, reduce_range: bool | None = None) -> torch.nn.Module:
    """An int8 (x86, oneDNN VNNI) copy of an eval-mode model, calibrated on normalised NCHW batches.

    The model is exported with dynamic batch, height and width (multiples of 32), so the
    result runs at any valid size. Submodules named in `keep_float` (default: the model's
    `quant_float_modules`) stay in float; run the result under bf16 autocast and torch.compile.
    `reduce_range` (default: where the CPU has no VNNI) quantises activations to 0-127: without
    VNNI oneDNN sums u8 x s8 pairs into int16 with saturation: on the Zen 1 host a model trained
    as in the test suite agreed with fp32 on 93.3% and 98.1% of pixels in two runs; 7-bit
    activations gave 99.8%.
    """
    from bisenet.runtime import cpu_has_vnni

    prepare_pt2e, convert_pt2e, xiq = _import_pt2e()
    keep_float = getattr(model, "quant_float_modules", ()) if keep_float is None else keep_float
    reduce_range = not cpu_has_vnni() if reduce_range is None else reduce_range
    example = torch.zeros(2, 3, *calibration[0].shape[-2:])  # batch 2: a batch of 1 would be specialised
    dims = ({0: torch.export.Dim("batch", min=1, max=1024),  # a tuple: whatever forward's argument is named
             2: 32 * torch.export.Dim("height32", min=1, max=512),
             3: 32 * torch.export.Dim("width32", min=1, max=512)},)
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(reduce_range=reduce_range))
    for name in keep_float:
        quantizer.set_module_name_qconfig(name, None)
    with torch.no_grad():
        graph = torch.export.export(model.eval(), (example,), dynamic_shapes=dims).module()
        prepared = prepare_pt2e(graph, quantizer)
        for batch in calibration:
            prepared(batch)
        return convert_pt2e(prepared)
