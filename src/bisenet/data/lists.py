"""List files: one `image,label` pair per line, paths relative to a data root."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bisenet.errors import DataError, write_text_atomic

LISTS_FIX = "regenerate it with `bisenet data lists` or fix the paths"


@dataclass(frozen=True)
class ListEntry:
    """One line of a list file, resolved against the data root."""

    line: int  # 1-based line number in the list file
    image: Path
    label: Path


@dataclass
class PairList:
    """A parsed list file: its entries plus one-line messages for malformed lines."""

    path: Path
    root: Path
    entries: list[ListEntry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth a line but no problem, e.g. which of two lists was read

    def where(self, line: int) -> str:
        """'LIST line N' prefix used by every message about this list."""
        return f"{self.path} line {line}"


def plural(count: int, noun: str) -> str:
    """The count with its noun in the right number: '1 pair', '3 pairs'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def list_candidates(list_file: str | Path, root: Path) -> list[Path]:
    """Where a list file may be, in lookup order: absolute as is, else under the data root, then the cwd."""
    path = Path(list_file).expanduser()
    if path.is_absolute():
        return [path]
    return [root / path, path]


def resolve_list_path(list_file: str | Path, root: Path) -> Path:
    """Find a list file: absolute as is, else relative to the data root, then to the cwd."""
    candidates = list_candidates(list_file, root)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[0]  # not found: report the path we looked at first


def written_from_cwd(list_file: str | os.PathLike) -> bool:
    """True for a path written absolute or from the current directory (./val.txt, ../x/val.txt, ~/val.txt)."""
    text = os.fspath(list_file)
    path = Path(text).expanduser()
    prefixes = tuple(f"{dots}{sep}" for dots in (".", "..") for sep in {"/", os.sep})
    # Path("./val.txt") forgets its "./", so the text is read too; ".." survives in a Path's parts.
    return path.is_absolute() or text in (".", "..") or text.startswith(prefixes) or path.parts[:1] == ("..",)


def given_list_candidates(list_file: str | os.PathLike, root: Path) -> list[Path]:
    """A flag's list: a path written from the cwd is that file alone; a bare name is tried under the root, then the cwd."""
    if written_from_cwd(list_file):
        return [Path(list_file).expanduser()]
    return list_candidates(list_file, root)


def given_list_path(list_file: str | os.PathLike, root: str | Path) -> Path:
    """The file a flag's list names (the first candidate when none exists), absolute when written from the cwd."""
    candidates = given_list_candidates(list_file, Path(root))
    found = next((c for c in candidates if c.is_file()), candidates[0])
    # Absolute, so that a lookup that tries the root first (resolve_list_path) cannot read another file.
    return Path(os.path.abspath(found)) if written_from_cwd(list_file) else found


def list_note(list_file: str | os.PathLike, root: str | Path, flag: str = "--list") -> str | None:
    """A note when a bare list name finds a file both under the data root and in the cwd: which one is read."""
    if written_from_cwd(list_file):
        return None
    under_root, in_cwd = list_candidates(list_file, Path(root))
    if not (under_root.is_file() and in_cwd.is_file()) or os.path.samefile(under_root, in_cwd):
        return None
    return (f"note: {flag} {list_file} names both {under_root} and {in_cwd} in the current directory: "
            f"reading {under_root}, the one under the data root (pass ./NAME or an absolute path for the other)")


def read_given_list(list_file: str | Path, root: str | Path, flag: str = "--list") -> PairList:
    """read_list on a list named by a command-line flag (see given_list_candidates); a miss names every place looked."""
    root = Path(root)
    # Root first for a bare name, as for a config's lists: the list's paths are relative to the root, so a
    # same-named list in the cwd is more likely another dataset's than this one's.
    candidates = given_list_candidates(list_file, root)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None and root.is_dir() and not any(c.exists() for c in candidates):
        looked = " and ".join(os.path.abspath(c) for c in dict.fromkeys(candidates))
        raise DataError(f"list file {list_file} not found (looked for {looked}); check the {flag} path "
                        "or create the list with `bisenet data lists`")
    pairs = read_list(found or candidates[0], root)
    note = list_note(list_file, root, flag)
    if note is not None:
        pairs.notes.append(note)
    return pairs


def parse_line(text: str) -> tuple[str, str] | None:
    """Split 'image,label' (or 'image label'); None when the line is not a pair."""
    if "," in text:
        parts = [p.strip() for p in text.split(",")]
    else:
        parts = text.split()
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1]


HEADER_WORDS = {"image", "images", "img", "label", "labels", "mask", "masks", "gt", "annotation", "annotations",
                "image_path", "label_path", "mask_path", "path", "filename"}


def read_list(list_file: str | Path, root: str | Path) -> PairList:
    """Parse a list file; raise DataError only when the file itself cannot be read."""
    list_path, root = Path(list_file), Path(root)
    if not root.is_dir():
        where = "" if root.is_absolute() else f" (relative to the current directory {os.getcwd()})"
        raise DataError(f"data root {root} is not a directory{where}; set data.root (or --data-root) to the "
                        "dataset folder")
    try:
        text = list_path.read_text(encoding="utf-8-sig")  # -sig: tolerate a BOM from Windows editors
    except FileNotFoundError:
        raise DataError(
            f"list file {list_path} not found (looked for {os.path.abspath(list_path)}); create it with "
            "`bisenet data lists` or point data.train_list/val_list at an existing file (training without "
            "validation: --eval-interval 0)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"list file {list_path} cannot be read ({exc}); it must be UTF-8 text") from None
    result = PairList(path=list_path, root=root)
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pair = parse_line(line)
        if pair is None:
            result.problems.append(
                f"{result.where(number)}: malformed line {line[:80]!r}; expected 'image,label' (two paths, comma separated)"
            )
            continue
        image, label = (_posix(root, part) for part in pair)
        result.entries.append(ListEntry(number, image, label))
    if not result.entries and not result.problems:
        result.problems.append(f"{list_path}: list is empty; add 'image,label' lines or {LISTS_FIX}")
    return result


def _posix(root: Path, part: str) -> Path:
    """root / part, reading Windows separators (img\\a.png) as '/' unless a file has that literal name."""
    path = root / part
    if "\\" in part and os.sep == "/" and not path.exists():
        return root / part.replace("\\", "/")
    return path


def missing_files(pairs: PairList) -> list[str]:
    """One message per list line whose image or label does not exist; one line first when another root holds them."""
    hint, explained = root_hint(pairs, "data.root", "set data.root (or --data-root) to {}")
    problems = [hint] if hint else []
    for entry in pairs.entries:
        if entry.line in explained:  # the hint says where they are: no line each
            continue
        for what, path in (("image", entry.image), ("label", entry.label)):
            if not path.is_file():
                problems.append(f"{pairs.where(entry.line)}: {what} {path} not found; {not_found_fix(entry, path)} "
                                f"(data root {pairs.root})")
    return problems


WRONG_ROOT_SHARE = 0.5  # lines missing a file, of all lines, from which another root is looked for


def _missing(entry: ListEntry) -> bool:
    return not (entry.image.is_file() and entry.label.is_file())


def _moved(entry: ListEntry, root: Path, other: Path) -> bool:
    """True when both files of `entry` exist with their list paths taken from `other` instead of `root`."""
    try:
        return all((other / path.relative_to(root)).is_file() for path in (entry.image, entry.label))
    except ValueError:  # an absolute path in the list: another root changes nothing
        return False


def root_hint(pairs: PairList, name: str = "--root", fix: str = "pass --root {}") -> tuple[str, set[int]]:
    """One line when most list lines miss a file under the root but find both under another folder, and those lines.

    The usual cause: a list written relative to its own folder (`data lists pairs SUB ...`) checked from a
    higher root. Candidates: the list's folder, the root's parent, the current directory. ('', set()) when none fits.
    """
    missing = [entry for entry in pairs.entries if _missing(entry)]
    if not missing or len(missing) < WRONG_ROOT_SHARE * len(pairs.entries):
        return "", set()
    root = pairs.root
    candidates = ((pairs.path.parent, "the list's folder"), (root / "..", "the root's parent"),
                  (Path("."), "the current directory"))
    for folder, what in candidates:
        if os.path.abspath(folder) == os.path.abspath(root):
            continue
        moved = {entry.line for entry in missing if _moved(entry, root, folder)}
        if len(moved) < 0.9 * len(missing):  # a few strays may be truly missing; they keep their own lines
            continue
        shown = Path(os.path.normpath(folder))
        total = plural(len(pairs.entries), "pair")
        lacking = (f"none of the files of its {total} are" if len(missing) == len(pairs.entries)
                   else f"{len(missing)} of its {total} have files that are not")
        where = "they are all" if len(moved) == len(missing) else f"{len(moved)} of them are"
        first = next(path for path in (missing[0].image, missing[0].label) if not path.is_file())
        return (f"{pairs.path}: {lacking} under {name} {root} "
                f"(line {missing[0].line}: {first} not found); {where} under {shown} ({what}): "
                + fix.format(shown), moved)
    return "", set()


def not_list_reason(data: bytes) -> str:
    """Why these bytes are not a list file ('' when they are one, or empty): binary, or text whose lines are no pairs.

    Judged by most lines, not each: a list with a header, quotes or a stray bad line is a list to regenerate.
    """
    utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff")  # PowerShell's `>` writes UTF-16
    if b"\0" in data and not utf16:
        return "binary content"
    try:
        text = data.decode("utf-16" if utf16 else "utf-8-sig")
    except UnicodeDecodeError:
        return "binary content"
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    # Image paths have an extension; a YAML 'key: value' or prose splits into words without one.
    bad = [line for line in lines if (pair := parse_line(line)) is None or not all(Path(p).suffix for p in pair)]
    if len(bad) * 2 > len(lines):
        return f"most lines are not 'image,label' pairs, e.g. {bad[0][:40]!r}"
    return ""


def check_list_output(path: Path, flag: str, fix: str, pairs: Iterable[tuple[Path, Path]] = ()) -> None:
    """A one-line DataError when writing a list at `path` would replace a file it lists, or a file that is no list."""
    from bisenet.errors import first_clash

    clash = first_clash([path], [(kind, file) for pair in pairs for kind, file in zip(("image", "label"), pair)])
    if clash is not None:
        _, kind, source = clash
        raise DataError(f"{flag} {path} is the {kind} {source} of this list: writing the list there would destroy it; "
                        f"{fix}")
    try:
        data = path.read_bytes()
    except OSError:  # absent (a folder or an unreadable file: the write says so)
        return
    reason = not_list_reason(data)
    if reason:
        raise DataError(f"{flag} {path} is an existing file but not a list file ({reason}): writing the list would "
                        f"replace it; {fix}, or delete that file first")


def not_found_fix(entry: ListEntry, path: Path) -> str:
    """The likely fix for a missing file: a CSV header line and quoted paths are written by spreadsheets."""
    if path.name[-1:] in "\"'" or any(part[:1] in "\"'" for part in path.parts):
        return "remove the quotes around the paths (list lines are plain 'image,label')"
    if entry.line == 1 and {entry.image.name.lower(), entry.label.name.lower()} <= HEADER_WORDS:
        return "that looks like a header line: delete it (list files have no header)"
    return LISTS_FIX


def format_list(pairs: list[tuple[Path, Path]], root: Path) -> str:
    """The `image,label` lines relative to `root`; DataError for a path a list line cannot hold."""
    lines = []
    for image, label in pairs:
        paths = (_relative(image, root), _relative(label, root))
        for file, text in zip((image, label), paths):
            if "," in text or "\n" in text or "\r" in text:  # the separator; a line break would split the line
                raise DataError(f"{str(file)!r}: list files cannot hold commas or line breaks in paths; "
                                "rename that file (and its partner) and run `bisenet data lists` again")
        lines.append(f"{paths[0]},{paths[1]}\n")
    return "".join(lines)


def existing_lines(path: Path) -> int | None:
    """Lines in the file a list is about to replace, None when there is none (a replaced list is worth a line)."""
    try:
        return len(path.read_bytes().splitlines())
    except OSError:  # absent (or unreadable: writing will say so)
        return None


def write_list(path: Path, pairs: list[tuple[Path, Path]], root: Path) -> int:
    """Write `image,label` lines relative to `root` (atomically); return the count."""
    write_text_atomic(path, format_list(pairs, root), "list file", "train.txt")
    return len(pairs)


def _relative(path: Path, root: Path) -> str:
    """`path` relative to `root`; a symlink keeps its own name (resolved only when that is needed to relate them)."""
    absolute = Path(os.path.abspath(path))
    for candidate, base in ((absolute, Path(os.path.abspath(root))), (path.resolve(), root.resolve())):
        try:
            return candidate.relative_to(base).as_posix()
        except ValueError:
            pass
    return absolute.as_posix()  # outside the root: keep it absolute so the list still works
