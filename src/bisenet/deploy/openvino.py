"""OpenVINO backends on the CPU: `openvino` (bf16 where the CPU has it, else fp32) and `int8_openvino`.

Both run a temporary dynamic-shape ONNX export. `int8_openvino` quantises it with NNCF
(static, calibrated on images): convolutions only, with the int8-sensitive modules kept in
bf16 (the model classes' `openvino_float_modules_fast`, or where that loses labels on the
calibration images, `openvino_float_modules`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bisenet.deploy.backends import Backend, _calibration_batches, _export_temp, check_available
from bisenet.errors import BisenetError, nearest
from bisenet.evaluation.inference import labels_from_scores
from bisenet.models.layers import check_input_size

# Everything but convolutions stays in float: quantising the adds, gates, pools and resizes
# as well cost 3-8% label agreement on a trained Dubai model for almost no speed.
# The CPU plugin's INFERENCE_PRECISION_HINT names (f16 runs as bf16 where the CPU lacks fp16 maths).
PRECISIONS = ("f32", "bf16", "f16")
_FLOAT_OP_TYPES = ("Add", "Multiply", "Sigmoid", "MaxPool", "AvgPool", "ReduceMean", "Interpolate", "Concat")


def _import_openvino(backend: str, nncf: bool = False) -> Any:
    try:
        import openvino

        if nncf:
            import nncf  # noqa: F401
    except ImportError:
        need = "openvino nncf" if nncf else "openvino"
        raise BisenetError(f"the {backend} backend needs OpenVINO: pip install {need} (or pip install -e '.[deploy]')") from None
    return openvino


class OpenVinoBackend(Backend):
    """A compiled OpenVINO model; normalised float32 NCHW in, float32 logits out (host memory both ways)."""

    def __init__(self, name: str, compiled: Any, device: torch.device, keep: Any = None) -> None:
        self.name, self.device = name, device
        self.request = compiled.create_infer_request()
        self.precision = compiled.get_property("INFERENCE_PRECISION_HINT")
        self._keep = keep  # the temp folder holding the .onnx
        # int8_openvino only: which modules stayed float, and its label agreement with fp32 PyTorch
        # on the calibration images.
        self.float_modules: tuple[str, ...] = ()
        self.calibration_agreement: float | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x)  # the model's own message, not a shape failure deep in the graph
        feed = x.detach().to("cpu", torch.float32).contiguous().numpy()
        # infer() copies the output out of the request's buffer (which the next call overwrites)
        # into a new array, so that array is ours: no second copy.
        out = self.request.infer({0: feed})[0]
        return torch.from_numpy(out).to(self.device)


def _compile(core: Any, model: Any, precision: str | None) -> Any:
    """Compile for the CPU at the latency hint, on as many threads as PyTorch uses, in bf16 where supported."""
    if precision is None:
        precision = "bf16" if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "f32"
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": torch.get_num_threads()}
    return core.compile_model(model, "CPU", config)


def check_precision(precision: object) -> None:
    """Refuse a precision name OpenVINO does not know (its own error is a raw RuntimeError), before any export."""
    if precision is not None and precision not in PRECISIONS:
        hint = nearest(precision, PRECISIONS) if isinstance(precision, str) else ""
        raise BisenetError(f"openvino precision={precision!r}: unknown{hint}; pass one of {', '.join(PRECISIONS)} "
                           "(or None: bf16 where the CPU has it, else f32)")


def build_openvino(model: nn.Module, device: torch.device, precision: str | None = None,
                   export_size: tuple[int, int] = (256, 256)) -> OpenVinoBackend:
    """OpenVINO on the CPU, bf16 inference precision where the CPU supports it (precision='f32' forces fp32)."""
    check_precision(precision)
    check_available("openvino", device)
    ov = _import_openvino("openvino")
    folder, path = _export_temp(model, export_size)
    core = ov.Core()
    return OpenVinoBackend("openvino", _compile(core, core.read_model(str(path)), precision), device, keep=folder)


def _scope_tokens(name: str) -> list[str]:
    """'/detail/S1/S1.0/conv/Conv' or 'detail.S1.0' -> ['detail', 'S1', '0', 'conv', ...].

    The ONNX exporter scopes a Sequential's child as 'S1/S1.0', so repeated tokens collapse.
    """
    tokens: list[str] = []
    for token in re.split(r"[/.]", name):
        if token and (not tokens or tokens[-1] != token):
            tokens.append(token)
    return tokens


def float_node_names(node_names: Sequence[str], modules: Sequence[str]) -> list[str]:
    """The ONNX/OpenVINO node names that lie inside any of the PyTorch `modules` (dotted paths)."""
    prefixes = [_scope_tokens(m) for m in modules]
    return [n for n in node_names if any(_scope_tokens(n)[:len(p)] == p for p in prefixes)]


def build_int8_openvino(model: nn.Module, device: torch.device, calibration: Any = None,
                        size: tuple[int, int] | None = None, mean: Sequence[float] | None = None,
                        std: Sequence[float] | None = None, limit: int = 8,
                        keep_float: Sequence[str] | None = None, min_agreement: float = 0.99) -> OpenVinoBackend:
    """OpenVINO int8 (NNCF static quantisation of the convolutions), calibrated on images; CPU only.

    Without `keep_float`, the model's `openvino_float_modules_fast` (fewer modules in float) is
    tried first and kept if its labels agree with fp32 PyTorch on >= `min_agreement` of the
    calibration pixels; otherwise `openvino_float_modules`. The backend's
    `calibration_agreement` says what the kept one measured.
    """
    check_available("int8_openvino", device)
    ov = _import_openvino("int8_openvino", nncf=True)
    import nncf

    batches = _calibration_batches(calibration, size, mean, std, limit, "int8_openvino")
    if keep_float is not None:
        candidates = [tuple(keep_float)]
    else:
        safe = tuple(getattr(model, "openvino_float_modules", ()))
        fast = getattr(model, "openvino_float_modules_fast", None)
        candidates = [tuple(fast), safe] if fast is not None else [safe]
    folder, path = _export_temp(model, tuple(batches[0].shape[-2:]))
    core = ov.Core()
    convs = [op.get_friendly_name() for op in core.read_model(str(path)).get_ops()
             if op.get_type_name() in ("Convolution", "GroupConvolution")]
    with torch.inference_mode():
        reference = [labels_from_scores(model(b.to(device))) for b in batches]
    nncf.set_log_level(logging.ERROR)  # its INFO lines and progress bars would bury the caller's output

    def quantized(names: tuple[str, ...]) -> OpenVinoBackend:
        ignored = nncf.IgnoredScope(names=float_node_names(convs, names), types=list(_FLOAT_OP_TYPES), validate=False)
        dataset = nncf.Dataset([b.numpy() for b in batches])
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            graph_int8 = nncf.quantize(core.read_model(str(path)), dataset, subset_size=len(batches),
                                       preset=nncf.QuantizationPreset.PERFORMANCE, ignored_scope=ignored)
        backend = OpenVinoBackend("int8_openvino", _compile(core, graph_int8, None), device, keep=folder)
        backend.float_modules = names
        backend.calibration_agreement = _label_agreement(backend, batches, reference)
        return backend

    for names in candidates[:-1]:
        backend = quantized(names)
        if backend.calibration_agreement >= min_agreement:
            return backend
    return quantized(candidates[-1])


def _label_agreement(backend: OpenVinoBackend, batches: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> float:
    """The share of pixels whose argmax label from `backend` equals the reference labels."""
    same = sum((labels_from_scores(backend(b)) == ref).sum().item() for b, ref in zip(batches, reference))
    return same / sum(ref.numel() for ref in reference)
