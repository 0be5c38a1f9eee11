"""Configuration: plain YAML loaded into frozen, typed dataclasses.

Unknown keys are rejected with the nearest valid name; `key.path=value` overrides
(from `--set` or from CLI flags) are applied before validation.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from bisenet.config_overrides import Source, parse_overrides, set_path
from bisenet.errors import ConfigError, nearest

ARCHS = ("bisenetv1", "bisenetv2")
AMP_MODES = ("none", "auto", "fp16", "bf16")
EVAL_MODES = ("ss", "ssc", "msf", "mscf")
CACHE_MODES = ("none", "memory", "disk", "device")


@dataclass(frozen=True)
class ModelConfig:
    """Which network to build."""

    arch: str = "bisenetv2"
    # V1 only: ImageNet ResNet-18 weights: a torchvision resnet18-*.pth path, "imagenet" (the
    # torch hub cache), or null for random init.
    pretrained: str | None = None
    sync_bn: bool = False


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how labels are encoded."""

    # cityscapes | cocostuff | camvid | ade20k | dubai | custom
    dataset: str = "custom"
    root: str = "."
    train_list: str = "train.txt"
    val_list: str = "val.txt"
    test_list: str | None = None
    # For named datasets these default to the dataset's own values.
    num_classes: int | None = None
    ignore_index: int = 255
    label_map: dict[int, int] | None = None  # raw label value -> train id; others -> ignore
    class_names: list[str] | None = None
    palette: list[list[int]] | None = None
    mean: list[float] | None = None  # RGB, on [0, 1] pixels
    std: list[float] | None = None
    cache: str = "none"  # decoded-image cache: none | memory | disk | device (train split on the GPU, augmented there)


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation (evaluation uses none)."""

    crop_size: tuple[int, int] = (512, 1024)  # H, W
    scale_range: tuple[float, float] = (0.25, 2.0)
    flip: bool = True
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule, loss and run bookkeeping."""

    max_iters: int = 150_000
    batch_size: int = 8  # per process
    optimizer: str = "sgd"  # sgd (the reference recipe) | adamw (converges faster on short runs)
    lr: float = 5e-3
    momentum: float = 0.9  # SGD momentum; AdamW's beta1
    weight_decay: float = 5e-4
    head_lr_factor: float = 10.0
    warmup_iters: int = 1000
    warmup_ratio: float = 0.1
    poly_power: float = 0.9
    loss: str = "ohem"  # ohem | ce
    ohem_thresh: float = 0.7  # keep pixels whose correct-class probability is below this
    ohem_min_kept_fraction: float = 1 / 16
    aux_weights: list[float] | None = None  # one per auxiliary head; null = all 1.0
    amp: str = "none"  # none | auto (bf16 where the hardware has it, else fp16 on CUDA, none on CPU) | fp16 | bf16
    # auto: channels_last under bf16/fp16 autocast and on CUDA, contiguous for fp32 on a CPU (there
    # the channels_last step was 10-25% slower on AVX2 CPUs, its convs' backward) | true | false
    channels_last: bool | str = "auto"
    workers: int = 4
    seed: int = 0
    checkpoint_interval: int = 1000
    eval_interval: int = 1000
    log_interval: int = 20
    device: str = "auto"  # auto | cpu | cuda | cuda:N


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation protocol defaults."""

    mode: str = "ss"
    scale: float = 1.0  # ss/ssc: resize inputs by this first (CamVid's 960x720 protocol on 480x360 data: 2.0)
    scales: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5, 1.75])
    flip: bool = False
    crop_size: tuple[int, int] | None = None  # sliding window (H, W); null = whole image
    stride: tuple[int, int] | None = None  # null = 2/3 of the crop
    batch_size: int = 1


@dataclass(frozen=True)
class Config:
    """A whole run: model, data, augmentation, training and evaluation."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def num_classes(self) -> int:
        """Number of classes the model predicts (resolved from the dataset)."""
        assert self.data.num_classes is not None, "load_config resolves num_classes"
        return self.data.num_classes


def load_config(
    config: str | Path | Config | dict | None = None,
    overrides: list[str] | str | dict[str, Any] | None = None,
) -> Config:
    """Load a YAML file (or dict, or Config) and apply `key.path=value` overrides (a list, or one string)."""
    if isinstance(config, Config):
        raw = to_dict(config)
        source = "config"
    elif isinstance(config, dict):
        # Deep: overrides write into nested sections, which must not reach the caller's dict.
        raw, source = copy.deepcopy(config), "config"
    elif config is None:
        raw, source = {}, "defaults"
    else:
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found; pass a YAML file such as configs/bisenetv2_dubai.yaml")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a YAML text file; pass a config such as configs/bisenetv2_dubai.yaml") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections (model, data, ...), got {type(raw).__name__}")
        source = str(path)
    parsed = parse_overrides(overrides)
    for key, (value, label) in parsed.items():
        set_path(raw, key, value, label)
    # Errors about a value an override set name the override, not the file, e.g. "--set train.lr=abc: ...".
    where = Source(source, {key: label for key, (_, label) in parsed.items()})
    return _resolve(_build(Config, raw, where, ""), where)


def to_dict(cfg: Any) -> Any:
    """Convert a config (or part of one) to plain YAML-safe Python values."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (what a run actually used)."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def parse_size(text: str | list | tuple, what: str = "size") -> tuple[int, int]:
    """Parse 'HxW' (or [H, W]) into a tuple of two positive ints."""
    parts = text.lower().split("x") if isinstance(text, str) else list(text)
    try:
        h, w = (int(p) for p in parts)
    except (ValueError, TypeError):
        raise ConfigError(f"{what}: expected HxW such as 512x1024, got {text!r}") from None
    if h <= 0 or w <= 0:
        raise ConfigError(f"{what}: sides must be positive, got {text!r}")
    return h, w


def _build(cls: type, raw: Any, source: Source, prefix: str) -> Any:
    if not isinstance(raw, dict):
        section = prefix.rstrip(".")
        raise ConfigError(f"{source.at(section)}: '{section or 'top level'}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            hint = _other_section(str(key), prefix, 1.0) or nearest(str(key), names) or _other_section(str(key), prefix, 0.75)
            raise ConfigError(f"{source.at(f'{prefix}{key}')}: unknown key '{prefix}{key}'{hint}; valid keys: {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name in raw:
            kwargs[name] = _coerce(hints[name], raw[name], source, prefix + name)
    return cls(**kwargs)


def _other_section(key: str, prefix: str, cutoff: float) -> str:
    """' (did you mean 'augment.crop_size'?)' for a key that belongs under another section."""
    if not prefix:
        return ""
    elsewhere: dict[str, list[str]] = {}
    for name, section in typing.get_type_hints(Config).items():
        if f"{name}." != prefix:
            for f in dataclasses.fields(section):
                elsewhere.setdefault(f.name, []).append(f"{name}.{f.name}")
    match = difflib.get_close_matches(key, list(elsewhere), n=1, cutoff=cutoff)
    return f" (did you mean {' or '.join(repr(d) for d in elsewhere[match[0]])}?)" if match else ""


def _coerce(hint: Any, value: Any, source: Source, key: str) -> Any:
    """Check and convert one value to the annotated type, naming the key on failure."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value if value is not None else {}, source, key + ".")
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    bad = ConfigError(f"{source.at(key)}: {key} = {value!r} is not a valid {_type_name(hint)}")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for option in inner[:-1]:  # e.g. bool | str: true/false first, then a word such as "auto"
            try:
                return _coerce(option, value, source, key)
            except ConfigError:
                pass
        try:
            return _coerce(inner[-1], value, source, key)
        except ConfigError:
            raise bad from None
    if hint is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if hint is float:
        if isinstance(value, str):  # PyYAML reads 1e-2 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad
        return value
    if origin is tuple:
        if isinstance(value, str) and args == (int, int):
            return parse_size(value, f"{source.at(key)}: {key}")
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise bad
        return tuple(_coerce(a, v, source, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_coerce(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return {_coerce(args[0], k, source, f"{key} key"): _coerce(args[1], v, source, f"{key}[{k}]") for k, v in value.items()}
    return value


def _type_name(hint: Any) -> str:
    names = {int: "integer", float: "number", bool: "boolean (true/false)", str: "string"}
    if hint in names:
        return names[hint]
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
    if origin is tuple:
        return "pair such as [512, 1024]" if len(typing.get_args(hint)) == 2 else "tuple"
    if origin is list:
        return "list"
    if origin is dict:
        return "mapping"
    return str(hint)


def _choice(source: Source, key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{source.at(key)}: {key} = {value!r} is not one of {', '.join(choices)}{nearest(value, choices)}")


def _resolve(cfg: Config, source: Source) -> Config:
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
    return dataclasses.replace(cfg, data=data)


def _check_label_map(data: DataConfig, source: Source) -> None:
    """Label map targets: a class id or the ignore index (a key no label holds, e.g. Cityscapes' -1, is harmless)."""
    for raw, target in (data.label_map or {}).items():
        if not (0 <= target < data.num_classes or target == data.ignore_index):
            raise ConfigError(f"{source.at('data.label_map', 'data.num_classes', 'data.dataset')}: data.label_map "
                              f"{raw}: {target} must map to a class id in [0, {data.num_classes}) or to the ignore "
                              f"index {data.ignore_index}")


def _check_ranges(cfg: Config, source: Source) -> None:
    """Numbers that would otherwise fail deep inside a run (a zero interval, a negative worker count)."""
    lo, hi = cfg.augment.scale_range
    if not 0 < lo <= hi:
        raise ConfigError(f"{source.at('augment.scale_range')}: augment.scale_range = [{lo}, {hi}] "
                          "must satisfy 0 < low <= high")
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
    # OHEM keeps pixels whose true-class probability is below the threshold: at 0 none qualify
    # (and -ln 0 fails); at 1 every pixel does (plain cross-entropy), above 1 it means nothing.
    if not 0 < t.ohem_thresh <= 1:
        raise ConfigError(f"{source.at('train.ohem_thresh')}: train.ohem_thresh = {t.ohem_thresh} must lie in (0, 1], "
                          "a probability such as 0.7 (for plain cross-entropy set train.loss: ce)")
    if not 0 <= t.ohem_min_kept_fraction <= 1:
        raise ConfigError(f"{source.at('train.ohem_min_kept_fraction')}: train.ohem_min_kept_fraction = "
                          f"{t.ohem_min_kept_fraction} must lie in [0, 1], a share of the valid pixels such as 0.0625")
    for key, size in (("augment.crop_size", cfg.augment.crop_size), ("eval.crop_size", cfg.eval.crop_size)):
        if size is not None and min(size) <= 0:
            raise ConfigError(f"{source.at(key)}: {key} = {size[0]}x{size[1]} must be positive")
    if not 0 < cfg.eval.scale <= 8:
        raise ConfigError(f"{source.at('eval.scale')}: eval.scale = {cfg.eval.scale} must lie in (0, 8]; "
                          "1.0 scores images at their own size")
