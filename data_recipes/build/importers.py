"""``mmgeolm-data import``: the reference's JSON files and (script, caption) folders into our format.

Inputs (any combination; records naming the same positive image are merged into one sample):

- ``--reference-image-negatives FILE``: ``[{"positive_image_path", "negative_image_path": [...],
  "conversations": [...]}, ...]``;
- ``--reference-text-negatives FILE``: ``[{"positive_image_path", "negative_captions": [...],
  "conversations": [...]}, ...]``;
- ``--pairs-dir DIR``: ``NAME.py`` + ``NAME.txt`` pairs; each script is rendered in the sandbox.

The JSON may be a valid JSON list, one object or JSON lines; ``conversations`` may be a list of
``{"from", "value"}`` turns or a bare list of strings (human, gpt, ...); the caption is the last gpt
turn. Relative image paths resolve against ``--image-root`` (default: the JSON file's folder).

Output (``OUT``): ``samples.jsonl`` (see docs/scripts.md; family ``imported``), ``images/``,
``scripts/`` and ``manifest.json`` with counts and the rejected records, each naming the file, the
record number, the key and what was expected. A bad record is skipped and reported, never fatal.
"""
from __future__ import annotations

import argparse
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from data_recipes.formats.dataset import MANIFEST_FILE, atomic_write_bytes, atomic_write_json, write_samples
from data_recipes.diagrams.hardness import image_hardness
from data_recipes.external.batch import load_json_records
from data_recipes.external.isolation import IsolationUnavailable
from data_recipes.external.perturb import NO_ISOLATION_WARNING, add_isolation_argument
from data_recipes.external.sandbox import Sandbox

FAMILY = "imported"
TEXT_KINDS = ("rule", "retrieval")


class ImportRecordError(ValueError):
    """One input record is unusable; ``str()`` names the file, record and key."""

    def __init__(self, source: str, record: int | str, key: str, reason: str):
        self.source, self.record, self.key, self.reason = source, record, key, reason
        super().__init__(f"{source}: record {record}: key '{key}': {reason}")

    def as_reject(self) -> dict[str, Any]:
        return {"source": self.source, "record": self.record, "key": self.key, "reason": self.reason}


@dataclass
class _Pending:
    """A positive being assembled from one or more input records (its images already written)."""

    id: str
    caption: str
    image: str
    script: str | None = None
    negatives: list[dict[str, Any]] = field(default_factory=list)
    text_negatives: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- validation helpers


def load_png(path: Path, source: str, record: int | str, key: str) -> tuple[bytes, np.ndarray]:
    """PNG bytes (other formats are converted) and the RGB array of an image file, or ImportRecordError."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ImportRecordError(source, record, key, f"image file {path} does not exist")
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")
            if image.format != "PNG":
                buffer = io.BytesIO()
                rgb.save(buffer, format="PNG")
                data = buffer.getvalue()
            return data, np.asarray(rgb)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ImportRecordError(source, record, key, f"{path} is not a readable image ({exc})") from exc


def caption_from_conversations(value: Any, source: str, record: int) -> str:
    """The last gpt turn of a list of ``{"from", "value"}`` turns or a bare list of strings."""
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ImportRecordError(source, record, "conversations", f"expected a non-empty list of turns, got {value!r:.60}")
    answers = []
    for j, turn in enumerate(value):
        if isinstance(turn, str):
            if j % 2 == 1:
                answers.append(turn)
        elif isinstance(turn, dict) and isinstance(turn.get("from"), str) and isinstance(turn.get("value"), str):
            if turn["from"] == "gpt":
                answers.append(turn["value"])
        else:
            raise ImportRecordError(source, record, f"conversations[{j}]",
                                    f'expected {{"from": str, "value": str}} or a string, got {turn!r:.60}')
    if not answers or not answers[-1].strip():
        raise ImportRecordError(source, record, "conversations", "no non-empty gpt turn (the positive caption)")
    return answers[-1].strip()


def _string_list(record: dict, key: str, source: str, index: int) -> list[str]:
    value = record.get(key)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ImportRecordError(source, index, key, f"expected a list of non-empty strings, got {value!r:.60}")
    return value


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
        sample_id = _unique(stem, self._used_ids)
        sample = _Pending(sample_id, caption, f"images/{sample_id}.png")
        atomic_write_bytes(self.out / sample.image, png)
        if script is not None:
            sample.script = f"scripts/{sample_id}.py"
            atomic_write_bytes(self.out / sample.script, script.encode("utf-8"))
        self.pending[key] = sample
        return sample

    def _reject(self, error: ImportRecordError) -> None:
        self.rejects.append(error.as_reject())
        self.counts["rejected"] += 1

    def add_reference(self, path: Path, kind: str, image_root: Path | None = None) -> None:
        """Read one reference JSON file; ``kind`` is ``"image"`` or ``"text"`` (which negatives it holds)."""
        source, root = str(path), image_root or path.parent
        try:
            records = load_json_records(path)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            self._reject(ImportRecordError(source, "-", "-", f"cannot read the file: {exc}"))
            return
        for i, record in enumerate(tqdm(records, desc=f"import {path.name}", unit="record", disable=len(records) < 100)):
            self.counts["records"] += 1
            try:
                self._add_reference_record(record, kind, source, i, root)
            except ImportRecordError as error:
                self._reject(error)

    def _add_reference_record(self, record: Any, kind: str, source: str, i: int, root: Path) -> None:
        if not isinstance(record, dict):
            raise ImportRecordError(source, i, "-", f"expected a JSON object, got {type(record).__name__}")
        positive = record.get("positive_image_path")
        if not isinstance(positive, str) or not positive.strip():
            raise ImportRecordError(source, i, "positive_image_path", f"expected a non-empty string, got {positive!r:.60}")
        caption = caption_from_conversations(record.get("conversations"), source, i)
        key = "negative_image_path" if kind == "image" else "negative_captions"
        negatives = _string_list(record, key, source, i)
        image_path = _resolve(positive, root)
        loaded = []
        if kind == "image":
            loaded = [load_png(_resolve(p, root), source, i, f"{key}[{j}]") for j, p in enumerate(negatives)]
        sample_key = str(image_path.resolve())
        sample = self.pending.get(sample_key)
        if sample is None:
            data, positive_array = load_png(image_path, source, i, "positive_image_path")
            sample = self._new_sample(sample_key, image_path.stem, data, caption)
        elif sample.caption != caption:
            raise ImportRecordError(source, i, "conversations",
                                    f"caption differs from an earlier record for {image_path}: {sample.caption!r:.60}")
        elif loaded:
            _, positive_array = load_png(self.out / sample.image, source, i, "positive_image_path")
        for (data, array), origin in zip(loaded, negatives):
            j = len(sample.negatives)
            rel = f"images/{sample.id}_neg{j}.png"
            atomic_write_bytes(self.out / rel, data)
            sample.negatives.append({
                "type": FAMILY, "image": rel, "script": None, "caption": None, "facts": [], "removed": [],
                "added": [], "detail": f"reference negative {j}: {origin}",
                "hardness": _hardness(positive_array, array),
            })
        sample.text_negatives += [c.strip() for c in (negatives if kind == "text" else []) if c.strip() != caption]

    def add_pairs_dir(self, directory: Path, sandbox) -> None:
        """Render every ``NAME.py`` of ``directory`` (caption in ``NAME.txt``) through ``sandbox``."""
        scripts = sorted(directory.glob("*.py"))
        texts = []
        for path in scripts:
            self.counts["records"] += 1
            caption_path = path.with_suffix(".txt")
            try:
                if not caption_path.is_file():
                    raise ImportRecordError(str(path), path.stem, "caption", f"missing caption file {caption_path}")
                caption = caption_path.read_text(encoding="utf-8").strip()
                if not caption:
                    raise ImportRecordError(str(path), path.stem, "caption", f"{caption_path} is empty")
                texts.append((path, path.read_text(encoding="utf-8"), caption))
            except (OSError, UnicodeDecodeError) as exc:
                self._reject(ImportRecordError(str(path), path.stem, "script", f"cannot read: {exc}"))
            except ImportRecordError as error:
                self._reject(error)
        for (path, script, caption), result in zip(texts, sandbox.map([t[1] for t in texts])):
            if not result.ok:
                self._reject(ImportRecordError(str(path), path.stem, "script",
                                               f"did not render: {result.status}: {result.message[:300]}"))
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


def _unique(raw: str, used: set[str]) -> str:
    base = "".join(c if c.isalnum() or c in "._-" else "_" for c in raw).strip("._") or "sample"
    name, n = base, 1
    while name in used:
        n += 1
        name = f"{base}_{n}"
    used.add(name)
    return name


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


def run_cli(args: argparse.Namespace) -> int:
    sources = {"reference_image_negatives": args.reference_image_negatives,
               "reference_text_negatives": args.reference_text_negatives, "pairs_dir": args.pairs_dir}
    if not any(sources.values()):
        print("import: give --reference-image-negatives, --reference-text-negatives and/or --pairs-dir", file=sys.stderr)
        return 2
    for name, path in sources.items():
        if path is not None and not path.exists():
            print(f"import: --{name.replace('_', '-')} {path}: no such file or directory", file=sys.stderr)
            return 2
    try:
        sandbox = None
        if args.pairs_dir:
            if args.no_isolation:
                print(f"import: {NO_ISOLATION_WARNING}", file=sys.stderr)
            sandbox = Sandbox(workers=args.workers, timeout=args.timeout, isolation=not args.no_isolation)
            sandbox.start()
    except IsolationUnavailable as exc:
        print(f"import: refusing to render the scripts of --pairs-dir {args.pairs_dir}: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"import: {exc}", file=sys.stderr)
        return 2
    importer = Importer(args.out, text_kind=args.text_kind)
    if args.reference_image_negatives:
        importer.add_reference(args.reference_image_negatives, "image", args.image_root)
    if args.reference_text_negatives:
        importer.add_reference(args.reference_text_negatives, "text", args.image_root)
    if sandbox is not None:
        with sandbox:
            importer.add_pairs_dir(args.pairs_dir, sandbox)
    manifest = importer.write({k: str(v) for k, v in sources.items() if v is not None})
    counts = manifest["counts"]
    print(f"import: {counts['samples']} samples, {counts['image_negatives']} image negatives, "
          f"{counts['text_negatives']} caption negatives from {counts['records']} records; "
          f"{counts['rejected']} rejected -> {args.out / MANIFEST_FILE}")
    for reject in manifest["rejects"][:20]:
        print(f"  {reject['source']}: record {reject['record']}: key '{reject['key']}': {reject['reason']}", file=sys.stderr)
    return 0 if not manifest["rejects"] else 1
