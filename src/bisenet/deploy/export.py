"""ONNX export: logits or labels, static or dynamic shapes, checked against PyTorch."""

from __future__ import annotations

import copy
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bisenet.checkpoint import publish
from bisenet.deploy.export_metadata import (
    _add_metadata,
    _fitting_config,
    config_metadata,
    export_config,
)
from bisenet.errors import BisenetError, CheckpointError, check_writable, remove_quietly
from bisenet.models.layers import check_multiple_of_32

MIN_OPSET, MAX_OPSET = 13, 20  # 13: Resize with scales and ArgMax as used here; 20: newest the TorchScript exporter knows
NEED_ONNXRUNTIME = ("the export check runs the ONNX file in onnxruntime: pip install onnxruntime, or pass "
                    "--no-check (check=False in Python) to write it unchecked")
MAX_ABS_DIFF, MIN_AGREEMENT = 1e-3, 0.99  # what an fp32 export must meet against PyTorch to be written
# fp32 rounding grows with the logits: past |logit| 1000 (an undertrained or diverged model) the
# limit is this share of the largest one, as float32 sums cannot be exact there.
MAX_REL_DIFF = 1e-6


def diff_limit(row: dict[str, Any]) -> float:
    """The largest |ONNX - PyTorch| a check row may show: 1e-3, or 1e-6 of its largest |logit| when that is more."""
    return max(MAX_ABS_DIFF, MAX_REL_DIFF * row.get("max_abs_logit", 0.0))


class ExportCheckError(BisenetError):
    """The exported model failed its check against PyTorch, so nothing was written; `report` says what was measured."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


class ArgmaxWrapper(nn.Module):
    """Model -> per-pixel class labels (int32, N x H x W): argmax lives here, not in the model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # int32 rather than ArgMax's int64: half the bytes, and what TensorRT prefers.
        return self.model(x).argmax(dim=1).to(torch.int32)


class HalfWrapper(nn.Module):
    """Runs a half-precision model behind float32 inputs and outputs (casts in the graph)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        from bisenet.deploy.fold import fold_batchnorm

        # Fold BN in fp32 first: trained running variances overflow fp16 (see absorb_statistics).
        self.model = fold_batchnorm(model).half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


def second_size(height: int, width: int) -> tuple[int, int]:
    """Another valid size (about 3/4 H and 5/8 W) to prove a dynamic-shape model really is dynamic."""
    h, w = max(32, int(height * 0.75) // 32 * 32), max(32, int(width * 0.625) // 32 * 32)
    # At 32 there is nothing smaller: go 32 larger, so that both H and W still differ from the export's.
    return (h if h != height else height + 32), (w if w != width else width + 32)


def check_opset(opset: int) -> None:
    """Refuse an ONNX opset outside what the exporter supports here."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise BisenetError(f"opset {opset} is not supported; pass --opset (opset= in Python) between {MIN_OPSET} "
                           f"and {MAX_OPSET} (17 is a safe choice)")


def check_onnxruntime() -> None:
    """Refuse a checked export where onnxruntime is not installed."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        raise BisenetError(NEED_ONNXRUNTIME)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    height: int,
    width: int,
    dynamic: bool = False,
    argmax: bool = False,
    opset: int = 17,
    fp16: bool = False,
    simplify: bool = True,
    check: bool = True,
    config: Any = None,
) -> dict[str, Any]:
    """Export `model` to ONNX at `path` (a .onnx name) and return a report; the file appears only if the check passes.

    `config` (a Config, a YAML path, or a run's config as a dict, e.g. from export_config) adds its
    mean/std, names and palette to the metadata; one of another arch or class count is refused.

    Raises ExportCheckError (nothing written) when the ONNX output disagrees with PyTorch or either is NaN/inf.
    """
    check_multiple_of_32(height, width)
    check_opset(opset)
    path = Path(path)
    if path.is_dir():
        raise BisenetError(f"{path} is a folder; pass a file name such as {path / 'model.onnx'}")
    if path.suffix.lower() != ".onnx":  # e.g. model.pt would hold an ONNX graph that load_model then refuses
        raise BisenetError(f"{path}: an ONNX graph is named .onnx: name it {path.stem or 'model'}.onnx "
                           "(eval-only .safetensors weights: export_weights, or bisenet export --out X.safetensors)")
    config = _fitting_config(model, config)
    if check:
        check_onnxruntime()  # before the export, not after it
    check_writable(path, "--out", "model.onnx", create=True)  # before the export: a folder that takes no file fails now
    reference = copy.deepcopy(model).cpu().float().eval()
    num_classes = getattr(model, "num_classes", None)
    net = HalfWrapper(copy.deepcopy(reference)).eval() if fp16 else reference
    if argmax:
        net, reference = ArgmaxWrapper(net).eval(), ArgmaxWrapper(reference).eval()
    out_name = "labels" if argmax else "logits"
    axes = None
    if dynamic:
        out_axes = {0: "batch", 1: "height", 2: "width"} if argmax else {0: "batch", 2: "height", 3: "width"}
        axes = {"input": {0: "batch", 2: "height", 3: "width"}, out_name: out_axes}
    start, tmp = time.perf_counter(), None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        _torch_export(net, tmp, height, width, opset, axes)
        simplified = _simplify(tmp) if simplify else None
        _add_metadata(tmp, {"arch": type(model).__name__.lower(), "num_classes": str(num_classes), "output": out_name,
                            "input_size": f"{height}x{width}", "dynamic": str(dynamic), "fp16": str(fp16),
                            **config_metadata(config)})
        report: dict[str, Any] = {
            "path": str(path), "opset": opset, "dynamic": dynamic, "argmax": argmax, "fp16": fp16,
            "output": out_name, "simplified_with": simplified, "export_s": round(time.perf_counter() - start, 2),
        }
        if check:
            sizes = [(1, height, width)] + ([(2, *second_size(height, width))] if dynamic else [])
            # Always against the fp32 model: an fp16 export reports what half precision costs.
            report["checks"] = check_onnx(tmp, reference, sizes)
            # fp16 is judged by labels only: its logits differ from fp32 by design.
            _raise_on_failure(report, path, fp16, "the ONNX model does not match PyTorch: try another --opset or --no-simplify "
                              "(opset=, simplify=False in Python)")
        publish(tmp, path)
    except OSError as exc:  # a full or read-only disk, the folder removed meanwhile
        if tmp is not None:
            remove_quietly(tmp)
        raise _write_error(path, exc) from None
    except BaseException:
        if tmp is not None:
            remove_quietly(tmp)
        raise
    report["size_mb"] = round(path.stat().st_size / 2**20, 2)
    return report


def _write_error(path: Path, exc: OSError) -> BisenetError:
    """The one-line error for an export that could not be written (nothing was)."""
    return BisenetError(f"--out {path}: cannot write ({exc.strerror or exc}); check its folder (free space, "
                        "permissions) or choose another --out; nothing was written")


def check_failure(row: dict[str, Any], labels_only: bool = False) -> str | None:
    """Why one check row fails (NaN/inf outputs, labels or logits off), or None when it passes or was skipped."""
    if "error" in row:
        return row["error"]
    if "skipped" in row:
        return None
    if row.get("nonfinite") == "PyTorch":  # agreement on NaN logits means nothing
        return "the PyTorch output holds NaN or inf: check that the weights are finite"
    if row.get("nonfinite"):
        return f"the {row['nonfinite']} output holds NaN or inf where PyTorch's is finite"
    if row["agreement"] < MIN_AGREEMENT:
        return f"labels agree on {row['agreement']:.2%} of the pixels, under {MIN_AGREEMENT:.0%}"
    if not labels_only and row.get("max_abs_diff", 0.0) > diff_limit(row):
        return f"max |diff| {row['max_abs_diff']:.2e}, over {diff_limit(row):.1e}"
    return None


def _raise_on_failure(report: dict[str, Any], path: Path, labels_only: bool, hint: str) -> None:
    """Raise ExportCheckError for the first failed check in `report` (the caller removes the temp file)."""
    for row in report["checks"]:
        why = check_failure(row, labels_only)
        if why:
            advice = "" if row.get("nonfinite") == "PyTorch" else f" ({hint})"  # NaN weights: no export setting helps
            raise ExportCheckError(f"{path}: export check failed at {row.get('size', '?')}: {why}{advice}; "
                                   "nothing was written", report)


def _torch_export(net: nn.Module, path: str, height: int, width: int, opset: int, axes: dict | None) -> None:
    x = torch.zeros(1, 3, height, width)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but is the one that keeps Resize-by-scale
        # dynamic in H and W; the input-size check in forward becomes a trace-time constant.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (x,), path, dynamo=False, opset_version=opset, do_constant_folding=True,
            input_names=["input"], output_names=["labels" if isinstance(net, ArgmaxWrapper) else "logits"],
            dynamic_axes=axes,
        )


def _simplify(path: str) -> str | None:
    """Simplify the graph in place with onnxslim if it is installed; returns the tool used."""
    try:
        import onnxslim
    except ImportError:
        return None
    import onnx

    model = onnx.load(path)
    try:
        slim = onnxslim.slim(model)
    except Exception as exc:  # noqa: BLE001 -- a simplifier bug must not cost the user the export
        warnings.warn(f"onnxslim failed ({type(exc).__name__}: {exc}); keeping the unsimplified graph", stacklevel=2)
        return None
    onnx.checker.check_model(slim)
    onnx.save(slim, path)
    return f"onnxslim {onnxslim.__version__}"


def ort_session(path: str | os.PathLike, device: str = "cpu", threads: int | None = None) -> Any:
    """An onnxruntime session on CPU, or on the CUDA EP for a CUDA device (an error if this build lacks it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3
    # No busy-waiting between runs: spinning threads would steal the cores from PyTorch
    # (pre/post-processing, or other backends timed alongside in `bench`).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers: list = ["CPUExecutionProvider"]
    device = torch.device(device)
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            # Falling back to the CPU silently would report CPU times as CUDA ones.
            raise BisenetError("onnxruntime on cuda: this onnxruntime has no CUDAExecutionProvider; "
                               "pip install onnxruntime-gpu, or use --device cpu (device='cpu' in Python)")
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def check_onnx(path: str | os.PathLike, net: nn.Module, sizes: list[tuple[int, int, int]]) -> list[dict[str, Any]]:
    """Run the ONNX file and `net` on the same random inputs; max |diff| and label agreement per size."""
    try:
        session = ort_session(path)
    except ImportError:
        raise BisenetError(NEED_ONNXRUNTIME) from None
    except Exception as exc:  # noqa: BLE001 -- classified below
        why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]}"
        if "NOT_IMPLEMENTED" in str(exc):  # a kernel this onnxruntime build lacks (fp16 on some CPUs): not the graph's fault
            return [{"size": "all", "skipped": f"this onnxruntime cannot run the model ({why})"}]
        return [{"size": "all", "error": f"onnxruntime refuses the graph ({why})"}]
    generator = torch.Generator().manual_seed(0)
    results = []
    for batch, h, w in sizes:
        x = torch.randn(batch, 3, h, w, generator=generator)
        ref, ref_finite = _reference_output(net, x)
        try:
            out = session.run(None, {"input": x.numpy()})[0]
        except Exception as exc:  # noqa: BLE001 -- a missing kernel skips this size; anything else fails the check
            why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]}"
            kind = "skipped" if "NOT_IMPLEMENTED" in str(exc) else "error"
            results.append({"size": f"{batch}x{h}x{w}",
                            kind: why if kind == "skipped" else f"onnxruntime fails at this size ({why})"})
            continue
        row: dict[str, Any] = {"size": f"{batch}x{h}x{w}"}
        if out.shape != ref.shape:
            row["error"] = f"ONNX output shape {out.shape} differs from PyTorch's {ref.shape}"
            results.append(row)
            continue
        if not ref_finite or not np.isfinite(out).all():
            row["nonfinite"] = "PyTorch" if not ref_finite else "ONNX"
        if ref.ndim == 4:
            row["max_abs_diff"] = float(np.abs(out - ref).max())
            row["max_abs_logit"] = float(np.abs(ref).max()) if ref_finite else 0.0
            row["agreement"] = float((out.argmax(1) == ref.argmax(1)).mean())
        else:
            row["agreement"] = float((out == ref).mean())
        results.append(row)
    return results


def _reference_output(net: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, bool]:
    """`net(x)` as numpy, and whether its logits are finite (for labels, the logits before the argmax)."""
    with torch.no_grad():
        logits = net.model(x) if isinstance(net, ArgmaxWrapper) else net(x)
    out = logits.argmax(dim=1).to(torch.int32) if isinstance(net, ArgmaxWrapper) else logits
    return out.numpy(), bool(torch.isfinite(logits).all())


def export_weights(model: nn.Module, path: str | os.PathLike, fp16: bool = True, height: int = 512,
                   width: int = 1024, config: dict | None = None) -> dict[str, Any]:
    """Eval-only .safetensors weights (fp16 unless fp16=False), reloaded and checked against `model` before they appear.

    `config` (a run's config as a dict, e.g. from export_config) travels in the file's metadata, for names, palette, mean/std.
    """
    from bisenet.checkpoint import model_arch, model_from_weights, read_weights, save_inference_weights
    from bisenet.models import MODELS

    check_multiple_of_32(height, width)
    path = Path(path)
    if path.suffix != ".safetensors" or path.is_dir():
        raise BisenetError(f"{path}: weights are written to a file ending in .safetensors, e.g. {path.with_suffix('.safetensors').name}")
    arch = model_arch(model)
    if arch is None:
        raise BisenetError(f"cannot save a {type(model).__name__}: valid models are {', '.join(MODELS)}")
    check_writable(path, "--out", "model.safetensors", create=True)
    reference = copy.deepcopy(model).cpu().float().eval()
    tmp = path.with_name(f".{path.stem}.check.safetensors")  # load_model reads safetensors by their suffix
    try:
        try:
            save_inference_weights(reference, tmp, arch, half=fp16, config=config)
        except CheckpointError as exc:  # it names the temporary file; the user knows --out
            raise BisenetError(str(exc).replace(str(tmp), f"--out {path}") + "; nothing was written") from None
        x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0))
        # finite=False: fp16 overflow must reach the check below, which reports it as the export's failure.
        reloaded = model_from_weights(read_weights(tmp), tmp, finite=False)
        with torch.no_grad():
            expected, got = reference(x), reloaded(x)
        check = {"size": f"{height}x{width}", "max_abs_diff": float((got - expected).abs().max()),
                 "agreement": float((got.argmax(1) == expected.argmax(1)).float().mean())}
        if not (torch.isfinite(expected).all() and torch.isfinite(got).all()):
            check["nonfinite"] = "PyTorch" if not torch.isfinite(expected).all() else "reloaded"
        report = {"path": str(path), "size_mb": round(tmp.stat().st_size / 2**20, 2), "arch": arch, "checks": [check]}
        # Labels only, as the CLI always judged it: fp16 weights change the logits by design.
        _raise_on_failure(report, path, True, "the saved weights do not reproduce the model: try without --fp16 (fp16=False in Python)")
        publish(tmp, path)
    except OSError as exc:
        remove_quietly(tmp)
        raise _write_error(path, exc) from None
    except BaseException:
        remove_quietly(tmp)
        raise
    return report


def export_model(weights: str | os.PathLike, out: str | os.PathLike, height: int = 512, width: int = 1024,
                 dynamic: bool = False, argmax: bool = False, opset: int = 17, fp16: bool = False,
                 arch: str | None = None, num_classes: int | None = None, config: Any = None, simplify: bool = True,
                 check: bool = True) -> dict[str, Any]:
    """Export a weights file to ONNX (`out` .onnx) or eval-only .safetensors weights; the report (`bisenet export`).

    The report adds `whence` (where the metadata's names, palette and mean/std come from) and `replacing`
    (whether `out` existed). Raises NonFiniteWeightsError for NaN/inf weights and ExportCheckError (with
    `whence` in its report) when the export disagrees with PyTorch; nothing is written then.
    """
    from bisenet.checkpoint import model_from_weights, read_weights
    from bisenet.config import load_config

    if not isinstance(weights, (str, os.PathLike)) or not isinstance(out, (str, os.PathLike)):
        raise BisenetError(f"weights={weights!r}, out={out!r}: expected file paths (export_onnx exports a built model)")
    check_multiple_of_32(height, width, flag="--height/--width")  # every check before the weights load: fail fast
    if num_classes is not None and num_classes < 1:
        raise BisenetError(f"--num-classes {num_classes}: must be at least 1 (or leave it out to read it from the weights)")
    out = os.fspath(out)
    weights_only = out.endswith(".safetensors")
    if not weights_only and not out.lower().endswith(".onnx"):  # before the weights load: export_onnx says it too
        stem = os.path.splitext(os.path.basename(out))[0] or "model"
        raise BisenetError(f"--out {out}: export writes an ONNX graph (.onnx) or eval-only weights (.safetensors); "
                           f"name it {stem}.onnx or {stem}.safetensors")
    if weights_only and (dynamic or argmax):
        raise BisenetError(f"--dynamic and --argmax shape an ONNX graph; {out} gets weights only: drop them or write .onnx")
    if os.path.exists(out) and os.path.exists(weights) and os.path.samefile(out, weights):
        raise BisenetError(f"--out {out} is the --weights file; write the export to another name")
    if not weights_only:
        check_opset(opset)
        if check:
            check_onnxruntime()
    check_writable(out, "--out", "model.safetensors" if weights_only else "model.onnx")
    replacing = os.path.isfile(out)
    given = load_config(config) if config is not None else None  # before the weights: a bad config fails fast
    ckpt = read_weights(weights)  # once: a training checkpoint can be large
    model, stored = model_from_weights(ckpt, weights, arch=arch, num_classes=num_classes), ckpt.get("config")
    # Names, palette, mean/std travel along, resolved as predict resolves them for these weights.
    config, whence = export_config(model, given, stored if isinstance(stored, dict) else None, preset=not weights_only,
                                   weights=weights)
    try:
        if weights_only:
            report = export_weights(model, out, fp16=fp16, height=height, width=width, config=config)
        else:
            report = export_onnx(model, out, height, width, dynamic=dynamic, argmax=argmax, opset=opset, fp16=fp16,
                                 simplify=simplify, check=check, config=config)
    except ExportCheckError as exc:
        exc.report["whence"] = whence  # the CLI prints it above the failed checks
        raise
    return {**report, "whence": whence, "replacing": replacing}
