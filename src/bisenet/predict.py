"""Prediction for people: `Segmenter` (numpy in, label map out) and `colorize`; files and videos: predict_files."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from bisenet.config import Config, EvalConfig, load_config
from bisenet.data.catalog import DATASETS, IMAGENET_MEAN, IMAGENET_STD, palette_for
from bisenet.data.colour import colorize
from bisenet.errors import BisenetError, ConfigError
from bisenet.evaluation.inference import (CITYSCAPES_CROP, Protocol, build_runner, check_batch_size, check_scale,
                                          config_protocol, eval_settings, predict_labels)
from bisenet.runtime import keep_freed_memory


@dataclass(frozen=True)
class LabelInfo:
    """What a prediction needs besides the weights: class names, colours, normalisation and the eval protocol."""

    class_names: list[str]
    palette: list[list[int]]
    mean: list[float]
    std: list[float]
    evaluation: EvalConfig  # the config's eval section, crop_size filled in: predict runs the protocol eval runs
    source: str  # where this came from, said to the user

    @property
    def crop(self) -> tuple[int, int]:
        """The sliding window (H, W) of ssc/mscf."""
        return self.evaluation.crop_size


def label_info(num_classes: int, config: Config | None = None, stored: dict | None = None,
               weights: str | os.PathLike = "the weights") -> LabelInfo:
    """Names, palette, mean/std from a config, else a checkpoint's stored config, else a dataset preset, else defaults."""
    candidates: list[tuple[Any, str]] = [(config, "the config")]
    note = ""
    if stored:
        candidates.append((stored, "the checkpoint's stored config"))
    for cfg, where in candidates:
        if cfg is None:
            continue
        try:
            cfg = cfg if isinstance(cfg, Config) else load_config(cfg)
        except ConfigError as exc:
            if where == "the config":
                raise
            note = f" (the checkpoint's stored config was unusable: {exc})"
            continue
        if cfg.num_classes != num_classes:
            raise BisenetError(f"{where} has {cfg.num_classes} classes but {weights} predicts {num_classes}; "
                               "pass the config the weights were trained with (--config)")
        d = cfg.data
        names = d.class_names or [str(i) for i in range(num_classes)]
        return LabelInfo(list(names), palette_for(d.palette, num_classes), list(d.mean), list(d.std), eval_settings(cfg),
                         where)
    for info in DATASETS.values():
        if info.num_classes == num_classes:
            crop = CITYSCAPES_CROP if info.name == "cityscapes" else (512, 512)
            return LabelInfo(list(info.class_names), [list(c) for c in info.palette], list(info.mean), list(info.std),
                             EvalConfig(crop_size=crop), f"the {info.name} preset ({num_classes} classes){note}")
    return LabelInfo([str(i) for i in range(num_classes)], palette_for(None, num_classes),
                     list(IMAGENET_MEAN), list(IMAGENET_STD), EvalConfig(crop_size=(512, 512)),
                     f"defaults: no config and no dataset preset has {num_classes} classes, so a generated palette "
                     f"and ImageNet mean/std (pass --config for the right ones){note}")


class EvalScaleWarning(UserWarning):
    """Weights predicted at another scale than the bundled config of their arch and classes scores them at."""


def scale_note(segmenter: Segmenter, flags: bool = False) -> str | None:
    """Why and how to predict at a bundled config's eval.scale, when predict runs these weights at another; else None.

    `flags`: worded for `bisenet predict` (--config/--scale), else for Python (config=/scale=).
    """
    from bisenet.config import bundled_config

    if segmenter.info.source in ("the config", "the checkpoint's stored config"):
        return None  # eval scores with that same config
    if segmenter.protocol.mode not in ("ss", "ssc"):
        return None  # eval.scale is for the single-scale modes
    found = bundled_config(segmenter.arch, segmenter.num_classes)
    if found is None or found[1].eval.scale == segmenter.protocol.scales[0]:
        return None
    shown, cfg = found
    scale = f"{cfg.eval.scale:g}"
    how = f"--config {shown} (or --scale {scale})" if flags else f"config={shown!r} (or scale={scale})"
    return f"{shown} scores at eval.scale {scale}: pass {how} to predict as it was scored"


class FlipWarning(UserWarning):
    """msf/mscf without flip because the config says eval.flip: false (the stored default of runs before 12-04)."""


def flip_note(info: LabelInfo, mode: str, flip: bool | None, flags: bool = False) -> str | None:
    """Why msf/mscf runs without flip when `flip` is not given and the config turns it off; else None."""
    if mode not in ("msf", "mscf") or flip is not None or info.evaluation.flip is not False:
        return None
    how = "--flip" if flags else "flip=True"
    return (f"eval.flip is false in {info.source}: {mode} runs without flip (pass {how}, or set eval.flip: null, "
            "for the protocol's flip)")


class Segmenter:
    """Segment RGB uint8 images with a BiSeNet model: `Segmenter.from_checkpoint(path).predict(image)`.

    An nn.Module passed in is the Segmenter's from then on: it is moved to `device` and left in eval mode for good
    (no end of use to restore it at; call model.train() before training it again, or pass a copy.deepcopy).
    """

    def __init__(self, model: nn.Module | Callable, num_classes: int, info: LabelInfo | None = None,
                 device: str | torch.device = "cpu",
                 mode: str = "ss", backend: str = "eager", batch_size: int = 4, protocol: Protocol | None = None,
                 calibration: str | os.PathLike | None = None, scale: float | None = None,
                 flip: bool | None = None) -> None:
        """Wrap a model (or a runner); `info` (names, palette, mean/std) defaults to `label_info(num_classes)`.

        `flip` adds flipped inputs; None follows the config's eval.flip (null: on for msf/mscf).
        """
        from bisenet.checkpoint import model_arch
        from bisenet.engine.distributed import resolve_device

        _check_model(model)
        predicts = getattr(model, "num_classes", None)  # runners may not say; BiSeNet models do
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            example = predicts if isinstance(predicts, int) else 19
            raise ConfigError(f"Segmenter: num_classes must be a positive int, got {num_classes!r} "
                              f"({type(num_classes).__name__}); pass e.g. num_classes={example}")
        num_classes = int(num_classes)
        if info is not None and not isinstance(info, LabelInfo):
            raise BisenetError(f"Segmenter: info must be a LabelInfo (e.g. label_info(num_classes, config)) or None, "
                               f"got {type(info).__name__}")
        if isinstance(predicts, int) and predicts != num_classes:  # else a wrong palette and mean/std, silently
            raise ConfigError(f"the model predicts {predicts} classes but num_classes is {num_classes}; "
                              f"pass num_classes={predicts}")
        info = info if info is not None else label_info(num_classes)  # the preset with that class count, else ImageNet
        self.batch_size = check_batch_size(batch_size)  # before any backend build
        scale = info.evaluation.scale if scale is None else check_scale(scale, mode)
        self.device = resolve_device(device)
        self.num_classes = num_classes
        self.info = info
        self.arch = model_arch(model)  # None for a runner: what a matching bundled config is looked up by
        if isinstance(model, nn.Module):
            from bisenet.deploy.backends import CALIBRATED

            options = {}
            if backend in CALIBRATED:
                if calibration is None:
                    raise BisenetError(f"the {backend} backend needs calibration images: pass --calibration DIR "
                                       "(calibration= in Python; a folder of images like the ones to segment)")
                options = {"calibration": calibration, "mean": info.mean, "std": info.std}
            model = build_runner(model.to(self.device).eval(), backend, self.device, **options)
        if self.device.type == "cpu":  # after the build, whose export and calibration memory goes back to the system
            keep_freed_memory()  # eager inference 20% faster here: no page faults on each image's activations
        self.model = model
        self.backend = getattr(model, "name", backend)  # what runs, said on predict's start line
        self.protocol = protocol or config_protocol(info.evaluation, mode, scale=scale, flip=flip)  # as eval runs it
        self._mean = torch.tensor(info.mean, device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(info.std, device=self.device).view(1, 3, 1, 1) * 255

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
                        config: Config | str | os.PathLike | dict | None = None, mode: str = "ss",
                        backend: str = "eager", batch_size: int = 4,
                        calibration: str | os.PathLike | None = None, scale: float | None = None,
                        flip: bool | None = None) -> Segmenter:
        """Load published or own weights; names/palette/mean/std from `config`, the checkpoint, or a preset.

        A `config` whose model.arch differs from the weights' arch is refused, as by `bisenet eval`.
        `scale` (ss/ssc) resizes inputs first, overriding the config's eval.scale. Without `config` and `scale`,
        an EvalScaleWarning says when a bundled config of these weights scores at another eval.scale (as the CLI's
        note does); it still runs at the scale of the names' source (a preset's: 1).
        """
        from bisenet.checkpoint import check_arch, check_classes, model_from_weights, read_weights
        from bisenet.engine.distributed import resolve_device

        check_batch_size(batch_size)  # before loading the weights
        if scale is not None:
            check_scale(scale, mode)
        device = resolve_device(device)  # 'auto' -> cuda when present
        ckpt = read_weights(path, map_location=device)
        model = model_from_weights(ckpt, path, map_location=device)
        if config is not None:
            named = "the config" if isinstance(config, (Config, dict)) else f"config {config}"
            config = config if isinstance(config, Config) else load_config(config)
            check_arch(model, config.model.arch, path)
            check_classes(model, config.num_classes, path, named)
        stored = ckpt.get("config")
        info = label_info(model.num_classes, config, stored if isinstance(stored, dict) else None, path)
        segmenter = cls(model, model.num_classes, info, device, mode, backend, batch_size, calibration=calibration,
                        scale=scale, flip=flip)
        if flip_note(info, mode, flip):
            warnings.warn(flip_note(info, mode, flip), FlipWarning, stacklevel=2)
        note = scale_note(segmenter) if config is None and scale is None else None
        if note:
            warnings.warn(note, EvalScaleWarning, stacklevel=2)
        return segmenter

    @property
    def palette(self) -> list[list[int]]:
        """RGB colour per class."""
        return self.info.palette

    @property
    def class_names(self) -> list[str]:
        """Name per class."""
        return self.info.class_names

    def _tensor(self, images: list[np.ndarray]) -> torch.Tensor:
        batch = torch.from_numpy(np.stack(images)).to(self.device, non_blocking=True)
        return (batch.permute(0, 3, 1, 2).float() - self._mean) / self._std

    def predict(self, image: np.ndarray) -> np.ndarray:
        """HxW class ids (uint8; int32 past 256 classes) of a uint8 image: HxWx3 RGB, HxWx4 RGBA, HxW or HxWx1 gray."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Class-id maps for a list (or NxHxWxC array) of uint8 images, as for `predict`; same-size ones share a pass.

        A 3-D array is refused: one HxWx3 image and N HxW gray ones look alike; pass a list.
        """
        if isinstance(images, np.ndarray) and images.ndim != 4:  # iterating would take each row as an image
            raise BisenetError(f"predict_batch takes a list (or NxHxWxC array) of images; got one {images.ndim}-D "
                               f"array {images.shape}: use predict() for one image, or pass a list of gray ones")
        images = [_as_rgb(image, i) for i, image in enumerate(images)]
        out: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(image.shape[:2], []).append(i)
        dtype = np.uint8 if self.num_classes <= 256 else np.int32
        for indices in groups.values():
            for k in range(0, len(indices), self.batch_size):
                chunk = indices[k:k + self.batch_size]
                labels = predict_labels(self.model, self._tensor([images[i] for i in chunk]), self.protocol)
                for i, label in zip(chunk, labels.to(torch.int32).cpu().numpy()):
                    out[i] = label.astype(dtype)
        return out  # type: ignore[return-value]

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """RGB colour image of a label map with this model's palette."""
        return colorize(mask, self.info.palette)


def _check_model(model: object) -> None:
    """Refuse what is not a model (or runner) to wrap, before it fails later as a TypeError."""
    if isinstance(model, (str, bytes, os.PathLike)):
        raise BisenetError(f"Segmenter: got the path {os.fsdecode(model)[:200]!r} as the model; load weights with "
                           "Segmenter.from_checkpoint(path) (Segmenter(model, num_classes) takes a built nn.Module)")
    if not callable(model):
        raise BisenetError(f"Segmenter: the model must be an nn.Module (or a callable runner), got "
                           f"{type(model).__name__}; for a weights file use Segmenter.from_checkpoint(path)")


def _as_rgb(image: np.ndarray, index: int = 0) -> np.ndarray:
    """An image given to `Segmenter.predict` as an HxWx3 RGB uint8 array, or a one-line error saying how to make one."""
    if isinstance(image, (bytes, bytearray, memoryview)):  # a web service's upload: never echo the file itself
        raise BisenetError(f"image {index}: got {len(image)} bytes of an encoded file; decode them first, e.g. "
                           "cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]")
    if isinstance(image, (str, os.PathLike)):  # np.asarray would make it a 0-d string array
        raise BisenetError(f"image {index}: got the path {os.fsdecode(image)[:200]!r}; predict takes an RGB uint8 array: "
                           "read the file first (e.g. np.asarray(PIL.Image.open(path).convert('RGB')) or "
                           "cv2.imread(path)[:, :, ::-1]), or run `bisenet predict` on files")
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:  # gray kept 3-D, e.g. by OpenCV or a [..., :1] slice
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise BisenetError(f"image {index}: expected an HxWx3 RGB, HxWx4 RGBA, or HxW or HxWx1 gray uint8 array, "
                           f"got {image.dtype} {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise BisenetError(f"image {index}: {image.shape[1]}x{image.shape[0]} (WxH) has no pixels; pass an image of "
                           "at least 1x1 (an empty crop or a failed read?)")
    if image.dtype != np.uint8:  # no guessing whether floats span 0-1 or 0-255: a wrong guess fails silently
        if image.dtype.kind == "f":
            fix = "(image * 255).round().astype(np.uint8) for 0-1 floats"
        elif image.size and image.max() > 255:  # astype would wrap 256 to 0; the CLI reads 16-bit PNGs as value >> 8
            fix = "(image >> 8).astype(np.uint8) for 16-bit values 0-65535, as bisenet predict reads 16-bit PNGs"
        else:
            fix = "image.astype(np.uint8) for 0-255 integers"
        raise BisenetError(f"image {index}: {image.dtype} pixels; pass RGB uint8 values 0-255, e.g. {fix}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])  # RGBA: alpha dropped
