"""User-facing errors: one line that names the culprit and the fix."""

from __future__ import annotations

import contextlib
import difflib
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path


class BisenetError(Exception):
    """An error caused by user input (a file, a config key, a flag).

    The CLI prints its message as a single line and exits with status 2; no traceback.
    """


class ConfigError(BisenetError, ValueError):
    """A bad configuration key or value (also a ValueError, as Python code that catches bad values expects)."""


class DataError(BisenetError):
    """A problem with data files or list files."""


class CheckpointError(BisenetError):
    """A weights file that cannot be read or does not match the model."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt so the same cleanups run (`finally`, temp files)."""


def nearest(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest valid name, or '' if none is close."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def make_dir(path: str | os.PathLike, what: str) -> Path:
    """Create folder `path` (and its parents), or raise a one-line error naming `what` it is for."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, no permission, read-only disk
        raise BisenetError(f"{what}: cannot create folder {folder} ({exc.strerror or exc}); choose another path") from None
    return folder


def check_output_file(path: str | os.PathLike, what: str, example: str) -> Path:
    """Refuse an output file path that is an existing folder, naming a file inside it as the fix."""
    path = Path(path)
    if path.is_dir():
        raise BisenetError(f"{what} {path} is a folder; pass a file path such as {path / example}")
    return path


def write_text_atomic(path: str | os.PathLike, text: str, what: str, example: str) -> None:
    """Write `text` via a temporary file beside `path` and a rename: never a half-written or stray file."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), what, example)


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object], what: str, example: str) -> Path:
    """Let `write(tmp)` fill a temporary file beside `path`, then rename it into place (e.g. a figure's PNG)."""
    path = check_output_file(path, what, example)
    make_dir(path.parent, f"{what} {path}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: concurrent writers do not collide
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:  # e.g. a folder created at `path` meanwhile, a full or read-only disk
        raise BisenetError(f"{what} {path}: cannot write ({exc.strerror or exc}); choose another path") from None
    finally:
        remove_quietly(tmp)
    return path


def remove_quietly(path: str | os.PathLike) -> None:
    """Remove a temporary file if it is there; a failure (read-only disk, a folder of that name) must not hide the real error."""
    with contextlib.suppress(OSError):
        Path(path).unlink(missing_ok=True)


def check_writable(path: str | os.PathLike, what: str, example: str, create: bool = False) -> Path:
    """Refuse, before any slow work, an output file that cannot be created: try a temporary file beside it.

    Without `create`, a missing folder is not made (a command refused later must leave nothing behind):
    the probe goes into its nearest existing parent, which the real write's folders would be made in.
    """
    path = check_output_file(path, what, example)
    if create:
        folder = make_dir(path.parent, f"{what} {path}")
    else:
        folder = Path(os.path.abspath(path.parent))
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise BisenetError(f"{what} {path}: cannot create its folder: {folder} is a file; choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
    except OSError as exc:  # read-only disk, no permission, a folder that takes no files (/proc)
        raise BisenetError(f"{what} {path}: cannot write in {folder} ({exc.strerror or exc}); "
                           "check the folder or choose another path") from None
    os.close(fd)
    remove_quietly(probe)
    return path


# (what it is, path) pairs that an output must not overwrite: ("label", Path(...)), ...
Inputs = Iterable[tuple[str, "str | os.PathLike | None"]]


def check_paths(**paths: object) -> None:
    """One-line errors for path arguments (None allowed) of another kind: Path(5) raises a bare TypeError."""
    for name, value in paths.items():
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise BisenetError(f"{name}={value!r}: expected a path (a str or pathlib.Path) or None")


def check_replaceable(path: str | os.PathLike, what: str, kind: str, is_earlier: Callable[[object], bool],
                      suffix: str) -> None:
    """A one-line error when `path` holds a file other than an earlier `kind` (what `is_earlier` accepts of its JSON);
    the fix names STEM`suffix` beside it.

    A config, log, list or weights file that happens to be named there would be lost for good.
    """
    import json

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:  # absent (or unreadable: writing says why)
        return
    earlier = False
    if size <= 64 << 20:  # reports are kilobytes; weights are not
        try:
            earlier = size == 0 or is_earlier(json.loads(path.read_bytes()))
        except (OSError, ValueError):
            earlier = False
    if not earlier:
        raise BisenetError(f"{what} {path}: that file exists and is not {kind} (writing would lose it); "
                           f"pass a new file, e.g. {what} {path.with_name(path.stem + suffix)}")


def first_clash(outputs: Sequence[Path], inputs: Inputs) -> tuple[Path, str, Path] | None:
    """The first (output, kind, input) where writing `output` would replace that input file; None when none would."""
    known: dict[str, tuple[str, Path]] = {}
    for kind, path in inputs:
        if path is not None:
            path = Path(path).expanduser()
            known.setdefault(os.path.abspath(path), (kind, path))
    for output in outputs:
        hit = known.get(os.path.abspath(Path(output).expanduser()))
        if hit is not None:
            return output, *hit
    # Another spelling of an existing file (a link, ../, a case-insensitive disk): compare the files themselves.
    existing = [(output, os.stat(output)) for output in outputs if os.path.isfile(output)]
    if not existing:
        return None
    files: dict[tuple[int, int], tuple[str, Path]] = {}
    for key, hit in known.items():
        try:
            stat = os.stat(key)
        except OSError:
            continue
        files.setdefault((stat.st_dev, stat.st_ino), hit)
    for output, stat in existing:
        hit = files.get((stat.st_dev, stat.st_ino))
        if hit is not None:
            return output, *hit
    return None
