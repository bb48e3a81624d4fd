"""``mmgeolm-data perturb-batch``: image negatives for many external scripts, resumable.

Inputs (one of):

- ``--scripts-dir DIR``: every ``DIR/*.py``; a sibling ``NAME.txt`` is its caption; the id is ``NAME``.
- ``--reference-json FILE``: a JSON list (or JSON lines) of records. The script of a record is its
  ``code`` field (source text) or its ``script`` field (a path to a .py file, relative to FILE's
  folder, or source text when it contains a newline); failing both, with ``--scripts-dir DIR`` given,
  ``DIR/<stem of positive_image_path or image>.py`` (MM-Math-Align records carry only image paths).
  The caption is ``caption``, else the caption in ``conversations`` (its first answer turn, as
  :mod:`data_recipes.formats.reference` reads it). The id is ``id``, else the image stem, else
  the record number.

Every item gets ``OUT/<id>/`` (see :mod:`data_recipes.external.perturb`); its manifest.json, written last
and atomically, records the script's SHA-256 and the settings, so a re-run skips items already done
with the same script and settings. ``OUT/manifest.json`` summarises the run: items done, rejects with
reasons, each item's sandbox status (``ok``, ``timeout``, ``memory``, ``forbidden``, ``error``) and
counts. One sandbox pool serves the whole batch; a forbidden or crashed script is never done.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data_recipes.external.perturb import (
    MANIFEST,
    PerturbConfig,
    add_perturb_arguments,
    add_sandbox_arguments,
    build_perturb_config,
    build_sandbox,
    perturb_script,
)
from data_recipes.external.sandbox import STATUSES
from data_recipes.formats.reference import caption_from_conversations
from mmgeolm_core.errors import InputError, Interrupted
from mmgeolm_core.io import FormatError, atomic_write_json, check_output_dir, read_records, unique_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchItem:
    """One script to perturb: ``id`` names its output folder; ``error`` set means it cannot run."""

    id: str
    script: str | None
    caption: str | None
    source: str
    error: str = ""


def items_from_scripts_dir(directory: Path) -> list[BatchItem]:
    """Every ``*.py`` of ``directory`` (sorted), with its sibling ``.txt`` caption when present."""
    items, used = [], set()
    for path in sorted(directory.glob("*.py")):
        caption_path = path.with_suffix(".txt")
        try:
            script = path.read_text(encoding="utf-8")
            caption = caption_path.read_text(encoding="utf-8").strip() if caption_path.is_file() else None
            items.append(BatchItem(unique_name(path.stem, used), script, caption or None, str(path)))
        except (OSError, UnicodeDecodeError) as exc:
            items.append(BatchItem(unique_name(path.stem, used), None, None, str(path), f"cannot read: {exc}"))
    return items


def caption_of(record: dict[str, Any], file: str | Path, where: str) -> str | None:
    """``caption``, else the caption in ``conversations`` (the reference format's rule), else None.

    Raises:
        FormatError: ``conversations`` is present but malformed.
    """
    if isinstance(record.get("caption"), str) and record["caption"].strip():
        return record["caption"].strip()
    if "conversations" in record:
        return caption_from_conversations(record["conversations"], file, where)
    return None


def _script_of(record: dict, base: Path, scripts_dir: Path | None) -> tuple[str | None, str, str]:
    """(source, where it came from, error)."""
    if isinstance(record.get("code"), str):
        return record["code"], "code field", ""
    script = record.get("script")
    if isinstance(script, str):
        if "\n" in script:
            return script, "script field", ""
        path = (base / script) if not Path(script).is_absolute() else Path(script)
        if not path.is_file():
            return None, str(path), f"key 'script': file {path} does not exist"
        return path.read_text(encoding="utf-8"), str(path), ""
    image = record.get("positive_image_path") or record.get("image")
    if scripts_dir is not None and isinstance(image, str):
        path = scripts_dir / f"{Path(image).stem}.py"
        if path.is_file():
            return path.read_text(encoding="utf-8"), str(path), ""
        return None, str(path), f"no script {path} for image {image!r}"
    return None, "", "no 'code' or 'script' field (and no --scripts-dir mapping from the image name)"


def items_from_reference_json(path: Path, scripts_dir: Path | None = None) -> list[BatchItem]:
    """One item per record; a record that cannot run becomes an item with ``error`` set."""
    items, used = [], set()
    for i, (place, record) in enumerate(read_records(path)):
        where = f"{path}: {place}"
        if not isinstance(record, dict):
            items.append(BatchItem(unique_name(f"record_{i}", used), None, None, where,
                                   f"{where}: expected a JSON object, got {type(record).__name__}"))
            continue
        image = record.get("positive_image_path") or record.get("image")
        raw_id = str(record.get("id") or (Path(image).stem if isinstance(image, str) else f"record_{i}"))
        try:
            script, source, error = _script_of(record, path.parent, scripts_dir)
            caption = caption_of(record, path, place)
        except (OSError, UnicodeDecodeError) as exc:
            script, source, caption, error = None, "", None, f"cannot read the script: {exc}"
        except FormatError as exc:
            script, source, caption, error = None, "", None, exc.reason if exc.key is None else f"key '{exc.key}': {exc.reason}"
        items.append(BatchItem(unique_name(raw_id, used), script, caption, source or where,
                               f"{where}: {error}" if error else ""))
    return items


def _fingerprint(item: BatchItem, config: PerturbConfig) -> dict[str, Any]:
    return {
        "script_sha256": hashlib.sha256((item.script or "").encode()).hexdigest(),
        "caption": item.caption, "config": {**asdict(config), "edit_types": list(config.edit_types)},
    }


def _finished(folder: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The item's manifest if a previous run finished it with the same script and settings."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return manifest if manifest.get("fingerprint") == fingerprint else None


def _ours(folder: Path) -> bool:
    """An item folder this command wrote (possibly half-written): its script or manifest is there, or it is empty."""
    return not folder.is_file() and ((folder / "positive.py").is_file() or (folder / MANIFEST).is_file()
                                     or not any(folder.iterdir()))


def run_batch(items: list[BatchItem], out: Path, config: PerturbConfig, sandbox, inputs: dict[str, Any]) -> dict[str, Any]:
    """Perturb every item into ``out/<id>/``; write and return the summary manifest."""
    out.mkdir(parents=True, exist_ok=True)
    done: list[str] = []
    rejects: list[dict[str, Any]] = []
    statuses: dict[str, str] = {}
    counts = {"skipped": 0, "negatives": 0}
    try:
        _run_items(items, out, config, sandbox, done, rejects, statuses, counts)
    except KeyboardInterrupt:
        raise Interrupted(f"{len(done) + len(rejects)} of {len(items)} scripts finished in {out}; run the same command "
                          f"again to resume (finished scripts are skipped)") from None
    skipped, negatives = counts["skipped"], counts["negatives"]
    summary = {
        "inputs": inputs, "config": {**asdict(config), "edit_types": list(config.edit_types)},
        "items": len(items), "done": done, "rejects": rejects, "statuses": statuses,
        "status_counts": {s: n for s in STATUSES if (n := sum(v == s for v in statuses.values()))},
        "skipped": skipped, "negatives": negatives,
    }
    atomic_write_json(out / MANIFEST, summary)
    return summary


def _run_items(items: list[BatchItem], out: Path, config: PerturbConfig, sandbox, done: list, rejects: list,
               statuses: dict, counts: dict) -> None:
    """Perturb the items in order, filling ``done``, ``rejects``, ``statuses`` and ``counts`` as it goes (so an
    interrupted batch can say how far it got)."""
    for item in tqdm(items, desc="perturb-batch", unit="script", disable=len(items) < 10):
        folder = out / item.id
        if item.error:
            statuses[item.id] = "error"
            rejects.append({"id": item.id, "source": item.source, "status": "error", "reason": item.error})
            continue
        fingerprint = _fingerprint(item, config)
        previous = _finished(folder, fingerprint)
        if previous is not None:
            counts["skipped"] += 1
            manifest = previous
        else:
            if folder.exists() and not _ours(folder):
                statuses[item.id] = "error"
                rejects.append({"id": item.id, "source": item.source, "status": "error",
                                "reason": f"{folder} holds files that perturb-batch did not write; it is never replaced"})
                continue
            if folder.exists():
                shutil.rmtree(folder)  # a half-written or outdated item: start it afresh
            perturb_script(item.script, folder, config, sandbox, caption=item.caption, source=item.source)
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            manifest["fingerprint"] = fingerprint
            atomic_write_json(folder / MANIFEST, manifest)  # the resume marker, written last
        counts["negatives"] += len(manifest["negatives"])
        status = statuses[item.id] = manifest.get("status", "ok" if manifest["ok"] else "error")
        if manifest["ok"] and status == "ok":
            done.append(item.id)
        else:
            rejects.append({"id": item.id, "source": item.source, "status": status, "reason": manifest["message"]})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference-json", type=Path, default=None,
                        help="records with a code/script field (see docs/scripts.md)")
    parser.add_argument("--scripts-dir", type=Path, default=None,
                        help="folder of NAME.py scripts with optional NAME.txt captions; with --reference-json, "
                        "where <image stem>.py is looked up for records without a script")
    parser.add_argument("--out", type=Path, required=True, help="output directory (one subfolder per script)")
    add_perturb_arguments(parser)
    add_sandbox_arguments(parser)
    parser.add_argument("--workers", type=int, default=2, help="sandbox workers shared by the batch (default 2)")


def run_cli(args: argparse.Namespace) -> int:
    """``mmgeolm-data perturb-batch``: 0 when every script got its negatives, 1 when some were rejected
    (listed in ``OUT/manifest.json``); bad input raises and exits 2 on the one error path."""
    config = build_perturb_config(args)
    if args.reference_json is None and args.scripts_dir is None:
        raise InputError("give --reference-json FILE or --scripts-dir DIR (or both: DIR then maps images to scripts)")
    if args.scripts_dir is not None and not args.scripts_dir.is_dir():
        raise InputError(f"--scripts-dir {args.scripts_dir}: not a directory")
    check_output_dir(args.out)
    inputs = {"reference_json": str(args.reference_json or ""), "scripts_dir": str(args.scripts_dir or "")}
    if args.reference_json is None:
        items = items_from_scripts_dir(args.scripts_dir)
        if not items:
            raise InputError(f"--scripts-dir {args.scripts_dir}: no *.py script in it")
    else:
        items = items_from_reference_json(args.reference_json, args.scripts_dir)
        if not items:
            raise InputError(f"{args.reference_json}: no records (expected a JSON list of records or JSON lines)")
    sandbox = build_sandbox(args, args.workers, "perturb-batch")
    sandbox.start()
    with sandbox:
        summary = run_batch(items, args.out, config, sandbox, inputs)
    print(f"perturb-batch: {len(summary['done'])} of {summary['items']} scripts done "
          f"(skipped {summary['skipped']} finished earlier), {summary['negatives']} negatives, "
          f"{len(summary['rejects'])} rejected -> {args.out / MANIFEST}")
    for reject in summary["rejects"][:20]:
        logger.warning("rejected %s (%s): %s", reject["id"], reject["status"], reject["reason"])
    if len(summary["rejects"]) > 20:
        logger.warning("... and %d more rejected (all in %s)", len(summary["rejects"]) - 20, args.out / MANIFEST)
    return 0 if not summary["rejects"] else 1
