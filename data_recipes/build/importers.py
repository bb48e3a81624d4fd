"""``mmgeolm-data import``: the reference's JSON files and (script, caption) folders into our format.

Inputs (any combination; records naming the same positive image are merged into one sample):

- ``--reference-image-negatives FILE``: ``[{"positive_image_path", "negative_image_path": [...],
  "conversations": [...]}, ...]``;
- ``--reference-text-negatives FILE``: ``[{"positive_image_path", "negative_captions": [...],
  "conversations": [...]}, ...]``;
- ``--pairs-dir DIR``: ``NAME.py`` + ``NAME.txt`` pairs; each script is rendered in the sandbox.

Records are read by the format's one owner, :mod:`data_recipes.formats.reference` (a JSON list, one
object or JSON lines; the caption is the first answer turn of ``conversations``, as MMCLIP training reads
it). Relative image paths resolve against ``--image-root`` (default: the JSON file's folder). A record that
repeats an earlier one adds nothing (its negatives are not doubled) and is reported.

Output (``OUT``): ``samples.jsonl`` (see docs/scripts.md; family ``imported``), ``images/``,
``scripts/`` and ``manifest.json`` with counts and the rejected records, each naming the file, the
record number, the key and what was expected. A bad record is skipped and reported, never fatal.
"""
from __future__ import annotations

import argparse
import io
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from data_recipes.diagrams.hardness import image_hardness
from data_recipes.external.perturb import NO_ISOLATION_WARNING, add_isolation_argument
from data_recipes.external.sandbox import Sandbox
from data_recipes.formats.dataset import MANIFEST_FILE, write_samples
from data_recipes.formats.reference import ReferenceRecord, read_reference
from mmgeolm_core.errors import InputError, JobError
from mmgeolm_core.io import (
    FormatError,
    atomic_write_bytes,
    atomic_write_json,
    check_replaceable_dir,
    read_json,
    read_text,
    unique_name,
)

FAMILY = "imported"
log = logging.getLogger(__name__)
TEXT_KINDS = ("rule", "retrieval")


def _reject_of(error: FormatError) -> dict[str, Any]:
    return {"source": error.file, "record": error.where, "key": error.key, "reason": error.reason}


@dataclass
class _Pending:
    """A positive being assembled from one or more input records (its images already written)."""

    id: str
    caption: str
    image: str
    script: str | None = None
    negatives: list[dict[str, Any]] = field(default_factory=list)
    text_negatives: list[str] = field(default_factory=list)
    origins: set[str] = field(default_factory=set)  # resolved paths of the image negatives already taken


# --------------------------------------------------------------------------- validation helpers


def load_png(path: Path, source: str, where: str, key: str) -> tuple[bytes, np.ndarray]:
    """PNG bytes (other formats are converted) and the RGB array of an image file.

    Raises:
        FormatError: the file is missing or not a readable image (naming the record and key).
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FormatError(source, f"image file {path} does not exist", where=where, key=key)
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            if image.format == "PNG":
                return path.read_bytes(), np.asarray(rgb)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        reason = "an empty file" if path.stat().st_size == 0 else type(exc).__name__
        raise FormatError(source, f"{path} is not a readable image ({reason})", where=where, key=key) from None
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    return buffer.getvalue(), np.asarray(rgb)


def _resolve(path: str, root: Path) -> Path:
    return Path(path) if Path(path).is_absolute() else root / path


# --------------------------------------------------------------------------- readers


class Importer:
    """Collects positives from every input, then writes the data set.

    Args:
        out: the output data-set directory.
        text_kind: the kind recorded for imported caption negatives (``rule`` or ``retrieval``); the
            reference's ``negative_captions`` do not say which, and MMCLIP weights its losses per kind.
    """

    def __init__(self, out: Path, text_kind: str = "rule"):
        if text_kind not in TEXT_KINDS:
            raise ValueError(f"text_kind must be one of {TEXT_KINDS}, got {text_kind!r}")
        self.out = out
        self.text_kind = text_kind
        self.pending: dict[str, _Pending] = {}
        self.rejects: list[dict[str, Any]] = []
        self.counts = {"records": 0, "rejected": 0}
        self._used_ids: set[str] = set()
        (out / "images").mkdir(parents=True, exist_ok=True)
        (out / "scripts").mkdir(parents=True, exist_ok=True)

    def _new_sample(self, key: str, stem: str, png: bytes, caption: str, script: str | None = None) -> _Pending:
        """Write the positive (and its script) now: samples are streamed, not held in memory."""
        sample_id = unique_name(stem, self._used_ids, "sample")
        sample = _Pending(sample_id, caption, f"images/{sample_id}.png")
        atomic_write_bytes(self.out / sample.image, png)
        if script is not None:
            sample.script = f"scripts/{sample_id}.py"
            atomic_write_bytes(self.out / sample.script, script.encode("utf-8"))
        self.pending[key] = sample
        return sample

    def _reject(self, error: FormatError) -> None:
        self.rejects.append(_reject_of(error))
        self.counts["rejected"] += 1

    def add_reference(self, path: Path, records: list[ReferenceRecord], problems: list[FormatError],
                      image_root: Path | None = None) -> None:
        """Add the records of one reference JSON file (read by :func:`~data_recipes.formats.reference.read_reference`)."""
        root = image_root or path.parent
        self.counts["records"] += len(records) + len(problems)
        for problem in problems:
            self._reject(problem)
        for record in tqdm(records, desc=f"import {path.name}", unit="record", disable=len(records) < 100):
            try:
                self._add_reference_record(record, str(path), root)
            except FormatError as error:
                self._reject(error)

    def _add_reference_record(self, record: ReferenceRecord, source: str, root: Path) -> None:
        image_path = _resolve(record.image, root)
        loaded = [load_png(_resolve(p, root), source, record.where, f"negative_image_path[{j}]")
                  for j, p in enumerate(record.negative_images)]
        sample_key = str(image_path.resolve())
        sample = self.pending.get(sample_key)
        if sample is None:
            data, positive_array = load_png(image_path, source, record.where, "positive_image_path")
            sample = self._new_sample(sample_key, image_path.stem, data, record.caption)
        elif sample.caption != record.caption:
            raise FormatError(source, f"caption differs from an earlier record for {image_path}: {sample.caption!r:.60}",
                              where=record.where, key="conversations")
        else:
            _, positive_array = load_png(self.out / sample.image, source, record.where, "positive_image_path")
        new_images = [(pair, origin) for pair, origin in zip(loaded, record.negative_images)
                      if str(_resolve(origin, root).resolve()) not in sample.origins]
        new_captions = [c for c in record.negative_captions if c not in sample.text_negatives]
        if not new_images and not new_captions and (record.negative_images or record.negative_captions):
            raise FormatError(source, f"repeats an earlier record for {image_path}: no new negative", where=record.where)
        for (data, array), origin in new_images:
            j = len(sample.negatives)
            rel = f"images/{sample.id}_neg{j}.png"
            atomic_write_bytes(self.out / rel, data)
            sample.origins.add(str(_resolve(origin, root).resolve()))
            sample.negatives.append({
                "type": FAMILY, "image": rel, "script": None, "caption": None, "facts": [], "removed": [],
                "added": [], "detail": f"reference negative {j}: {origin}",
                "hardness": _hardness(positive_array, array),
            })
        sample.text_negatives += new_captions

    def add_pairs_dir(self, directory: Path, sandbox) -> None:
        """Render every ``NAME.py`` of ``directory`` (caption in ``NAME.txt``) through ``sandbox``."""
        scripts = sorted(directory.glob("*.py"))
        texts = []
        for path in scripts:
            self.counts["records"] += 1
            caption_path = path.with_suffix(".txt")
            try:
                if not caption_path.is_file():
                    raise FormatError(path, f"missing caption file {caption_path}", key="caption")
                caption = read_text(caption_path).strip()
                if not caption:
                    raise FormatError(path, f"{caption_path} is empty", key="caption")
                texts.append((path, read_text(path), caption))
            except OSError as exc:
                self._reject(FormatError(path, f"cannot read: {exc.strerror or exc}", key="script"))
            except FormatError as error:
                self._reject(error)
        for (path, script, caption), result in zip(texts, sandbox.map([t[1] for t in texts])):
            if not result.ok:
                self._reject(FormatError(path, f"did not render: {result.status}: {result.message[:300]}", key="script"))
                continue
            self._new_sample(str(path.resolve()), path.stem, result.image_png, caption, script=script)

    # ----------------------------------------------------------------------- writing

    def write(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Write samples.jsonl and manifest.json (images were written as they were read); return the manifest."""
        records = [
            {
                "id": s.id, "index": index, "family": FAMILY, "seed": None, "facts": [], "image": s.image,
                "script": s.script, "caption": s.caption, "split": "train", "negatives": s.negatives,
                "text_negatives": [{"caption": c, "kind": self.text_kind, "rules": []} for c in dict.fromkeys(s.text_negatives)],
            }
            for index, s in enumerate(self.pending.values())
        ]
        write_samples(self.out, records)
        manifest = {
            "family": FAMILY, "inputs": inputs,
            "counts": {**self.counts, "samples": len(records),
                       "image_negatives": sum(len(r["negatives"]) for r in records),
                       "text_negatives": sum(len(r["text_negatives"]) for r in records)},
            "rejects": self.rejects,
        }
        atomic_write_json(self.out / MANIFEST_FILE, manifest)
        return manifest


def _hardness(positive: np.ndarray, negative: np.ndarray) -> dict[str, float]:
    """image_hardness; a negative of another size is resized to the positive's first."""
    if negative.shape != positive.shape:
        from PIL import Image

        negative = np.asarray(Image.fromarray(negative).resize(positive.shape[1::-1]))
    return image_hardness(positive, negative)


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference-image-negatives", type=Path, default=None, metavar="FILE",
                        help="reference JSON: positive_image_path, negative_image_path, conversations")
    parser.add_argument("--reference-text-negatives", type=Path, default=None, metavar="FILE",
                        help="reference JSON: positive_image_path, negative_captions, conversations")
    parser.add_argument("--pairs-dir", type=Path, default=None, metavar="DIR",
                        help="folder of NAME.py scripts with NAME.txt captions (rendered in the sandbox)")
    parser.add_argument("--image-root", type=Path, default=None,
                        help="folder relative image paths resolve against (default: the JSON file's folder)")
    parser.add_argument("--text-kind", choices=TEXT_KINDS, default="rule",
                        help="kind recorded for the imported caption negatives (default rule, as MMCLIP assumes "
                             "for the reference's negative_captions)")
    parser.add_argument("--out", type=Path, required=True, help="output data-set directory")
    parser.add_argument("--workers", type=int, default=2, help="sandbox workers for --pairs-dir (default 2)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per script for --pairs-dir (default 20)")
    add_isolation_argument(parser)


def _is_import(folder: Path) -> bool:
    """``folder`` holds the output of an earlier ``import`` (its manifest says so)."""
    try:
        manifest = read_json(folder / MANIFEST_FILE)
    except (OSError, FormatError):
        return False
    return isinstance(manifest, dict) and manifest.get("family") == FAMILY and "inputs" in manifest


def run_cli(args: argparse.Namespace) -> int:
    """Run ``mmgeolm-data import``: 0 when every record was imported, 1 when some were rejected (listed)."""
    sources = {"reference_image_negatives": args.reference_image_negatives,
               "reference_text_negatives": args.reference_text_negatives, "pairs_dir": args.pairs_dir}
    if not any(sources.values()):
        raise InputError("give --reference-image-negatives, --reference-text-negatives and/or --pairs-dir")
    for name, path in sources.items():
        if path is not None and not path.exists():
            raise InputError(f"--{name.replace('_', '-')} {path}: no such file or directory")
    # The output folder is checked and whole files are read (and refused when unreadable or empty) before
    # anything is written; a folder holding anything but an earlier import (a built data set) is never touched.
    check_replaceable_dir(args.out, option="--out", what="an earlier import", is_ours=_is_import, overwrite=None)
    references = [(path, kind, *read_reference(path, kind)) for path, kind in
                  ((args.reference_image_negatives, "image"), (args.reference_text_negatives, "text")) if path]
    if not args.pairs_dir and not any(records or problems for _, _, records, problems in references):
        raise InputError(f"{', '.join(str(r[0]) for r in references)}: no records (expected a JSON list of "
                         f"reference records)")
    sandbox = None
    try:
        if args.pairs_dir:
            if args.no_isolation:
                log.warning(NO_ISOLATION_WARNING)
            sandbox = Sandbox(workers=args.workers, timeout=args.timeout, isolation=not args.no_isolation)
            sandbox.start()  # refuses (IsolationUnavailable, exit 2) where the kernel cannot isolate the scripts
    except ValueError as exc:
        raise InputError(str(exc)) from None
    importer = Importer(args.out, text_kind=args.text_kind)
    for path, _kind, records, problems in references:
        importer.add_reference(path, records, problems, args.image_root)
    if sandbox is not None:
        with sandbox:
            importer.add_pairs_dir(args.pairs_dir, sandbox)
    manifest = importer.write({k: str(v) for k, v in sources.items() if v is not None})
    counts = manifest["counts"]
    print(f"import: {counts['samples']} samples, {counts['image_negatives']} image negatives, "
          f"{counts['text_negatives']} caption negatives from {counts['records']} records; "
          f"{counts['rejected']} rejected -> {args.out / MANIFEST_FILE}")
    for reject in manifest["rejects"][:20]:
        where = ": ".join(str(x) for x in (reject["source"], reject["record"]) if x)
        key = f"key '{reject['key']}': " if reject["key"] else ""
        log.warning("rejected %s: %s%s", where, key, reject["reason"])
    if counts["samples"] == 0:
        raise JobError(f"no sample imported ({counts['rejected']} records rejected); see {args.out / MANIFEST_FILE}")
    return 0 if not manifest["rejects"] else 1
