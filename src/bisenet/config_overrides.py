"""`key.path=value` config overrides, and where each config value came from (file or command line)."""

from __future__ import annotations

import json
import shlex
from typing import Any

import yaml

from bisenet.errors import ConfigError


class Override(str):
    """A `key.path=value` override that remembers how the user wrote it, e.g. '--lr -1.0' for train.lr=-1.0."""

    label: str

    def __new__(cls, text: str, label: str) -> Override:
        obj = super().__new__(cls, text)
        obj.label = label
        return obj


class Source(str):
    """The config's name (a file path, 'config', 'defaults'); `at(key)` names the override that set the key instead."""

    labels: dict[str, str]

    def __new__(cls, name: str, labels: dict[str, str] | None = None) -> Source:
        obj = super().__new__(cls, name)
        obj.labels = dict(labels or {})
        return obj

    def at(self, *keys: str) -> str:
        """Who set the first of `keys` that an override set (e.g. '--set train.lr=abc'), else the config's name."""
        for key in keys:
            # The override that set this key or a section above it (the last one wins, as when applied) ...
            owners = [label for set_key, label in self.labels.items()
                      if key == set_key or key.startswith((f"{set_key}.", f"{set_key}["))]
            # ... else one that set a key below it (an unknown section such as --set trian.lr=1 made it).
            below = [label for set_key, label in self.labels.items() if set_key.startswith(f"{key}.")]
            if owners or below:
                return (owners or below)[-1]
        return str(self)


def parse_overrides(overrides: list[str] | str | dict[str, Any] | None) -> dict[str, tuple[Any, str]]:
    """{key: (value, how the user wrote it)} from `--set` items (YAML values), one such string, or a {key: value} dict."""
    if not overrides:
        return {}
    if isinstance(overrides, str):  # load_config(cfg, "train.lr=0.1"): one override, not its characters
        overrides = [overrides]
    if isinstance(overrides, dict):
        return {key: (value, f"override {key}={value!r}") for key, value in overrides.items()}
    if not isinstance(overrides, (list, tuple)):
        raise ConfigError(f"overrides {overrides!r}: expected a list of 'key.path=value' strings or a {{key: value}} dict")
    parsed = {}
    for item in overrides:
        if not isinstance(item, str):
            raise ConfigError(f"override {item!r}: expected a 'key.path=value' string such as 'train.lr=0.01'")
        key, sep, value = item.partition("=")
        label = getattr(item, "label", f"--set {item}")
        if not sep or not key:
            raise ConfigError(f"{label}: expected key.path=value, e.g. train.lr=0.01")
        try:
            parsed[key.strip()] = (yaml.safe_load(value) if value.strip() else None, label)
            comment = _comment(value)
        except yaml.YAMLError as exc:  # e.g. train.aux_weights=[1, 2 (an unclosed list)
            raise ConfigError(f"{label}: the value is not valid YAML ({getattr(exc, 'problem', exc)}); "
                              "quote it or fix the brackets") from None
        if comment:  # "/tmp/my data #1" read as "/tmp/my data": a wrong folder, silently
            kept = value[:len(value) - len(comment)].strip()
            read = parsed[key.strip()][0]
            if read is None or isinstance(read, str):
                quoted = shlex.quote(f"{key.strip()}={json.dumps(value.strip(), ensure_ascii=False)}")
                fix = f"to keep the '#', quote the value: --set {quoted} (or drop the comment)"
            else:  # a number or list: the '#' cannot belong to it
                fix = f"drop the comment: --set {shlex.quote(f'{key.strip()}={kept}')}"
            raise ConfigError(f"{label}: YAML reads {comment.strip()!r} as a comment and drops it (the value would be "
                              f"{repr(kept) if kept else 'empty'}); {fix}")
    return parsed


def _comment(value: str) -> str:
    """The text from the first '#' YAML reads as a comment in `value` to its end, or '' when there is none."""
    # PyYAML's scanner skips comments: a '#' outside every token's span is one.
    spans = [(token.start_mark.index, token.end_mark.index) for token in yaml.scan(value)]
    for index, char in enumerate(value):
        if char == "#" and not any(start <= index < end for start, end in spans):
            return value[index:]
    return ""


def set_path(raw: dict, dotted: str, value: Any, label: str) -> None:
    """Set raw[a][b][c] = value for 'a.b.c', creating sections; `label` names the override in errors."""
    node = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:  # absent, or a section left empty in the file (`augment:` with nothing below)
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{label}: cannot set {dotted}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value
