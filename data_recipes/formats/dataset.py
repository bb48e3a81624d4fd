"""Our data-set format: the one reader, validator and writer of a built data set's records.

A built data set is a directory (see docs/data.md)::

    manifest.json         resolved recipe, counts, hardness stats, rejects, fingerprint
    samples.jsonl         one record per positive, sorted by index (validated here)
    images/, scripts/     PNGs and their standalone matplotlib scripts
    image_negatives.json  reference format, caption vs its 1 + K images  (see formats.reference)
    text_negatives.json   reference format, image vs its 1 + K captions

Every reader of ``samples.jsonl`` (the builder, ``mmclip-train``, ``mmclip-eval``, the LLaVA data,
``import``) goes through :func:`read_samples` or :func:`read_samples_report`, so one record is accepted
or refused the same way everywhere, with the file, line and key in every message.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mmgeolm_core.io import FormatError, atomic_write_text, is_finite_number, iter_jsonl

SAMPLES_FILE = "samples.jsonl"
MANIFEST_FILE = "manifest.json"
IMAGE_NEGATIVES_FILE = "image_negatives.json"
TEXT_NEGATIVES_FILE = "text_negatives.json"
CONTACT_SHEET_FILE = "contact_sheet.png"
SPLITS = ("train", "dev", "val")
TEXT_KINDS = ("perturbation", "rule", "retrieval")
"""Kinds of caption negatives: the captions of the sample's own image negatives, rule edits, retrieved captions."""

# key -> expected type(s). Imported records (`mmgeolm-data import`) have no seed, may have no script,
# and their image negatives may have no script or caption: those keys are present but null.
_OPTIONAL_STR = (str, type(None))
_SAMPLE_KEYS: dict[str, type | tuple[type, ...]] = {
    "id": str, "index": int, "family": str, "seed": (list, type(None)), "facts": list, "image": str,
    "script": _OPTIONAL_STR, "caption": str, "split": str, "negatives": list, "text_negatives": list,
}
_NEGATIVE_KEYS: dict[str, type | tuple[type, ...]] = {
    "type": str, "image": str, "script": _OPTIONAL_STR, "caption": _OPTIONAL_STR, "facts": list,
    "removed": list, "added": list, "detail": str, "hardness": dict,
}
_TEXT_NEGATIVE_KEYS: dict[str, type | tuple[type, ...]] = {"caption": str, "kind": str, "rules": list}


def _check_keys(record: Any, expected: Mapping[str, Any], file: str, where: str, prefix: str = "") -> None:
    if not isinstance(record, dict):
        raise FormatError(file, f"expected a JSON object, got {type(record).__name__}", where=where,
                          key=prefix.rstrip(".") or None)
    for key, kind in expected.items():
        if key not in record:
            raise FormatError(file, "missing", where=where, key=f"{prefix}{key}")
        value = record[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            name = kind.__name__ if isinstance(kind, type) else " or ".join(
                "null" if k is type(None) else k.__name__ for k in kind)
            raise FormatError(file, f"expected {name}, got {value!r:.80}", where=where, key=f"{prefix}{key}")


def validate_sample(record: Any, file: str | os.PathLike, where: str, root: Path | None = None) -> None:
    """Check one samples.jsonl record; ``root`` given, also check that every file it names exists.

    Raises:
        FormatError: naming the file, the line and the offending key.
    """
    file = str(file)
    _check_keys(record, _SAMPLE_KEYS, file, where)
    if record["split"] not in SPLITS:
        raise FormatError(file, f"expected one of {list(SPLITS)}, got {record['split']!r}", where=where, key="split")
    if not record["caption"].strip():
        raise FormatError(file, "empty caption", where=where, key="caption")
    paths = [("image", record["image"]), ("script", record["script"])]
    for j, negative in enumerate(record["negatives"]):
        prefix = f"negatives[{j}]."
        _check_keys(negative, _NEGATIVE_KEYS, file, where, prefix)
        for key in ("changed_fraction", "ssim"):
            if not is_finite_number(negative["hardness"].get(key)):
                raise FormatError(file, "expected a finite number", where=where, key=f"{prefix}hardness.{key}")
        paths += [(f"{prefix}image", negative["image"]), (f"{prefix}script", negative["script"])]
    for j, negative in enumerate(record["text_negatives"]):
        prefix = f"text_negatives[{j}]."
        _check_keys(negative, _TEXT_NEGATIVE_KEYS, file, where, prefix)
        if negative["kind"] not in TEXT_KINDS:
            raise FormatError(file, f"expected one of {list(TEXT_KINDS)}, got {negative['kind']!r}", where=where,
                              key=f"{prefix}kind")
        if not negative["caption"].strip():
            raise FormatError(file, "empty caption", where=where, key=f"{prefix}caption")
    for key, rel in paths:
        if rel is None:
            continue
        if not rel or os.path.isabs(rel) or ".." in Path(rel).parts:
            raise FormatError(file, f"expected a path relative to the data set, got {rel!r}", where=where, key=key)
        if root is not None and not (root / rel).is_file():
            raise FormatError(file, f"file {root / rel} does not exist", where=where, key=key)


def write_samples(root: str | Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``root/samples.jsonl`` atomically, one compact JSON object per line, in the given order."""
    path = Path(root) / SAMPLES_FILE
    lines = [json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records]
    return atomic_write_text(path, "".join(lines))


def read_samples(root: str | Path, *, check_files: bool = False) -> list[dict[str, Any]]:
    """Read and validate every record of ``root/samples.jsonl``.

    Args:
        root: the data-set directory.
        check_files: also check that every image and script named by a record exists.

    Raises:
        FormatError: on the first bad record, naming the file, the line number and the key.
    """
    records, problems = read_samples_report(root, check_files=check_files)
    if problems:
        raise problems[0]
    return records


def read_samples_report(root: str | Path, *, check_files: bool = False) -> tuple[list[dict[str, Any]], list[FormatError]]:
    """The valid records of ``root/samples.jsonl`` and one error per bad line (skip and report).

    Raises:
        FormatError: ``root`` holds no samples.jsonl, or the file is not UTF-8.
    """
    root = Path(root)
    path = root / SAMPLES_FILE
    if not path.is_file():
        raise FormatError(path, f"no such file (is {root} a data set built by `mmgeolm-data build`?)")
    records, problems, seen = [], [], set()
    for lineno, record in iter_jsonl(path, return_errors=True):
        where = f"line {lineno}"
        try:
            if isinstance(record, FormatError):
                raise record
            validate_sample(record, path, where, root if check_files else None)
            if record["id"] in seen:
                raise FormatError(path, f"duplicate id {record['id']!r}", where=where, key="id")
        except FormatError as err:
            problems.append(err)
            continue
        seen.add(record["id"])
        records.append(record)
    return records, problems


def validate_samples(root: str | Path, *, check_files: bool = True) -> list[str]:
    """Every problem of ``root/samples.jsonl`` (one message per bad line), empty when it is valid."""
    try:
        return [str(p) for p in read_samples_report(root, check_files=check_files)[1]]
    except FormatError as err:
        return [str(err)]


__all__ = [
    "CONTACT_SHEET_FILE",
    "IMAGE_NEGATIVES_FILE",
    "MANIFEST_FILE",
    "SAMPLES_FILE",
    "SPLITS",
    "TEXT_KINDS",
    "TEXT_NEGATIVES_FILE",
    "read_samples",
    "read_samples_report",
    "validate_sample",
    "validate_samples",
    "write_samples",
]
