"""Caption hard negatives of two kinds, and the ``mmgeolm-data text-negatives`` command.

- ``rule``: the caption itself edited by the rules of :mod:`data_recipes.text_negatives.rules` (concept swaps,
  vertex letters, numbers, relations); each negative lists the rules applied.
- ``retrieval``: the captions of other items most similar to this one
  (:mod:`data_recipes.text_negatives.retrieval`), without duplicates or captions whose facts all hold here.

``num`` negatives of each requested kind per item; an item that gets fewer is reported, never padded.
"""
from __future__ import annotations

import argparse
import json
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data_recipes.formats.reference import caption_from_conversations
from data_recipes.text_negatives.retrieval import list_backends, retrieve_neighbours
from data_recipes.text_negatives.rules import generate_rule_negatives
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import FormatError, atomic_write_json, atomic_write_text, check_output_file, read_records

KINDS = ("rule", "retrieval")


def _item_problem(item: Any) -> tuple[str | None, str] | None:
    """``(key, what is wrong)`` for an item that is not ``{"id": str, "caption": str, "facts"?: [str]}``."""
    if not isinstance(item, dict):
        return None, f"expected an object with 'id' and 'caption', got {type(item).__name__}"
    for key in ("id", "caption"):
        if not isinstance(item.get(key), str):
            return key, f"expected a string, got {item.get(key)!r:.80}"
    facts = item.get("facts")
    if facts is not None and not (isinstance(facts, list) and all(isinstance(f, str) for f in facts)):
        return "facts", f"expected a list of strings, got {facts!r:.80}"
    return None


def item_rng(seed: int, item_id: str) -> np.random.Generator:
    """The generator of one item, from the run seed and the item id (not its position)."""
    return np.random.default_rng([seed, zlib.crc32(item_id.encode("utf-8"))])


def generate_text_negatives(
    items: list[dict],
    num: int,
    kinds: Sequence[str] = ("rule", "retrieval"),
    seed: int = 0,
    backend: str = "tfidf",
) -> tuple[list[dict], list[dict]]:
    """Rule- and retrieval-based caption negatives for every item.

    Args:
        items: ``[{"id": str, "caption": str, "facts": optional list[str]}]``.
        num: negatives of each kind per item.
        kinds: any of "rule", "retrieval".
        seed: run seed; output is a function of (seed, items).
        backend: retrieval backend name ("tfidf" or "embedding").

    Returns:
        (lines, reports): ``lines[i] = {"id", "caption", "negatives": [{"caption", "kind", "rules"}]}`` in
        input order; ``reports = [{"id", "kind", "reason"}]`` for items that got fewer than ``num``.

    Raises:
        InputError: an item lacks a string id/caption or has malformed facts.
        ValueError: unknown kind or negative ``num``.
    """
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown negative kind(s) {unknown or kinds}; expected a non-empty subset of {list(KINDS)}")
    if num < 0:
        raise ValueError(f"num must be >= 0, got {num}")
    for i, item in enumerate(items):
        problem = _item_problem(item)
        if problem:
            key, reason = problem
            raise InputError(f"item {i}: " + (f"key '{key}': " if key else "") + reason)
    lines = [{"id": it["id"], "caption": it["caption"], "negatives": []} for it in items]
    reports: list[dict] = []
    if "rule" in kinds:
        for item, line in zip(items, lines):
            negatives, reason = generate_rule_negatives(item["caption"], num, item_rng(seed, item["id"]))
            line["negatives"].extend({"caption": n.caption, "kind": "rule", "rules": list(n.rules)} for n in negatives)
            if reason:
                reports.append({"id": item["id"], "kind": "rule", "reason": reason})
    if "retrieval" in kinds and num > 0:
        facts = [it.get("facts") for it in items]
        found = retrieve_neighbours([it["caption"] for it in items], num, facts=facts, backend=backend,
                                    progress=len(items) > 20000)
        for item, line, neighbours in zip(items, lines, found):
            have = {item["caption"]} | {n["caption"] for n in line["negatives"]}
            for j, s in zip(neighbours.indices, neighbours.scores):
                if items[j]["caption"] not in have:  # a rule negative may equal another item's caption
                    have.add(items[j]["caption"])
                    line["negatives"].append({"caption": items[j]["caption"], "kind": "retrieval", "rules": [],
                                              "source_id": items[j]["id"], "similarity": round(s, 4)})
            got = sum(n["kind"] == "retrieval" for n in line["negatives"])
            if got < num:
                reports.append({"id": item["id"], "kind": "retrieval", "reason": (
                    f"only {got} other captions are similar (cosine > 0) once duplicates, "
                    "near duplicates and captions true of this image are excluded")})
    return lines, reports


# --------------------------------------------------------------------------- input files


def _item_from_record(record: Any, path: Path, where: str, index: int) -> dict:
    """An item from a JSONL ``{id?, caption, facts?}`` line or a reference-format record."""
    if isinstance(record, dict) and "caption" not in record and "conversations" in record:
        image = record.get("positive_image_path", record.get("image"))
        if image is not None and not isinstance(image, str):
            raise FormatError(path, f"expected a string, got {image!r:.80}", where=where, key="positive_image_path")
        item = {"id": image if image is not None else str(index),
                "caption": caption_from_conversations(record["conversations"], path, where)}
    elif isinstance(record, dict) and "caption" in record:
        item = {"id": record.get("id", str(index)), "caption": record["caption"]}
        if "facts" in record:
            item["facts"] = record["facts"]
    elif isinstance(record, dict):
        raise FormatError(path, "expected key 'caption' (JSONL items) or 'conversations' (reference format)", where=where)
    else:
        item = record
    problem = _item_problem(item)
    if problem:
        raise FormatError(path, problem[1], where=where, key=problem[0])
    return item


def read_items(path: str | Path) -> list[dict]:
    """Items from a JSONL file of ``{"id", "caption", "facts"?}`` or a reference-format JSON list.

    Raises:
        FormatError: naming the file, the line or record number and the key.
    """
    path = Path(path)
    items = [_item_from_record(record, path, where, i) for i, (where, record) in enumerate(read_records(path))]
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item["id"] in seen:
            raise FormatError(path, f"{item['id']!r} repeats record {seen[item['id']]}", where=f"record {i}", key="id")
        seen[item["id"]] = i
    return items


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in", dest="input", required=True, help="JSONL of {id, caption, facts?} or reference-format JSON")
    parser.add_argument("--out", required=True, help="output JSONL; reports go to OUT.report.json")
    parser.add_argument("--num", type=int, default=5, help="negatives of each kind per caption (default 5)")
    parser.add_argument("--kinds", default="rule,retrieval", help="comma-separated subset of rule,retrieval")
    parser.add_argument("--backend", default="tfidf", choices=list_backends(), help="retrieval similarity")
    parser.add_argument("--seed", type=int, default=0)


def _report_path(out: Path) -> Path:
    return out.with_name(out.name[: -len(".jsonl")] + ".report.json" if out.name.endswith(".jsonl") else out.name + ".report.json")


def run_cli(args: argparse.Namespace) -> int:
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    out = check_output_file(args.out)
    items = read_items(args.input)
    if not items:
        raise InputError(f"{args.input}: no records (expected JSON lines of {{id, caption}} or reference records)")
    try:
        lines, reports = generate_text_negatives(items, args.num, kinds, args.seed, args.backend)
    except ValueError as err:  # unknown kinds or a negative --num: a bad command line
        raise InputError(str(err)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    counts = Counter(n["kind"] for line in lines for n in line["negatives"])
    short = Counter(r["kind"] for r in reports)
    summary = {"input": str(args.input), "items": len(items), "num": args.num, "kinds": kinds, "seed": args.seed,
               "backend": args.backend, "negatives": dict(counts), "short": dict(short), "reports": reports}
    atomic_write_json(_report_path(out), summary)
    print(f"{len(items)} captions -> {out}: " + ", ".join(f"{counts[k]} {k}" for k in kinds) + " negatives")
    for kind in kinds:
        if short[kind]:
            print(f"  {short[kind]} captions got fewer than {args.num} {kind} negatives (see {_report_path(out)})")
    return 0
