"""What YAML 1.1 makes of unquoted words and numbers (off -> false, 11:20 -> 680), said in config errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bisenet.config_checks import AMP_MODES, ARCHS, CACHE_MODES, EVAL_MODES
from bisenet.config_overrides import Source
from bisenet.errors import ConfigError

# String settings with a fixed set of values: a quoted yes/off is no more valid there than the boolean.
CHOICES = {"train.amp": AMP_MODES, "data.cache": CACHE_MODES, "eval.mode": EVAL_MODES, "model.arch": ARCHS,
           "train.loss": ("ohem", "ce"), "train.optimizer": ("sgd", "adamw")}
YAML_BOOLS = {True: ("yes", "on", "true"), False: ("no", "off", "false")}  # YAML 1.1's words, any case


def _written(source: Source, key: str) -> str:
    """The text that set `key`: the --set item, or the YAML file ('' when neither is at hand)."""
    where = source.at(key)
    if where.startswith("--set "):
        return where[len("--set "):]
    try:
        return Path(where).read_text(encoding="utf-8") if Path(where).is_file() else ""
    except (OSError, UnicodeDecodeError, ValueError):
        return ""


def yaml_typed_hint(value: Any, source: Source, key: str) -> str:
    """For a string setting YAML read as a boolean or number: how it read the word, and what to write."""
    if isinstance(value, bool):
        leaf = re.escape(key.rsplit(".", 1)[-1])
        found = re.search(rf"\b{leaf}\s*[:=]\s*([A-Za-z]+)\b", _written(source, key))
        word = found.group(1) if found and found.group(1).lower() in YAML_BOOLS[value] else None
        said = f"YAML read `{word}` as {str(value).lower()}" if word else \
            f"YAML 1.1 reads unquoted {'/'.join(YAML_BOOLS[value])} as {str(value).lower()}"
        choices = CHOICES.get(key)
        if choices is None:  # a free string (a path, a list name): the word itself, quoted
            return f"; {said}: quote it ('{word or YAML_BOOLS[value][1]}')"
        if "none" in choices and not value:
            return f"; {said}: write none"
        return f"; {said}: write one of {', '.join(choices)}"
    if key == "train.device" and isinstance(value, int):
        return f"; a GPU index needs its device type: write \"cuda:{value}\" (quoted), cuda or cpu"
    return ""


def refuse_sexagesimal(number: int, source: Source, key: str) -> None:
    """ConfigError when `number` was written as a base-60 scalar such as 11:20 (a mapping without the space)."""
    sign, rest, digits = "-" if number < 0 else "", abs(number), []
    while rest:
        digits.insert(0, rest % 60)
        rest //= 60
    pattern = rf"(?<![\w:.]){sign}0*{digits[0]}" + "".join(rf":0?{d}" for d in digits[1:]) + r"(?![\w:])"
    found = re.search(pattern, _written(source, key))
    if found:
        text = found.group(0)
        raise ConfigError(f"{source.at(key)}: {key}: YAML 1.1 reads {text} (no space after the colon) as the base-60 "
                          f"number {number} with no value; write {{{text.replace(':', ': ', 1)}}} with a space "
                          "after the colon")
