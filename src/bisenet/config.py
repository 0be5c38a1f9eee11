"""Configuration: plain YAML loaded into frozen, typed dataclasses.

Unknown keys are rejected with the nearest valid name; `key.path=value` overrides
(from `--set` or from CLI flags) are applied before validation, which lives in config_checks.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from bisenet.config_checks import AMP_MODES, ARCHS, CACHE_MODES, EVAL_MODES, resolve  # noqa: F401 (the CLI's choices)
from bisenet.config_overrides import Source, parse_overrides, set_path
from bisenet.config_yaml import refuse_sexagesimal, yaml_typed_hint
from bisenet.errors import ConfigError, nearest


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
    flip: bool | None = None  # null = the mode's default: on for msf/mscf, off for ss/ssc; false turns it off
    # ssc/mscf sliding window (H, W); null = Cityscapes' 1024x1024, else augment.crop_size (eval_settings)
    crop_size: tuple[int, int] | None = None
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


# Optional settings whose null means "off", so people write false; elsewhere null means "the default" (aux_weights
# 1.0 each, the preset's label_map), which false must not silently turn into.
FALSE_MEANS_NONE = {"model.pretrained", "eval.crop_size"}
HEX_IN_FLOW = re.compile(r"[\[,]\s*(#[0-9A-Fa-f]{3,8})\b")  # [#3C1098, ...: the comment cuts the list short


def _hex_in_flow(text: str, last_line: int | None) -> str:
    """Why a YAML error is an unquoted hex colour in a [...] list (up to the error's line), '' when it is not."""
    for number, line in enumerate(text.splitlines()[:last_line], start=1):
        found = HEX_IN_FLOW.search(line)
        if found and line.find("#") == found.start(1):  # its '#' starts the line's comment (not one inside a comment)
            return (f"line {number} is not valid YAML: '#' starts a YAML comment, which cuts "
                    f"{line[:found.end()].strip()!r} short; quote the colour ('{found.group(1)}') or write it as "
                    "[R, G, B]")
    return ""


def load_config(
    config: str | Path | Config | dict | None = None,
    overrides: list[str] | str | dict[str, Any] | None = None,
) -> Config:
    """Load a config from a YAML path, a dict of sections or a Config; apply `key.path=value` overrides to it.

    `overrides`: a list, one string, or a dict such as {"train.lr": 0.01}. `config=None` starts from the
    defaults, so it needs overrides (data.dataset at least).
    """
    if config is None and not overrides:  # the defaults alone never load: a custom dataset with no class count
        raise ConfigError("load_config takes a YAML path, a dict or a Config, got None; pass e.g. "
                          "'configs/bisenetv2_dubai.yaml' (or None with overrides such as {'data.dataset': 'camvid'})")
    if not isinstance(config, (Config, dict, str, os.PathLike)) and config is not None:
        raise ConfigError(f"load_config takes a YAML path, a dict or a Config, got {type(config).__name__} "
                          f"{repr(config)[:80]}; pass e.g. 'configs/bisenetv2_dubai.yaml'")
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
            text = path.read_text(encoding="utf-8")
            raw = yaml.load(text, Loader=_UniqueKeyLoader) or {}
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a YAML text file; pass a config such as configs/bisenetv2_dubai.yaml") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            problem = str(getattr(exc, "problem", exc))
            if problem.startswith("duplicate key"):
                raise ConfigError(f"{path}:{where}: {problem}") from None
            hex_comment = _hex_in_flow(text, mark.line + 1 if mark else None)
            if hex_comment:
                raise ConfigError(f"{path}: {hex_comment}") from None
            raise ConfigError(f"{path}:{where} is not valid YAML ({problem})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections (model, data, ...), got {type(raw).__name__}")
        source = str(path)
    parsed = _merge_sections(parse_overrides(overrides))
    for key, (value, label) in parsed.items():
        set_path(raw, key, value, label)
    # Errors about a value an override set name the override, not the file, e.g. "--set train.lr=abc: ...".
    where = Source(source, {key: label for key, (_, label) in parsed.items()})
    return resolve(_build(Config, raw, where, ""), where)


def bundled_config(arch: str | None, classes: int) -> tuple[str, Config] | None:
    """The first bundled config (configs/*.yaml) of this arch and class count, as (path as shown, Config), or None."""
    folder = Path(__file__).resolve().parents[2] / "configs"  # the repository's configs/
    for path in sorted(folder.glob("*.yaml")):
        try:
            cfg = load_config(path)
        except ConfigError:  # an edited, broken file: suggest another
            continue
        if cfg.model.arch == arch and cfg.num_classes == classes:
            return (os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)), cfg
    return None


def _merge_sections(parsed: dict[str, tuple[Any, str]]) -> dict[str, tuple[Any, str]]:
    """{'train': {'lr': 0.1}} as {'train.lr': 0.1}: a section override sets its keys, it does not reset the rest.

    Replacing the section would silently drop every key of the file's section it does not repeat.
    """
    sections = {f.name for f in dataclasses.fields(Config)}
    merged: dict[str, tuple[Any, str]] = {}
    for key, (value, label) in parsed.items():
        if key in sections and value is None:  # `--set train=` would reset the file's whole section
            example = dataclasses.fields(typing.get_type_hints(Config)[key])[0].name
            raise ConfigError(f"{label}: a section takes {{key: value}} (e.g. {key}={{{example}: ...}}), "
                              f"or set one key with {key}.{example}=...")
        if key in sections and isinstance(value, dict):
            merged.update({f"{key}.{name}": (item, label) for name, item in value.items()})
        else:
            merged[key] = (value, label)
    return merged


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error, not 'last one wins'."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` merges (and may be overridden): flatten_mapping handles it
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, typing.Hashable):
                continue  # PyYAML's own construction names an unhashable key
            if key in seen:  # a second `train:` section would silently drop the first one's keys
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (merge the two into one)", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


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
        if type(None) in args and (value is None or value is False and key in FALSE_MEANS_NONE):
            return None  # `pretrained: false` reads as "none", as people write it
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:  # `X | None`: X's own message names the item that failed, e.g. data.palette[0]
            return _coerce(inner[0], value, source, key)
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
                number = float(value)
            except ValueError:
                raise bad from None
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        else:
            number = float(value)
        if not math.isfinite(number):  # .nan or .inf: torch's own refusal is a traceback, or the run goes NaN later
            raise ConfigError(f"{source.at(key)}: {key} = {value} must be a finite number")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{bad}{yaml_typed_hint(value, source, key)}")
        return value
    if origin is tuple:
        if isinstance(value, str) and args == (int, int):
            return parse_size(value, f"{source.at(key)}: {key}")
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise bad
        return tuple(_coerce(a, v, source, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is list:
        if args == (int,) and isinstance(value, str) and _HEX_COLOUR.fullmatch(value.strip()):
            return [int(value.strip()[i:i + 2], 16) for i in (1, 3, 5)]  # a palette colour given as '#3C1098'
        if not isinstance(value, (list, tuple)):
            if args == (int,) and value is None:  # `- #3C1098` is a YAML comment, which leaves an empty item
                raise ConfigError(f"{bad} (a colour is [R, G, B] or a quoted '#RRGGBB': '#' starts a YAML comment)")
            if args == (int,) and isinstance(value, str):
                raise ConfigError(f"{bad} (a colour is [R, G, B] or '#RRGGBB' with six hex digits)")
            raise bad
        return [_coerce(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        for k, v in (value.items() if isinstance(value, dict) else [(value, None)]):
            if v is None and isinstance(k, int) and not isinstance(k, bool) and abs(k) >= 60:
                refuse_sexagesimal(k, source, key)  # {11:20}: YAML 1.1 reads 11:20 as 680 (base 60), no value
        if not isinstance(value, dict):
            raise bad
        # Integer keys written as strings ('7': 0, and JSON, which stores every key as a string) are integers.
        numeric = {k: int(k) if args[0] is int and isinstance(k, str) and re.fullmatch(r"\s*-?\d+\s*", k) else k
                   for k in value}
        if len(set(numeric.values())) < len(numeric):  # 7 and '7' both given: one would silently win
            twice = next(n for n in numeric.values() if list(numeric.values()).count(n) > 1)
            raise ConfigError(f"{source.at(key)}: {key} has the key {twice} twice (as a number and as a string); "
                              "keep one")
        return {_coerce(args[0], numeric[k], source, f"{key}[{k!r}] key"): _coerce(args[1], v, source, f"{key}[{k}]")
                for k, v in value.items()}
    return value


_HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
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
