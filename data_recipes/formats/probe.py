"""The perception probe's files: ``probe.jsonl`` (one line per question and image) and ``manifest.json``.

A probe set is a folder::

    probe.jsonl      one record per member of a pair (two lines per pair, positive first)
    manifest.json    how it was made (seed, size, relations, code) and its counts
    images/          <pair>_pos.png, <pair>_neg.png

A record (every key required)::

    {"id": "probe-00003-neg", "pair": "probe-00003", "member": "negative",
     "image": "images/probe-00003_neg.png", "question": "Is AB parallel to CD? Answer yes or no.",
     "answer": "no", "kind": "yes_no", "relation": "parallel", "fact": "parallel(AB,CD)",
     "perturbation": "parallel_break", "needs_letters": false, "family": "trapezoid",
     "detail": "turned CD by 4.1 degrees about C"}

Both members of a pair ask the same question and have different answers; ``needs_letters`` says whether
the pair can only be answered by reading vertex letters (see
:class:`data_recipes.diagrams.questions.PairedQuestion`). Images are relative to the folder.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from mmgeolm_core.io import (
    FormatError,
    atomic_directory,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_replaceable_dir,
    iter_jsonl,
    read_json,
)

PROBE_FILE = "probe.jsonl"
MANIFEST_FILE = "manifest.json"
FORMAT_NAME = "mmgeolm-probe"
FORMAT_VERSION = 1
MEMBERS = ("positive", "negative")
KINDS = ("yes_no", "value")


@dataclass(frozen=True)
class ProbeRecord:
    """One question about one image of a probe pair (see the module doc for the keys)."""

    id: str
    pair: str
    member: str
    image: str
    question: str
    answer: str
    kind: str
    relation: str
    fact: str
    perturbation: str
    needs_letters: bool
    family: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, file: str | os.PathLike, where: str) -> ProbeRecord:
        """Check one record's keys and types.

        Raises:
            FormatError: not an object, a missing key, a value of the wrong type, an unknown member or kind.
        """
        if not isinstance(data, dict):
            raise FormatError(file, f"expected a JSON object, got {type(data).__name__}", where=where)
        values = {}
        for f in fields(cls):
            if f.name not in data:
                raise FormatError(file, "missing key", where=where, key=f.name)
            value = data[f.name]
            expected = bool if f.name == "needs_letters" else str
            if not isinstance(value, expected) or (expected is str and not value and f.name != "detail"):
                raise FormatError(file, f"expected a {'boolean' if expected is bool else 'non-empty string'}, "
                                        f"got {value!r:.60}", where=where, key=f.name)
            values[f.name] = value
        if values["member"] not in MEMBERS:
            raise FormatError(file, f"expected one of {list(MEMBERS)}, got {values['member']!r}", where=where, key="member")
        if values["kind"] not in KINDS:
            raise FormatError(file, f"expected one of {list(KINDS)}, got {values['kind']!r}", where=where, key="kind")
        return cls(**values)


def probe_file(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/probe.jsonl`` when ``path`` is a probe folder."""
    path = Path(path)
    return path / PROBE_FILE if path.is_dir() else path


def read_probe(path: str | os.PathLike) -> list[ProbeRecord]:
    """The records of a probe set (its folder or its ``probe.jsonl``), pairs checked.

    Raises:
        FormatError: a bad record, a duplicate id, a pair without exactly one positive and one negative,
            or whose members ask different questions or give the same answer (naming file and line).
    """
    path = probe_file(path)
    records: list[ProbeRecord] = []
    where_of: dict[str, str] = {}
    pairs: dict[str, list[ProbeRecord]] = {}
    for lineno, data in iter_jsonl(path):
        where = f"line {lineno}"
        record = ProbeRecord.from_dict(data, path, where)
        if record.id in where_of:
            raise FormatError(path, f"duplicate id {record.id!r} (first at {where_of[record.id]})", where=where, key="id")
        where_of[record.id] = where
        records.append(record)
        pairs.setdefault(record.pair, []).append(record)
    if not records:
        raise FormatError(path, "no records (expected two lines per pair)")
    for pair, members in pairs.items():
        where = where_of[members[0].id]
        if sorted(m.member for m in members) != sorted(MEMBERS):
            raise FormatError(path, f"pair {pair!r} has members {[m.member for m in members]}; expected one positive "
                                    "and one negative", where=where, key="member")
        if members[0].question != members[1].question:
            raise FormatError(path, f"pair {pair!r}: its members ask different questions", where=where, key="question")
        if members[0].answer == members[1].answer:
            raise FormatError(path, f"pair {pair!r}: both members answer {members[0].answer!r}; a probe pair's answers "
                                    "differ", where=where, key="answer")
    return records


def probe_counts(records: list[ProbeRecord]) -> dict[str, dict[str, int]]:
    """Pairs per kind, relation, perturbation and ``needs_letters`` (counted on positives)."""
    positives = [r for r in records if r.member == "positive"]
    return {
        "kind": dict(sorted(Counter(r.kind for r in positives).items())),
        "relation": dict(sorted(Counter(r.relation for r in positives).items())),
        "perturbation": dict(sorted(Counter(r.perturbation for r in positives).items())),
        "needs_letters": dict(sorted(Counter(str(r.needs_letters).lower() for r in positives).items())),
    }


def _is_probe_set(folder: Path) -> bool:
    try:
        return isinstance(data := read_json(folder / MANIFEST_FILE), dict) and data.get("format") == FORMAT_NAME
    except (OSError, FormatError):
        return False


def check_probe_dir(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` may receive a probe set: new, empty, or an earlier probe set (which is replaced whole).

    Raises:
        InputError: a file, a folder holding anything else (never replaced), or not writable.
    """
    return check_replaceable_dir(out_dir, option="--out", what="a probe set", is_ours=_is_probe_set, overwrite=None)


def write_probe_set(out_dir: str | os.PathLike, records: list[ProbeRecord], images: dict[str, bytes],
                    manifest: dict[str, Any]) -> Path:
    """Write a probe set folder in one atomic step (a re-run replaces it whole; a folder holding anything
    else is refused, see :func:`check_probe_dir`).

    Args:
        out_dir: the folder to (re)create.
        records: the records, two per pair.
        images: relative path -> PNG bytes, for every record's ``image``.
        manifest: how the set was made; ``format``, ``version``, ``num_pairs`` and ``counts`` are added.

    Raises:
        ValueError: a record's image is missing from ``images``.
    """
    missing = sorted({r.image for r in records} - set(images))
    if missing:
        raise ValueError(f"records name images that were not given: {missing[:3]}")
    check_probe_dir(out_dir)
    full = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **manifest,
            "num_pairs": len({r.pair for r in records}), "counts": probe_counts(records)}
    with atomic_directory(out_dir) as tmp:
        (tmp / "images").mkdir()
        for rel, data in images.items():
            atomic_write_bytes(tmp / rel, data)
        atomic_write_text(tmp / PROBE_FILE, "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n"
                                                    for r in records))
        atomic_write_json(tmp / MANIFEST_FILE, full)
    return Path(out_dir)


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """A probe set's ``manifest.json``.

    Raises:
        FormatError: missing keys, or another format or version.
    """
    path = Path(folder) / MANIFEST_FILE
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise FormatError(path, f"not a probe manifest (expected format {FORMAT_NAME!r})", key="format")
    if data.get("version") != FORMAT_VERSION:
        raise FormatError(path, f"version {data.get('version')!r}; this code reads version {FORMAT_VERSION}", key="version")
    return data
