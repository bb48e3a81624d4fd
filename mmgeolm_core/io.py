"""Files: atomic writes, and JSON / JSON-lines readers whose every error names the file and line.

Every write goes to a temporary file in the target's directory and is renamed into place, so a reader
never sees a half-written file and an interrupted job leaves the old file intact. Commands check their
output paths before any work (:func:`check_output_file`, :func:`check_output_dir`,
:func:`check_replaceable_dir`), so a bad ``--out`` fails in a second, not after an hour, and a folder
that holds someone else's files is never replaced.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mmgeolm_core.errors import InputError

TMP_SUFFIX = ".tmp"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class FormatError(InputError):
    """A file breaks its format.

    Args:
        file: the file.
        reason: what is wrong and what was expected.
        where: the place inside the file: ``line 3``, ``record 2``, ``record 2 (id sq-7)``.
        key: the offending key (dotted or indexed: ``negatives[2].image``).
    """

    def __init__(self, file: str | os.PathLike, reason: str, *, where: str | None = None, key: str | None = None):
        self.file, self.reason, self.where, self.key = str(file), reason, where, key
        parts = [self.file] + ([where] if where else []) + ([f"key '{key}'"] if key else [])
        super().__init__(f"{': '.join(parts)}: {reason}")


# --------------------------------------------------------------------------- writing


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same directory and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomic UTF-8 text write (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def dumps_json(data: Any) -> str:
    """Our canonical JSON text: 1-space indent, keys in insertion order, UTF-8, trailing newline."""
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """Atomic canonical JSON write."""
    return atomic_write_text(path, dumps_json(data))


def atomic_write_with(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` fills a temporary sibling of ``path`` (same suffix, so e.g. ``savefig`` picks the
    format), which is then renamed into place: ``atomic_write_with(png, lambda tmp: fig.savefig(tmp))``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{TMP_SUFFIX}{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def append_jsonl(path: str | os.PathLike, record: Any) -> None:
    """Append one compact JSON line and flush it to disk (logs and resumable outputs grow line by line)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory to fill; on success it replaces ``path`` in one rename.

    An existing ``path`` is moved aside first and deleted only after the new one is in place, so a
    crash leaves either the old or the new directory (plus a ``.old`` sibling), never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- output paths, checked first


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _check_creatable(path: Path, option: str, start: Path) -> None:
    """``path`` can be created: the nearest existing one of ``start`` and its ancestors is a directory we can
    write in."""
    ancestor = _nearest_existing(start)
    if not ancestor.is_dir():
        raise InputError(f"{option} {path}: {ancestor} is a file, not a directory")
    try:  # os.access is not enough: root passes it everywhere, and read-only mounts are not modes
        fd, probe = tempfile.mkstemp(prefix=".write-check.", suffix=TMP_SUFFIX, dir=ancestor)
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot write in {ancestor}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """Check, before any work, that a file can be written at ``path`` (nothing is created).

    Raises:
        InputError: ``path`` is a directory, a part of it is a file, or its directory is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path}: is a directory; expected a file name")
    _check_creatable(path, option, path.parent)
    return path


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Check, before any work, that ``path`` is a directory we can write in or can create (nothing is created).

    Raises:
        InputError: ``path`` is a file, a part of it is a file, or it cannot be written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path}: is a file; expected a directory")
    _check_creatable(path, option, path)
    return path


def check_replaceable_dir(path: str | os.PathLike, *, option: str, what: str, is_ours: Callable[[Path], bool],
                          overwrite: bool | None) -> Path:
    """Check an output directory that the command replaces whole: only ever an empty one or its own earlier output.

    Args:
        path: the directory.
        option: the command-line option naming it (for the message).
        what: what the command writes there (``an mmclip-export output``).
        is_ours: whether an existing directory holds such an output.
        overwrite: False: refuse to replace even our own output (the user passes ``--overwrite``); None:
            the command always replaces its own output.

    Raises:
        InputError: ``path`` is a file, holds other files, holds our output and ``overwrite`` is False,
            or cannot be written.
    """
    path = check_output_dir(path, option)
    if path.is_dir() and any(path.iterdir()):
        if not is_ours(path):
            raise InputError(f"{option} {path}: holds files that are not {what}; it is never replaced: "
                             f"choose a new or empty directory")
        if overwrite is False:
            raise InputError(f"{option} {path}: exists and holds {what}; pass --overwrite to replace it")
    return path


_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def check_model_path(value: str | os.PathLike, option: str = "--model-path") -> None:
    """A local model directory or a Hugging Face hub id (``org/name``), checked before anything is loaded
    (transformers would otherwise try the hub with a local path and print a page of tracebacks).

    Raises:
        InputError: a missing local path (one that cannot be a hub id), or a file.
    """
    text = os.fspath(value)
    path = Path(text)
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{option} {text}: is a file; expected a model directory")
    elif not _HUB_ID.fullmatch(text):
        raise InputError(f"{option} {text}: no such directory (expected a model directory or a Hugging Face hub "
                         f"id org/name)")


# --------------------------------------------------------------------------- reading


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file; bytes that are not UTF-8 raise :class:`FormatError` naming the line."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise FormatError(path, f"not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start})",
                          where=f"line {line}") from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid JSON number")


def _loads(text: str) -> Any:
    # JSON has no NaN or Infinity; Python's json accepts them, we do not.
    return json.loads(text, parse_constant=_reject_constant)


def read_json(path: str | os.PathLike) -> Any:
    """One JSON document.

    Raises:
        FormatError: not UTF-8, or not valid JSON (naming the line where parsing stopped).
    """
    path = Path(path)
    text = read_text(path)
    if not text.strip():
        raise FormatError(path, "empty file (expected a JSON document)")
    try:
        return _loads(text)
    except json.JSONDecodeError as err:
        raise FormatError(path, f"not valid JSON: {err.msg}", where=f"line {err.lineno}") from None
    except ValueError as err:
        raise FormatError(path, f"not valid JSON: {err}") from None


def iter_jsonl(path: str | os.PathLike, *, return_errors: bool = False) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line of a JSON-lines file.

    Args:
        path: the file.
        return_errors: yield a line that is not JSON as ``(line number, FormatError)`` and go on, instead of
            raising (for batch readers that skip and report bad records).

    Raises:
        FormatError: the file is not UTF-8; a line that is not one JSON value, unless ``return_errors``.
    """
    path = Path(path)
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, _loads(line)
        except (json.JSONDecodeError, ValueError) as err:
            reason = err.msg if isinstance(err, json.JSONDecodeError) else str(err)
            error = FormatError(path, f"not valid JSON: {reason}", where=f"line {lineno}")
            if not return_errors:
                raise error from None
            yield lineno, error


def read_records(path: str | os.PathLike) -> list[tuple[str, Any]]:
    """Records of a JSON list, a single JSON object, or JSON lines, each with where it is (``record i`` / ``line n``).

    Raises:
        FormatError: empty, not UTF-8, or neither a JSON document nor JSON lines.
    """
    path = Path(path)
    text = read_text(path)
    if not text.strip():
        raise FormatError(path, "empty file (expected a JSON list of records or JSON lines)")
    try:
        data = _loads(text)
    except (json.JSONDecodeError, ValueError):
        return [(f"line {n}", value) for n, value in iter_jsonl(path)]
    if isinstance(data, dict):  # one object: a JSON-lines file of one line, or one pretty-printed record
        return [("line 1" if "\n" not in text.strip() else "record 0", data)]
    if not isinstance(data, list):
        raise FormatError(path, f"expected a JSON list of records, got {type(data).__name__}")
    return [(f"record {i}", value) for i, value in enumerate(data)]


def unique_name(raw: str, used: set[str], default: str = "item") -> str:
    """A file-name-safe version of ``raw`` (ASCII letters, digits, ``._-``) not yet in ``used``; added to it.

    ``"a b"`` -> ``"a_b"``; a second ``"a b"`` -> ``"a_b_2"``; nothing usable -> ``default``.
    """
    base = _UNSAFE_NAME.sub("_", raw).strip("._") or default
    name, n = base, 1
    while name in used:
        n += 1
        name = f"{base}_{n}"
    used.add(name)
    return name


def is_finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
