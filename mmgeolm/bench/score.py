"""Scoring: responses -> per-item results and the benchmark's metrics, written as results.jsonl, scores.json,
a bar chart and report.md.

Items without a response count as wrong and are listed (``missing_ids``); responses from which neither
the rules nor the judge read an answer count as wrong and are counted (``num_unparsed``).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmgeolm.bench.base import MODES, Benchmark, Extraction, Item
from mmgeolm.bench.judge import Judge
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
SCORES_FILE = "scores.json"
REPORT_FILE = "report.md"
FIGURE_FILE = "scores.png"


@dataclass
class Scored:
    """Per-item results (``id``, ``extracted``, ``answer``, ``correct``, ``method``, ``rule``) and the metrics."""

    results: list[dict[str, Any]]
    scores: dict[str, Any]


def _judge(bench: Benchmark, item: Item, response: str, judge: Judge) -> Extraction:
    prompt = bench.judge_prompt(item, response)
    if prompt is None:
        return Extraction.none()
    value = bench.parse_judge(item, judge.ask(prompt))
    return Extraction(value, "judge", "judge") if value is not None else Extraction.none("judge")


def score_items(bench: Benchmark, items: list[Item], responses: dict[str, str], mode: str = "robust",
                judge: Judge | None = None) -> Scored:
    """Extract, judge where the rules abstain (when a judge is given), check, and compute the metrics."""
    if mode not in MODES:
        raise InputError(f"--mode {mode!r}: expected one of {list(MODES)}")
    results, correct, extracted = [], {}, {}
    for item in items:
        response = responses.get(item.id)
        if response is None:
            found = Extraction.none("missing")
        else:
            found = bench.extract(item, response, mode)
            if found.value is None and judge is not None:
                found = _judge(bench, item, response, judge)
        ok = bool(bench.is_correct(item, found.value, mode))
        correct[item.id], extracted[item.id] = ok, found.value
        results.append({"id": item.id, "extracted": found.value, "answer": item.answer, "correct": ok,
                        "method": found.method, "rule": found.rule, "missing": response is None})
    scores = {"benchmark": bench.name, "mode": mode, **bench.metrics(items, correct, mode, extracted)}
    missing = [r["id"] for r in results if r["missing"]]
    scores.update(num_items=len(items), num_unparsed=sum(r["method"] == "none" and not r["missing"] for r in results),
                  num_missing=len(missing), missing_ids=missing,
                  num_judged=sum(r["method"] == "judge" for r in results),
                  judge=judge.stats() if judge is not None else None)
    return Scored(results, scores)


def write_scores(out_dir: str | os.PathLike, bench: Benchmark, scored: Scored, title: str | None = None) -> Path:
    """``results.jsonl``, ``scores.json``, ``scores.png`` and ``report.md`` in ``out_dir`` (each atomic)."""
    from mmgeolm.bench.report import plot_scores, render_report  # matplotlib only when writing

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / RESULTS_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in scored.results))
    atomic_write_json(out / SCORES_FILE, scored.scores)
    figure = plot_scores(bench, scored.scores, out / FIGURE_FILE)
    atomic_write_text(out / REPORT_FILE, render_report(bench, scored, figure.name if figure else None, title))
    return out
