"""Reading and writing weights: published state_dicts, our checkpoints, safetensors files."""

from __future__ import annotations

import numbers
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bisenet.errors import CheckpointError, make_dir, remove_quietly
from bisenet.models import MODELS, build_model

# One entry per arch that only that arch has, and the entry whose first dim is num_classes.
_ARCH_SIGNATURE = {
    "bisenetv1": ("cp.resnet.conv1.weight", "conv_out.conv_out.weight"),
    "bisenetv2": ("detail.S1.0.conv.weight", "head.conv_out.1.weight"),
}
# The class each arch name builds, as messages name it.
_ARCH_NAMES = {name: cls.__name__ for name, cls in MODELS.items()}
# How torch.save's legacy (non-zip) format begins, after the pickle protocol header: its magic number.
_LEGACY_MAGIC = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)[2:-1]


class NonFiniteWeightsError(CheckpointError):
    """A weights file holding NaN or inf (a diverged run): its model would give all-zero masks silently."""


def read_weights(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a weights file safely: a dict holding 'model' state plus metadata, never code.

    Accepts our checkpoints ({model, arch, num_classes, ...}), plain published state_dicts
    (optionally under 'state_dict' or 'model_state_dict', or with a 'module.' prefix) and .safetensors files.
    """
    check_path_type(path, "path")
    path = Path(path)
    check_map_location(map_location)
    if path.is_dir():
        raise CheckpointError(_folder_hint(path))
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        return _read_safetensors(path, map_location)
    with open(path, "rb") as handle:
        head = handle.read(32)
    if not head:
        raise CheckpointError(f"{path}: the weights file is empty; re-copy it or point at another checkpoint")
    if path.suffix.lower() == ".onnx":  # bisenet export's output: a graph, not the weights it came from
        raise CheckpointError(
            f"{path}: an ONNX model, not PyTorch weights; pass the .pt/.pth/.safetensors weights it was exported from "
            "(onnxruntime runs the .onnx itself; eval and predict run ONNX with those weights and --backend onnxruntime)")
    if not (head[:2] == b"PK" or head[:1] == b"\x80"):  # torch.save writes a zip archive (older versions a pickle)
        raise CheckpointError(f"{path}: not a PyTorch weights file (torch.save's .pt/.pth) nor .safetensors; "
                              "pass a checkpoint, a published state_dict or a .safetensors file")
    if head[:2] != b"PK" and _LEGACY_MAGIC not in head:
        # A pickle that torch.save did not write: never unpickled, torch would only fail on it confusingly.
        raise CheckpointError(
            f"{path}: not a weights-only checkpoint: it holds pickled Python objects, which are not loaded for safety; "
            "pass a .pt/.pth saved by bisenet or the reference repos, or a .safetensors file"
        )
    try:
        with warnings.catch_warnings():
            # torch's "Detected pickle protocol N" advice would print a raw warning line before our error.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: the file holds Python objects other than tensors ({_unpickler_reason(exc)}); "
            "re-save it as a plain state_dict with torch.save(model.state_dict(), path)"
        ) from None
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({type(exc).__name__}: {_short(str(exc))}); "
                              "a truncated or corrupted copy? re-copy it or point at another checkpoint") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state_dict (a dict of tensors), found {type(obj).__name__}")
    if "model" in obj and isinstance(obj["model"], dict):
        return obj
    # The keys other trainers wrap a state_dict in (mmseg / Lightning, the PyTorch tutorial's).
    wrapper = next((key for key in ("state_dict", "model_state_dict") if isinstance(obj.get(key), dict)), None)
    if wrapper is not None:
        obj = obj[wrapper]
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    return {"model": state}


def check_path_type(path: object, name: str) -> None:
    """Refuse a weights path that is not a str or os.PathLike (Path(5) would raise a bare TypeError)."""
    if not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f"{name}={path!r}: expected a weights file path (str or os.PathLike), "
                              f"not {type(path).__name__}")


def check_map_location(map_location: Any) -> None:
    """Refuse a device name torch does not know, or CUDA where there is none, naming the value (not the file)."""
    if not isinstance(map_location, (str, torch.device)):
        return  # torch.load's other forms (a dict, a function) are passed through as they are
    try:
        device = torch.device(map_location)
    except (RuntimeError, ValueError):
        raise CheckpointError(f"map_location={map_location!r}: not a device; pass 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"map_location={map_location!r}: CUDA is not available here; pass 'cpu'")


def _unpickler_reason(exc: Exception) -> str:
    """What torch's weights_only loader refused (e.g. 'Unsupported global: GLOBAL os.system'), without its advice."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        reason = text.split("WeightsUnpickler error:", 1)[1].strip()
        lines = [reason.splitlines()[0].split(". ")[0] if reason else ""]
    else:
        advice = ("Weights only load failed", "Please file an issue", "Check the documentation", "(")
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(advice)]
    return _short(lines[0]) if lines and lines[0] else type(exc).__name__


def _short(text: str, limit: int = 160) -> str:
    """The first sentence of a library's message; past `limit` characters, cut at a word boundary."""
    text = text.strip().splitlines()[0].strip() if text.strip() else ""
    text = text[:text.find(". ") + 1] if ". " in text else text  # the rest is the library's advice
    if len(text) <= limit:
        return text
    cut = text[:limit]
    return cut[:cut.rfind(" ")].rstrip(" ,;:") + " ..." if " " in cut else cut + " ..."


def _folder_hint(path: Path) -> str:
    """A folder passed as weights: name a weights file that is in it (a run's best.pt, last.pt), if any."""
    named = [folder / name for folder in (path, path / "train") for name in ("best.pt", "last.pt")]
    found = [p for p in named if p.is_file()] or sorted(
        p for ext in ("*.pt", "*.pth", "*.safetensors") for p in path.glob(ext) if p.is_file())
    if found:
        return f"{path}: is a folder, not a weights file; pass a file in it, such as {found[0]}"
    return (f"{path}: is a folder, not a weights file, and holds no weights file (.pt, .pth, .safetensors); "
            "pass the weights file itself")


def _read_safetensors(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    import json
    import struct

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device=str(map_location))
        with open(path, "rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            meta = json.loads(handle.read(size)).get("__metadata__", {}) or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    result: dict[str, Any] = {"model": {k: v.float() if v.is_floating_point() else v for k, v in state.items()}}
    if "arch" in meta:
        result["arch"] = meta["arch"]
    if "num_classes" in meta:
        result["num_classes"] = int(meta["num_classes"])
    try:  # the training run's config (class names, palette, mean/std), as a checkpoint stores it
        config = json.loads(meta["config"]) if "config" in meta else None
    except ValueError:
        config = None
    if isinstance(config, dict):
        result["config"] = config
    return result


def infer_arch(state: dict[str, torch.Tensor], path: str | os.PathLike = "weights") -> tuple[str, int]:
    """Guess (arch, num_classes) from a state_dict's entry names and shapes."""
    for arch, (marker, classifier) in _ARCH_SIGNATURE.items():
        if marker in state and classifier in state:
            return arch, int(state[classifier].shape[0])
        if marker in state:  # the right arch, but cut short: saying "none found" would contradict the file
            raise CheckpointError(
                f"{path}: {arch} state_dict without its classifier entry '{classifier}' "
                f"({len(state)} entries; a truncated or partial state_dict?); pass the complete checkpoint"
            )
    if not state:
        raise CheckpointError(f"{path}: the state_dict is empty (no entries); pass a BiSeNetV1/V2 checkpoint")
    raise CheckpointError(
        f"{path}: not a BiSeNet state_dict: none of {', '.join(m for m, _ in _ARCH_SIGNATURE.values())} "
        f"found (first entry: {next(iter(state), 'none')!r}); pass a BiSeNetV1/V2 checkpoint"
    )


def load_model(
    path: str | os.PathLike,
    arch: str | None = None,
    num_classes: int | None = None,
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """Build the right model for a weights file and load it; returns the model in eval mode."""
    return model_from_weights(read_weights(path, map_location), path, arch, num_classes, map_location)


def model_from_weights(
    ckpt: dict[str, Any],
    path: str | os.PathLike = "weights",
    arch: str | None = None,
    num_classes: int | None = None,
    map_location: str | torch.device = "cpu",
    finite: bool = True,
) -> nn.Module:
    """Build and load the model for what `read_weights` returned, so its caller reads the file once; eval mode.

    finite=False skips the NaN/inf refusal (export's reload check measures the outputs instead).
    """
    if arch is not None and arch not in MODELS:
        raise CheckpointError(f"arch={arch!r}: unknown arch; valid: {', '.join(MODELS)} (or None to read it from the file)")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1):
        raise CheckpointError(f"num_classes={num_classes!r}: must be a positive integer (or None to read it from the file)")
    num_classes = None if num_classes is None else int(num_classes)  # numpy ints as Segmenter takes them
    state = ckpt["model"]
    guessed_arch, guessed_classes = infer_arch(state, path)
    if arch is not None and arch != guessed_arch:  # else the first foreign entry is named, which says less
        raise CheckpointError(f"{path}: this file holds {_ARCH_NAMES[guessed_arch]} weights, not {_ARCH_NAMES[arch]}; "
                              f"pass arch='{guessed_arch}' (or --arch {guessed_arch}), or leave it out to read it from the file")
    stored = ckpt.get("arch")
    if arch is None and stored in MODELS and stored != guessed_arch:
        raise CheckpointError(f"{path}: its metadata says arch {stored} but its entries are {_ARCH_NAMES[guessed_arch]}'s "
                              f"(e.g. '{_ARCH_SIGNATURE[guessed_arch][0]}'); pass arch='{guessed_arch}' to load them")
    arch = arch or stored or guessed_arch
    if arch not in MODELS:
        raise CheckpointError(f"{path}: unknown arch {arch!r}; valid: {', '.join(MODELS)}")
    num_classes = num_classes or ckpt.get("num_classes") or guessed_classes
    model = build_model(arch, num_classes)
    load_state(model, state, path)
    if finite:
        check_finite(state, path)
    return model.to(map_location).eval()


def check_finite(state: dict[str, Any], path: str | os.PathLike = "weights") -> None:
    """Refuse a state_dict with NaN or inf in a floating tensor (BatchNorm statistics too), naming the first one."""
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            kind = "NaN" if bool(torch.isnan(value).any()) else "inf"
            raise NonFiniteWeightsError(
                f"{path}: entry '{key}' holds {kind} ({bad} of {value.numel()} values; a diverged training run?); "
                "its masks would be meaningless: pass an earlier checkpoint or retrain with a lower learning rate")


def model_arch(model: Any) -> str | None:
    """The arch name (a MODELS key) of a BiSeNet model, or None for anything else (e.g. a compiled runner)."""
    return next((name for name, cls in MODELS.items() if isinstance(model, cls)), None)


def check_arch(model: Any, config_arch: str, weights: Any) -> None:
    """Refuse weights of another arch than the config's model.arch: the config says what the weights are."""
    arch = model_arch(model)
    if arch is not None and arch != config_arch:
        what = weights if isinstance(weights, (str, os.PathLike)) else "the model"
        raise CheckpointError(
            f"{what}: the weights are a {arch} model but the config's model.arch is {config_arch}; "
            f"pass the config they were trained with (model.arch: {arch}) or {config_arch} weights"
        )


def check_classes(model: Any, config_classes: int, weights: Any, named: str = "the config") -> None:
    """Refuse weights whose class count differs from the config's, naming both (`named` says which config)."""
    classes = getattr(model, "num_classes", None)
    if classes is not None and classes != config_classes:
        what = weights if isinstance(weights, (str, os.PathLike)) else "the model"
        raise CheckpointError(f"{named} has {config_classes} classes but {what} predicts {classes}; "
                              "pass the config the weights were trained with")


def load_state(model: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike = "weights") -> None:
    """Load a state_dict strictly, except that auxiliary-head and BatchNorm `num_batches_tracked` entries may be absent.

    A wrong arch or class count names the first offending entry and the expected shape. Aux heads
    run only in training mode, where BatchNorm uses batch statistics, so an aux head lacking
    some entries (its running statistics, say) changes nothing at inference. `num_batches_tracked`
    only counts steps (no layer here reads it); converted and older checkpoints lack it.
    """
    expected = model.state_dict()
    aux = tuple(f"{name}." for name in getattr(model, "aux_heads", ()))
    for key, value in state.items():
        if key not in expected:
            raise CheckpointError(
                f"{path}: unexpected entry '{key}' for {type(model).__name__}; wrong arch? "
                f"(pass arch= or check the file)"
            )
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{path}: entry '{key}' has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)} "
                f"for {type(model).__name__} with {getattr(model, 'num_classes', '?')} classes; "
                "pass the matching num_classes or arch"
            )
    missing = [k for k in expected if k not in state and not k.startswith(aux) and not k.endswith(".num_batches_tracked")]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{path}: missing entry '{missing[0]}'{more}; wrong arch or a truncated file?")
    model.load_state_dict(state, strict=False)


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename a finished temporary file onto `path` with the usual permissions (0666 less umask).

    mkstemp and safetensors create 0600 files; a shared checkpoint or export must stay readable.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    make_dir(path.parent, f"checkpoint {path}")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        publish(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch's writer reports a full disk as RuntimeError("enforce fail ...")
        if tmp is not None:
            remove_quietly(tmp)
        cause = exc if isinstance(exc, OSError) else exc.__context__ or exc.__cause__
        why = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(exc).strip().splitlines()[0]
        raise CheckpointError(f"could not write {path}: {why}; free some space or pass another --work-dir") from None
    except BaseException:
        if tmp is not None:
            remove_quietly(tmp)
        raise


def save_inference_weights(model: nn.Module, path: str | os.PathLike, arch: str, half: bool = True,
                           config: dict | None = None) -> None:
    """Write eval-only weights as .safetensors (fp16 by default), with arch, num_classes and the run's `config`.

    BatchNorm running statistics stay float32 (a few KB): trained variances pass 1e5, beyond
    fp16's 65504, and would load as inf.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    aux = tuple(f"{name}." for name in getattr(model, "aux_heads", ()))
    statistics = (".running_mean", ".running_var")
    state = {
        k: (v.half() if half and v.is_floating_point() and not k.endswith(statistics) else v).contiguous()
        for k, v in model.state_dict().items()
        if not k.startswith(aux)
    }
    meta = {"arch": arch, "num_classes": str(model.num_classes)}
    if config:  # predict/eval read class names, palette and mean/std from it, as from a checkpoint
        import json

        meta["config"] = json.dumps(config)
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass a file path such as {path / 'model.safetensors'}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: concurrent writers do not collide
    try:
        save_file(state, str(tmp), metadata=meta)
        publish(tmp, path)
    except (SafetensorError, OSError) as exc:  # safetensors reports a missing or read-only folder as its own error
        remove_quietly(tmp)
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).split(" at path ")[0]
        why = why.removeprefix("Error while serializing: ").removeprefix("I/O error: ")
        raise CheckpointError(f"could not write {path}: {why}; check that its folder exists and is writable, "
                              "or choose another path") from None
    except BaseException:
        remove_quietly(tmp)
        raise
