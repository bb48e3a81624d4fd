"""The public reference's two training JSON files: the one reader and writer of their records.

Each file is a JSON list of records (one record or JSON lines are accepted too)::

    image_negatives.json  {"positive_image_path": str, "negative_image_path": [str, ...], "conversations": [...]}
    text_negatives.json   {"positive_image_path": str, "negative_captions": [str, ...], "conversations": [...]}

``conversations`` holds the positive caption. Accepted forms: a list of ``{"from": speaker, "value": text}``
turns (or ``{"role", "content"}``), a list of ``[speaker, text]`` pairs, a bare list of strings
(alternating human / gpt, so the odd entries are answers), or a single turn.

**The caption is the first answer turn** (speaker ``gpt``, ``assistant`` or ``model``), as the
reference's training code reads it (``conversations[1]["value"]``). Later turns of a multi-turn record
are not captions of the image and are ignored. Every command that reads these files (``mmclip-train``,
``mmgeolm-data import``, ``text-negatives``, ``perturb-batch``) goes through :func:`caption_from_conversations`.

Paths are kept as written; relative ones resolve against the file's folder or an image root chosen by
the caller.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmgeolm_core.io import FormatError, atomic_write_json, read_records

PROMPT = "<image>\nDescribe the geometric figure."
ANSWER_SPEAKERS = ("gpt", "assistant", "model")
IMAGE_KEY, TEXT_KEY = "negative_image_path", "negative_captions"
KINDS = {"image": IMAGE_KEY, "text": TEXT_KEY}


@dataclass(frozen=True)
class ReferenceRecord:
    """One validated record: the positive image path as written, its caption and its negatives."""

    where: str
    image: str
    caption: str
    negative_images: tuple[str, ...] = ()
    negative_captions: tuple[str, ...] = ()


def caption_from_conversations(value: Any, file: str | os.PathLike, where: str | None = None) -> str:
    """The positive caption of a record's ``conversations``: its first answer turn, stripped.

    Raises:
        FormatError: no list of turns, a malformed turn, or no non-empty answer (naming file, record, key).
    """
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise FormatError(file, f"expected a non-empty list of turns, got {value!r:.80}", where=where, key="conversations")
    for j, turn in enumerate(value):
        if isinstance(turn, str):
            speaker, text = ("human" if j % 2 == 0 else "gpt"), turn
        elif isinstance(turn, list) and len(turn) == 2 and all(isinstance(t, str) for t in turn):
            speaker, text = turn
        elif isinstance(turn, dict) and isinstance(turn.get("value", turn.get("content")), str):
            speaker, text = str(turn.get("from", turn.get("role", ""))), turn.get("value", turn.get("content"))
        else:
            raise FormatError(file, f'expected {{"from": str, "value": str}}, [speaker, text] or a string, '
                              f"got {turn!r:.80}", where=where, key=f"conversations[{j}]")
        if speaker.lower() in ANSWER_SPEAKERS:
            if not text.strip():
                raise FormatError(file, "the first answer turn (the caption) is empty", where=where,
                                  key=f"conversations[{j}]")
            return text.strip()
    raise FormatError(file, f"no answer turn (speaker one of {list(ANSWER_SPEAKERS)}) holding the caption",
                      where=where, key="conversations")


def _strings(record: Mapping[str, Any], key: str, file: str, where: str) -> tuple[str, ...]:
    value = record[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise FormatError(file, f"expected a list of non-empty strings, got {value!r:.80}", where=where, key=key)
    return tuple(v.strip() for v in value)


def parse_record(record: Any, file: str | os.PathLike, where: str, kind: str | None = None) -> ReferenceRecord:
    """Validate one record; ``kind`` ``"image"`` / ``"text"`` requires that file's negatives key.

    Raises:
        FormatError: naming the file, the record and the key.
    """
    file = str(file)
    if not isinstance(record, dict):
        raise FormatError(file, f"expected a JSON object, got {type(record).__name__}", where=where)
    image = record.get("positive_image_path")
    if not isinstance(image, str) or not image.strip():
        raise FormatError(file, f"expected a non-empty string, got {image!r:.80}", where=where, key="positive_image_path")
    required = [KINDS[kind]] if kind is not None else list(KINDS.values())
    present = [key for key in KINDS.values() if key in record]
    if not any(key in present for key in required):
        raise FormatError(file, f"expected key {' or '.join(repr(k) for k in required)}", where=where)
    caption = caption_from_conversations(record.get("conversations"), file, where)
    images = _strings(record, IMAGE_KEY, file, where) if IMAGE_KEY in present else ()
    captions = _strings(record, TEXT_KEY, file, where) if TEXT_KEY in present else ()
    # a negative equal to the positive is no negative; a repeated one adds nothing
    captions = tuple(dict.fromkeys(c for c in captions if c != caption))
    return ReferenceRecord(where, image.strip(), caption, tuple(dict.fromkeys(images)), captions)


def resolve_files(record: ReferenceRecord, file: str | os.PathLike, root: str | os.PathLike) -> ReferenceRecord:
    """The record with every image path resolved against ``root`` (absolute paths stay), each file checked.

    Raises:
        FormatError: an image file does not exist (naming the record and the key).
    """
    root = Path(root)

    def resolve(path: str, key: str) -> str:
        full = os.path.normpath(path if os.path.isabs(path) else root / path)
        if not os.path.isfile(full):
            raise FormatError(file, f"image file {full} does not exist", where=record.where, key=key)
        return full

    return ReferenceRecord(record.where, resolve(record.image, "positive_image_path"), record.caption,
                           tuple(resolve(p, f"{IMAGE_KEY}[{j}]") for j, p in enumerate(record.negative_images)),
                           record.negative_captions)


def read_reference(path: str | os.PathLike, kind: str | None = None) -> tuple[list[ReferenceRecord], list[FormatError]]:
    """Every record of a reference JSON file; bad records are returned as errors, not raised (skip and report).

    Raises:
        FormatError: the file itself is empty, not UTF-8, or neither a JSON list nor JSON lines.
    """
    records, problems = [], []
    for where, record in read_records(path):
        try:
            records.append(parse_record(record, path, where, kind))
        except FormatError as err:
            problems.append(err)
    return records, problems


# --------------------------------------------------------------------------- writing


def conversations(caption: str) -> list[dict[str, str]]:
    """The reference's two-turn ``conversations`` for a caption."""
    return [{"from": "human", "value": PROMPT}, {"from": "gpt", "value": caption}]


def _path_for(root: Path, rel: str, json_dir: Path, relative: bool) -> str:
    """``rel`` (a path inside ``root``) as the JSON file writes it; ``root`` and ``json_dir`` resolved already."""
    target = os.path.normpath(root / rel)
    return os.path.relpath(target, json_dir) if relative else target


def reference_image_negatives(
    samples: Sequence[Mapping[str, Any]], root: str | Path, json_dir: str | Path, *, relative: bool = False
) -> list[dict[str, Any]]:
    """Entries of ``image_negatives.json`` for data-set samples with at least one image negative.

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
            IMAGE_KEY: [_path_for(root, n["image"], json_dir, relative) for n in s["negatives"]],
            "conversations": conversations(s["caption"]),
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
            TEXT_KEY: [t["caption"] for t in s["text_negatives"]],
            "conversations": conversations(s["caption"]),
        }
        for s in samples
        if s["text_negatives"]
    ]


def write_reference_json(path: str | Path, entries: Sequence[Mapping[str, Any]]) -> Path:
    """Write a reference-format JSON list atomically (valid JSON, unlike the reference README)."""
    return atomic_write_json(path, list(entries))
