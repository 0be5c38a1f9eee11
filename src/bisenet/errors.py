"""User-facing errors: one line that names the culprit and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BisenetError(Exception):
    """An error caused by user input (a file, a config key, a flag).

    The CLI prints its message as a single line and exits with status 2; no traceback.
    """


class ConfigError(BisenetError):
    """A bad configuration key or value."""


class DataError(BisenetError):
    """A problem with data files or list files."""


class CheckpointError(BisenetError):
    """A weights file that cannot be read or does not match the model."""


def nearest(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest valid name, or '' if none is close."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""
