"""What `evaluate` takes: checks of its arguments, and the config a weights file stores when none is given."""

from __future__ import annotations

import numbers
import os
from typing import Any

import numpy as np

from bisenet.config import Config, bundled_config, load_config
from bisenet.errors import BisenetError, ConfigError, check_paths
from bisenet.evaluation.inference import MODES, check_batch_size, check_scale


def check_arguments(mode: str, scales: list[float] | None, scale: float | None, crop: tuple[int, int] | None,
                    stride: tuple[int, int] | None, batch_size: int | None, calibration_images: int) -> None:
    """Refuse bad values and flags that `mode` does not use, before any work (they used to be ignored silently)."""
    if scale is not None:
        check_scale(scale, mode)
    if batch_size is not None:
        check_batch_size(batch_size)
    if isinstance(calibration_images, bool) or not isinstance(calibration_images, numbers.Integral) \
            or calibration_images < 1:
        shown = calibration_images if isinstance(calibration_images, numbers.Real) else repr(calibration_images)
        raise BisenetError(f"--calibration-images {shown}: must be at least 1 (images int8 is calibrated on), "
                           "a whole number")
    if mode not in MODES:  # make_protocol names the valid modes
        return
    multi_scale, sliding = mode in ("msf", "mscf"), mode in ("ssc", "mscf")
    if scales and not multi_scale:
        raise BisenetError(f"--scales {' '.join(f'{s:g}' for s in scales)}: mode {mode} runs one scale; several scales "
                           "are for --mode msf or mscf (or pass --scale S)")
    for flag, size in (("--crop", crop), ("--stride", stride)):
        if size is not None and not sliding:
            raise BisenetError(f"{flag} {size[0]}x{size[1]} ({flag[2:]}= in Python): mode {mode} runs on whole images; "
                               f"sliding windows are for --mode ssc or mscf")


def check_types(weights_or_model: Any, *, flip: Any, **paths: Any) -> None:
    """One-line errors for arguments of the wrong kind, which would otherwise fail deep inside as TypeErrors."""
    if not isinstance(weights_or_model, (str, os.PathLike)) and not callable(weights_or_model):
        raise BisenetError(f"weights_or_model={weights_or_model!r}: expected a weights file path, an nn.Module or a "
                           "callable backend")
    if flip is not None and not isinstance(flip, (bool, np.bool_)):
        raise BisenetError(f"flip={flip!r}: expected True, False or None (None: the config's eval.flip)")
    check_paths(**paths)


def eval_config(config: Config | str | os.PathLike | dict | None, weights_or_model: Any) -> Config:
    """`config` loaded; None: the config stored in the weights file, or a one-line error saying what to pass."""
    if config is not None:
        return config if isinstance(config, Config) else load_config(config)
    if not isinstance(weights_or_model, (str, os.PathLike)):  # a module or backend carries no config
        raise BisenetError(f"config=None reads the config stored in a weights file, but weights_or_model is a "
                           f"{type(weights_or_model).__name__}: pass the config it was built for (a Config or YAML path)")
    return stored_config(weights_or_model)


def stored_config(weights: str | os.PathLike) -> Config:
    """The config a checkpoint stores; a one-line error naming a config to pass where it stores none (or a stale one)."""
    from bisenet.checkpoint import read_weights

    ckpt = read_weights(weights)
    config = ckpt.get("config")
    if not isinstance(config, dict):
        raise BisenetError(no_config_hint(weights, ckpt))
    try:  # a config stored by an older version may fail today's checks: say whose it is
        return load_config(config)
    except ConfigError as exc:
        raise ConfigError(f"{weights}: its stored config: {exc}; pass a config that loads as the first "
                          f"argument: bisenet eval CONFIG --weights {weights}") from None


def no_config_hint(weights: str | os.PathLike, ckpt: dict) -> str:
    """Weights without a stored config: name a bundled config of their arch and class count, else say what to pass."""
    from bisenet.checkpoint import infer_arch

    guessed_arch, guessed_classes = infer_arch(ckpt["model"], weights)
    arch, classes = ckpt.get("arch") or guessed_arch, ckpt.get("num_classes") or guessed_classes
    found = bundled_config(arch, classes)
    # The CLI form: both `bisenet eval` and evaluate(config=None) reach this.
    if found is not None:
        return (f"{weights} stores no config ({arch}, {classes} classes): pass the one it was trained with "
                f"first, e.g. bisenet eval {found[0]} --weights {weights}")
    return (f"{weights} stores no config ({arch}, {classes} classes): pass the YAML config it was trained with "
            f"first: bisenet eval CONFIG --weights {weights}")
