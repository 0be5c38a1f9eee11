"""Configuration values checked after their types: choices, dataset presets, label map, ranges.

`config.load_config` builds the typed dataclasses; `resolve` then fills what a dataset
preset implies (classes, names, palette, mean/std) and refuses values that would fail deep
inside a run, naming the key (or the `--set` that gave it) and the fix.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

from bisenet.config_overrides import Source
from bisenet.errors import ConfigError, nearest

if TYPE_CHECKING:
    from bisenet.config import Config, DataConfig

ARCHS = ("bisenetv1", "bisenetv2")
AMP_MODES = ("none", "auto", "fp16", "bf16")
EVAL_MODES = ("ss", "ssc", "msf", "mscf")
CACHE_MODES = ("none", "memory", "disk", "device")
MAX_SCALE = 8.0  # eval scale factors: 1000 would ask for ~90 GB of activations at 480x360, a typo, not a protocol


def _choice(source: Source, key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{source.at(key)}: {key} = {value!r} is not one of {', '.join(choices)}{nearest(value, choices)}")


def resolve(cfg: Config, source: Source) -> Config:
    """Validate choices and fill dataset-dependent defaults (classes, mean/std)."""
    from bisenet.data.catalog import DATASETS

    _choice(source, "model.arch", cfg.model.arch, ARCHS)
    if cfg.model.pretrained and cfg.model.arch != "bisenetv1":  # else build_model fails after the work dir is made
        raise ConfigError(f"{source.at('model.pretrained', 'model.arch')}: model.pretrained is for bisenetv1's ResNet-18; "
                          f"{cfg.model.arch} trains from scratch, so set model.pretrained: null")
    _choice(source, "train.amp", cfg.train.amp, AMP_MODES)
    if isinstance(cfg.train.channels_last, str) and cfg.train.channels_last != "auto":
        raise ConfigError(f"{source.at('train.channels_last')}: train.channels_last = {cfg.train.channels_last!r} "
                          "is not one of true, false, auto")
    _choice(source, "train.loss", cfg.train.loss, ("ohem", "ce"))
    _choice(source, "train.optimizer", cfg.train.optimizer, ("sgd", "adamw"))
    _choice(source, "eval.mode", cfg.eval.mode, EVAL_MODES)
    _choice(source, "data.cache", cfg.data.cache, CACHE_MODES)
    _choice(source, "data.dataset", cfg.data.dataset, tuple(DATASETS) + ("custom",))
    data = cfg.data
    preset = DATASETS.get(data.dataset)
    # Where class names and palette came from the preset, a count mismatch is fixed by leaving the preset.
    from_preset = {name: preset is not None and getattr(data, name) is None for name in ("class_names", "palette")}
    if preset is not None:
        data = dataclasses.replace(
            data,
            num_classes=data.num_classes or preset.num_classes,
            class_names=data.class_names or list(preset.class_names),
            palette=data.palette or [list(c) for c in preset.palette],
            mean=data.mean or list(preset.mean),
            std=data.std or list(preset.std),
            label_map=data.label_map if data.label_map is not None else preset.label_map,
        )
    elif data.num_classes is None:
        raise ConfigError(f"{source.at('data.num_classes', 'data.dataset')}: data.num_classes is required "
                          "for a custom dataset (data.dataset: custom)")
    data = dataclasses.replace(data, mean=data.mean or [0.485, 0.456, 0.406], std=data.std or [0.229, 0.224, 0.225])
    if data.num_classes < 1:
        raise ConfigError(f"{source.at('data.num_classes')}: data.num_classes must be at least 1, got {data.num_classes}")
    if not 0 <= data.ignore_index <= 255 or data.ignore_index < data.num_classes:
        raise ConfigError(
            f"{source.at('data.ignore_index', 'data.num_classes', 'data.dataset')}: "
            f"data.ignore_index = {data.ignore_index} must lie in [num_classes, 255] "
            f"(num_classes = {data.num_classes}); 255 is the usual choice"
        )
    for name in ("mean", "std"):
        values = getattr(data, name)
        if len(values) != 3:
            raise ConfigError(f"{source.at(f'data.{name}')}: data.{name} needs 3 values (R, G, B), got {values}")
        if not all(0 <= v <= 1 for v in values) or (name == "std" and min(values) <= 0):
            scale = " (0-255 values? divide them by 255)" if max(values) > 1 else ""
            allowed = "in (0, 1]" if name == "std" else "in [0, 1]"
            raise ConfigError(f"{source.at(f'data.{name}')}: data.{name} = {values} must be 3 values {allowed}, "
                              f"on pixels scaled to [0, 1]{scale}")
    whose = f" (the {data.dataset} preset's)"
    if data.class_names is not None and len(data.class_names) != data.num_classes:
        preset_names = from_preset["class_names"]
        raise ConfigError(
            f"{source.at('data.class_names', 'data.num_classes', 'data.dataset')}: data.class_names"
            f"{whose if preset_names else ''} has {len(data.class_names)} names but num_classes is {data.num_classes}"
            + ("; for other classes set data.dataset=custom (and data.class_names, or none)" if preset_names else "")
        )
    if data.palette is not None:
        bad = next((c for c in data.palette if len(c) != 3 or not all(0 <= v <= 255 for v in c)), None)
        if bad is not None:
            raise ConfigError(f"{source.at('data.palette')}: data.palette entry {bad} must be 3 integers in 0-255 (R, G, B)")
        if len(data.palette) < data.num_classes:
            fix = ("for other classes set data.dataset=custom (a generated palette unless data.palette is given), "
                   "or give one [R, G, B] per class" if from_preset["palette"]
                   else "give one [R, G, B] per class, or leave it out for a generated palette")
            raise ConfigError(f"{source.at('data.palette', 'data.num_classes', 'data.dataset')}: data.palette"
                              f"{whose if from_preset['palette'] else ''} has {len(data.palette)} colours for "
                              f"{data.num_classes} classes; {fix}")
    _check_label_map(data, source)
    _check_ranges(cfg, source)
    _check_aux_weights(cfg, source)
    return dataclasses.replace(cfg, data=data)


def _check_label_map(data: DataConfig, source: Source) -> None:
    """Label map targets: a class id or the ignore index (a key no label holds, e.g. Cityscapes' -1, is harmless)."""
    for raw, target in (data.label_map or {}).items():
        if not -1 <= raw <= 255:  # labels are 8-bit: such a key matches no pixel, so its class would never be seen
            raise ConfigError(f"{source.at('data.label_map', 'data.dataset')}: data.label_map key {raw} (-> {target}) "
                              "is not a label value: keys are the values stored in the 8-bit label files, 0-255 "
                              "(-1, as in Cityscapes' map, is allowed and matches nothing)")
        if not (0 <= target < data.num_classes or target == data.ignore_index):
            raise ConfigError(f"{source.at('data.label_map', 'data.num_classes', 'data.dataset')}: data.label_map "
                              f"{raw}: {target} must map to a class id in [0, {data.num_classes}) or to the ignore "
                              f"index {data.ignore_index}")


def _check_aux_weights(cfg: Config, source: Source) -> None:
    """One train.aux_weights value per aux head of the arch, refused here rather than once the data is checked."""
    from bisenet.models import MODELS  # the heads' one list (bisenet imports torch and the models anyway)

    weights, arch = cfg.train.aux_weights, cfg.model.arch
    heads = getattr(MODELS.get(arch), "aux_heads", None)
    if weights is None or heads is None or len(weights) == len(heads):
        return
    raise ConfigError(f"{source.at('train.aux_weights', 'model.arch')}: train.aux_weights has {len(weights)} values "
                      f"but {arch} has {len(heads)} aux heads ({', '.join(heads)}); give {len(heads)} values, "
                      "or null for 1.0 each")


def _check_ranges(cfg: Config, source: Source) -> None:
    """Numbers that would otherwise fail deep inside a run (a zero interval, a negative worker count)."""
    lo, hi = cfg.augment.scale_range
    if not 0 < lo <= hi:
        raise ConfigError(f"{source.at('augment.scale_range')}: augment.scale_range = [{lo}, {hi}] "
                          "must satisfy 0 < low <= high")
    for name in ("brightness", "contrast", "saturation"):
        # Each factor is drawn from [1 - x, 1 + x]: past 1 it can be negative, turning whole crops black.
        value = getattr(cfg.augment, name)
        if not 0 <= value <= 1:
            raise ConfigError(f"{source.at(f'augment.{name}')}: augment.{name} = {value} must lie in [0, 1] (the "
                              f"jitter draws a factor in [1 - {name}, 1 + {name}]; 0 turns it off, e.g. 0.4)")
    t = cfg.train
    minimums = (("train.max_iters", t.max_iters, 1), ("train.log_interval", t.log_interval, 1), ("train.checkpoint_interval", t.checkpoint_interval, 1),
                ("train.eval_interval", t.eval_interval, 0), ("train.warmup_iters", t.warmup_iters, 0),
                ("train.workers", t.workers, 0))
    for key, value, least in minimums:
        if value < least:
            meaning = {"train.eval_interval": " (0 = no evaluation during training)",
                       "train.workers": " (0 = load in the main process)"}.get(key, "")
            raise ConfigError(f"{source.at(key)}: {key} must be at least {least}{meaning}, got {value}")
    if t.batch_size < 2:
        raise ConfigError(f"{source.at('train.batch_size')}: train.batch_size must be at least 2 per process "
                          f"(BatchNorm needs 2 images), got {t.batch_size}")
    if t.lr <= 0:
        raise ConfigError(f"{source.at('train.lr')}: train.lr must be positive, got {t.lr}")
    # Values torch refuses with a traceback, or that silently wreck the schedule.
    for key, value, ok, meaning in (
            ("train.momentum", t.momentum, 0 <= t.momentum < 1, "in [0, 1), e.g. 0.9"),
            ("train.weight_decay", t.weight_decay, t.weight_decay >= 0, "0 or more"),
            ("train.head_lr_factor", t.head_lr_factor, t.head_lr_factor > 0, "positive (1 = the body's lr)"),
            ("train.warmup_ratio", t.warmup_ratio, 0 < t.warmup_ratio <= 1, "in (0, 1]: the warm-up's first lr share"),
            ("train.poly_power", t.poly_power, t.poly_power >= 0, "0 or more, e.g. 0.9 (0: a constant lr after warm-up)")):
        if not ok:
            raise ConfigError(f"{source.at(key)}: {key} = {value} must be {meaning}")
    # OHEM keeps pixels whose true-class probability is below the threshold: at 0 none qualify
    # (and -ln 0 fails); at 1 every pixel does (plain cross-entropy), above 1 it means nothing.
    if not 0 < t.ohem_thresh <= 1:
        raise ConfigError(f"{source.at('train.ohem_thresh')}: train.ohem_thresh = {t.ohem_thresh} must lie in (0, 1], "
                          "a probability such as 0.7 (for plain cross-entropy set train.loss: ce)")
    if not 0 <= t.ohem_min_kept_fraction <= 1:
        raise ConfigError(f"{source.at('train.ohem_min_kept_fraction')}: train.ohem_min_kept_fraction = "
                          f"{t.ohem_min_kept_fraction} must lie in [0, 1], a share of the valid pixels such as 0.0625")
    if not 0 <= t.seed < 2**32:  # each step seeds torch with seed * 1_000_003 + ...: that must stay below 2**63
        raise ConfigError(f"{source.at('train.seed')}: train.seed = {t.seed} must lie in [0, 2**32)")
    if not re.fullmatch(r"auto|cpu(:\d+)?|cuda(:\d+)?", t.device):  # else a run would fail only once it starts
        raise ConfigError(f"{source.at('train.device')}: train.device = {t.device!r} is not a device; "
                          "pass auto, cpu or cuda[:N]")
    for key, size in (("augment.crop_size", cfg.augment.crop_size), ("eval.crop_size", cfg.eval.crop_size)):
        if size is not None and min(size) <= 0:
            raise ConfigError(f"{source.at(key)}: {key} = {size[0]}x{size[1]} must be positive")
        # Training crops and sliding windows enter the network as they are: checked here, not when a run
        # (or a later `bisenet eval --mode ssc`, or `data show --augment`) meets them.
        if size is not None and (size[0] % 32 or size[1] % 32):
            fitted = "x".join(str(-(-side // 32) * 32) for side in size)
            raise ConfigError(f"{source.at(key)}: {key} = {size[0]}x{size[1]} must be multiples of 32 (the "
                              f"network's stride; crops enter it as they are): use {fitted}")
    if not 0 < cfg.eval.scale <= MAX_SCALE:
        raise ConfigError(f"{source.at('eval.scale')}: eval.scale = {cfg.eval.scale} must lie in (0, {MAX_SCALE:g}]; "
                          "1.0 scores images at their own size")
    _check_scales(cfg.eval.scales, source)


def _check_scales(scales: list[float], source: Source) -> None:
    """eval.scales: at least one, each in (0, MAX_SCALE], as --scales (else the six defaults, or a huge allocation)."""
    bad = [s for s in scales if not 0 < s <= MAX_SCALE]
    if not scales or bad:
        problem = f"has {bad[0]:g}, outside (0, {MAX_SCALE:g}]" if bad else "is empty"
        raise ConfigError(f"{source.at('eval.scales')}: eval.scales = {[float(s) for s in scales]} {problem}; give "
                          "factors the input is resized by for msf/mscf, e.g. [0.75, 1.0, 1.25]")
