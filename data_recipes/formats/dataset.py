"""Reading and writing our data-set format and the reference's two training JSON files.

A built data set is a directory (see docs/data.md)::

    manifest.json         resolved recipe, counts, hardness stats, rejects, fingerprint
    samples.jsonl         one record per positive, sorted by index (validated by read_samples)
    images/, scripts/     PNGs and their standalone matplotlib scripts
    image_negatives.json  reference format, caption vs its 1 + K images
    text_negatives.json   reference format, image vs its 1 + K captions

Every write goes to a temporary file in the same directory and is renamed into place, so a reader
never sees a half-written file.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

SAMPLES_FILE = "samples.jsonl"
MANIFEST_FILE = "manifest.json"
IMAGE_NEGATIVES_FILE = "image_negatives.json"
TEXT_NEGATIVES_FILE = "text_negatives.json"
CONTACT_SHEET_FILE = "contact_sheet.png"
PROMPT = "<image>\nDescribe the geometric figure."
TMP_SUFFIX = ".tmp"


class DatasetFormatError(ValueError):
    """A data-set file breaks the format; the message names the file, line (or record) and key."""


# --------------------------------------------------------------------------- atomic writes


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; data sets are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomic UTF-8 text write (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def dumps_json(data: Any) -> str:
    """Our canonical JSON text: 1-space indent, keys in insertion order, UTF-8, trailing newline."""
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Atomic canonical JSON write."""
    atomic_write_text(path, dumps_json(data))


def read_json(path: str | Path) -> Any:
    """Read a JSON file, raising :class:`DatasetFormatError` naming the file on a parse error."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetFormatError(f"{path}: line {err.lineno}: not valid JSON: {err.msg}") from err


# --------------------------------------------------------------------------- samples.jsonl

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
SPLITS = ("train", "dev", "val")


def _check_keys(record: Any, expected: Mapping[str, Any], where: str) -> None:
    if not isinstance(record, dict):
        raise DatasetFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key, kind in expected.items():
        if key not in record:
            raise DatasetFormatError(f"{where}: missing key '{key}'")
        value = record[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            name = kind.__name__ if isinstance(kind, type) else " or ".join(
                "null" if k is type(None) else k.__name__ for k in kind)
            raise DatasetFormatError(f"{where}: key '{key}': expected {name}, got {value!r:.80}")


def validate_sample(record: Any, where: str, root: Path | None = None) -> None:
    """Check one samples.jsonl record; ``root`` given, also check that its files exist.

    Raises:
        DatasetFormatError: naming ``where`` (file and line) and the offending key.
    """
    _check_keys(record, _SAMPLE_KEYS, where)
    if record["split"] not in SPLITS:
        raise DatasetFormatError(f"{where}: key 'split': expected one of {list(SPLITS)}, got {record['split']!r}")
    paths = [("image", record["image"]), ("script", record["script"])]
    for j, negative in enumerate(record["negatives"]):
        _check_keys(negative, _NEGATIVE_KEYS, f"{where}: negatives[{j}]")
        for key in ("changed_fraction", "ssim"):
            if not isinstance(negative["hardness"].get(key), (int, float)):
                raise DatasetFormatError(f"{where}: negatives[{j}]: key 'hardness.{key}': expected a number")
        paths += [(f"negatives[{j}].image", negative["image"]), (f"negatives[{j}].script", negative["script"])]
    for j, negative in enumerate(record["text_negatives"]):
        _check_keys(negative, _TEXT_NEGATIVE_KEYS, f"{where}: text_negatives[{j}]")
    for key, rel in paths:
        if rel is None:
            continue
        if os.path.isabs(rel) or ".." in Path(rel).parts:
            raise DatasetFormatError(f"{where}: key '{key}': expected a path relative to the data set, got {rel!r}")
        if root is not None and not (root / rel).is_file():
            raise DatasetFormatError(f"{where}: key '{key}': file {root / rel} does not exist")


def write_samples(root: str | Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``root/samples.jsonl`` atomically, one compact JSON object per line, in the given order."""
    path = Path(root) / SAMPLES_FILE
    lines = [json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records]
    atomic_write_text(path, "".join(lines))
    return path


def read_samples(root: str | Path, *, check_files: bool = False) -> list[dict[str, Any]]:
    """Read and validate every record of ``root/samples.jsonl``.

    Args:
        root: the data-set directory.
        check_files: also check that every image and script named by a record exists.

    Raises:
        DatasetFormatError: on the first bad record, naming the file, the line number and the key.
    """
    records, problems = _read_samples(Path(root), check_files, stop_at_first=True)
    if problems:
        raise DatasetFormatError(problems[0])
    return records


def validate_samples(root: str | Path, *, check_files: bool = True) -> list[str]:
    """Every problem of ``root/samples.jsonl`` (one message per bad line), empty when it is valid."""
    return _read_samples(Path(root), check_files, stop_at_first=False)[1]


def _read_samples(root: Path, check_files: bool, stop_at_first: bool) -> tuple[list[dict[str, Any]], list[str]]:
    path = root / SAMPLES_FILE
    if not path.is_file():
        return [], [f"{path}: no such file (is {root} a data set built by `mmgeolm-data build`?)"]
    records, problems, seen = [], [], set()
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            where = f"{path}: line {lineno}"
            try:
                if not line.strip():
                    raise DatasetFormatError(f"{where}: empty line")
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DatasetFormatError(f"{where}: not valid JSON: {err.msg}") from err
                validate_sample(record, where, root if check_files else None)
                if record["id"] in seen:
                    raise DatasetFormatError(f"{where}: key 'id': duplicate id {record['id']!r}")
                seen.add(record["id"])
                records.append(record)
            except DatasetFormatError as err:
                problems.append(str(err))
                if stop_at_first:
                    break
    return records, problems


# --------------------------------------------------------------------------- reference JSON files


def _conversations(caption: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": PROMPT}, {"from": "gpt", "value": caption}]


def _path_for(root: Path, rel: str, json_dir: Path, relative: bool) -> str:
    """``rel`` (a path inside ``root``) as the JSON file writes it; ``root`` and ``json_dir`` resolved already."""
    target = os.path.normpath(root / rel)
    return os.path.relpath(target, json_dir) if relative else target


def reference_image_negatives(
    samples: Sequence[Mapping[str, Any]], root: str | Path, json_dir: str | Path, *, relative: bool = False
) -> list[dict[str, Any]]:
    """Entries of ``image_negatives.json`` for samples with at least one image negative.

    Args:
        samples: samples.jsonl records.
        root: the data-set directory the records' paths are relative to.
        json_dir: the directory the JSON file will be written to.
        relative: paths relative to ``json_dir`` instead of absolute paths.
    """
    root, json_dir = Path(root).resolve(), Path(json_dir).resolve()
    return [
        {
            "positive_image_path": _path_for(root, s["image"], json_dir, relative),
            "negative_image_path": [_path_for(root, n["image"], json_dir, relative) for n in s["negatives"]],
            "conversations": _conversations(s["caption"]),
        }
        for s in samples
        if s["negatives"]
    ]


def reference_text_negatives(
    samples: Sequence[Mapping[str, Any]], root: str | Path, json_dir: str | Path, *, relative: bool = False
) -> list[dict[str, Any]]:
    """Entries of ``text_negatives.json`` (all caption negatives, every kind) for samples that have any."""
    root, json_dir = Path(root).resolve(), Path(json_dir).resolve()
    return [
        {
            "positive_image_path": _path_for(root, s["image"], json_dir, relative),
            "negative_captions": [t["caption"] for t in s["text_negatives"]],
            "conversations": _conversations(s["caption"]),
        }
        for s in samples
        if s["text_negatives"]
    ]


def write_reference_json(path: str | Path, entries: Sequence[Mapping[str, Any]]) -> Path:
    """Write a reference-format JSON list atomically (valid JSON, unlike the reference README)."""
    path = Path(path)
    atomic_write_json(path, list(entries))
    return path


def _normalise_conversations(value: Any, where: str) -> list[dict[str, str]]:
    # Accepted forms: a list of {"from", "value"} turns; a bare list of strings (alternating
    # human / gpt turns); a single {"from", "value"} turn.
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise DatasetFormatError(f"{where}: key 'conversations': expected a non-empty list of turns, got {value!r:.80}")
    turns = []
    for j, turn in enumerate(value):
        if isinstance(turn, str):
            turn = {"from": "human" if j % 2 == 0 else "gpt", "value": turn}
        if not isinstance(turn, dict) or not isinstance(turn.get("from"), str) or not isinstance(turn.get("value"), str):
            raise DatasetFormatError(
                f"{where}: key 'conversations[{j}]': expected {{\"from\": str, \"value\": str}} or a string, got {turn!r:.80}"
            )
        turns.append({"from": turn["from"], "value": turn["value"]})
    return turns


def read_reference_json(path: str | Path) -> list[dict[str, Any]]:
    """Read ``image_negatives.json`` or ``text_negatives.json`` (ours or the reference's).

    Accepts a JSON list of records (or one record, or JSON lines). Each record needs
    ``positive_image_path``, one of ``negative_image_path`` / ``negative_captions`` (a list of
    strings) and ``conversations``, which may also be a bare list of turns (strings, alternating
    human / gpt) and is normalised to ``[{"from", "value"}, ...]``. Relative image paths are kept as
    written (the caller resolves them against the file's directory).

    Raises:
        DatasetFormatError: naming the file, the record number and the key.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise DatasetFormatError(f"{path}: neither a JSON document nor JSON lines: {err.msg} (line {err.lineno})") from err
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise DatasetFormatError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    out = []
    for i, record in enumerate(data):
        where = f"{path}: record {i}"
        if not isinstance(record, dict):
            raise DatasetFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
        if not isinstance(record.get("positive_image_path"), str):
            raise DatasetFormatError(f"{where}: key 'positive_image_path': expected a string")
        negative_keys = [k for k in ("negative_image_path", "negative_captions") if k in record]
        if not negative_keys:
            raise DatasetFormatError(f"{where}: expected key 'negative_image_path' or 'negative_captions'")
        clean = {"positive_image_path": record["positive_image_path"]}
        for key in negative_keys:
            value = record[key]
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise DatasetFormatError(f"{where}: key '{key}': expected a list of strings, got {value!r:.80}")
            clean[key] = value
        clean["conversations"] = _normalise_conversations(record.get("conversations"), where)
        out.append(clean)
    return out


__all__ = [
    "CONTACT_SHEET_FILE",
    "DatasetFormatError",
    "IMAGE_NEGATIVES_FILE",
    "MANIFEST_FILE",
    "PROMPT",
    "SAMPLES_FILE",
    "TEXT_NEGATIVES_FILE",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "read_json",
    "read_reference_json",
    "read_samples",
    "reference_image_negatives",
    "reference_text_negatives",
    "validate_samples",
    "write_reference_json",
    "write_samples",
]
