"""The paper's table (MMGeoLM, arXiv 2505.20152) and our row beside it, from a run's ``bench/*/scores.json``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# column -> (benchmark, key in its scores.json)
COLUMNS = {"GeoQA": ("geoqa", "accuracy"), "MathVista GEO": ("mathvista", "accuracy"), "We-Math S2": ("wemath", "S2"),
           "We-Math S3": ("wemath", "S3"), "MM-Math": ("mmmath", "accuracy")}
# accuracy in %, as published
PUBLISHED = {
    "MMGeoLM-Qwen2.5-7B (paper)": (69.2, 69.8, 39.8, 36.4, 39.2),
    "same, tower fine-tuned with random in-batch negatives (paper)": (56.3, 54.1, 35.2, 35.1, 34.3),
    "same, original tower (paper)": (50.7, 47.6, 33.1, 32.7, 33.7),
    "GPT-4o (paper)": (58.9, 62.7, 58.0, 43.6, 31.8),
}


def read_scores(bench_dir: Path) -> dict[str, dict[str, Any]]:
    """``{benchmark: scores}`` for every ``<bench_dir>/<benchmark>/scores.json``."""
    out = {}
    for path in sorted(Path(bench_dir).glob("*/scores.json")):
        data = json.loads(path.read_text())
        out[data.get("benchmark", path.parent.name)] = data
    return out


def _cell(scores: dict[str, dict[str, Any]], bench: str, key: str) -> str:
    value = scores.get(bench, {}).get(key)
    if value is None:
        return "–"
    return f"{100 * value:.1f} (n={scores[bench]['num_items']})"


def paper_table(scores: dict[str, dict[str, Any]], label: str = "this run") -> list[str]:
    """Markdown rows: the published rows, then ours (``–`` where this run has no such benchmark)."""
    lines = ["| model | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for name, row in PUBLISHED.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.1f}" for v in row) + " |")
    lines.append(f"| **{label}** | " + " | ".join(_cell(scores, b, k) for b, k in COLUMNS.values()) + " |")
    return lines


def probe_lines(scores: dict[str, Any]) -> list[str]:
    """The probe's paired accuracy with its baselines, and its per-perturbation breakdown."""
    base = scores["baselines"]
    lines = [f"Paired accuracy (both members right) **{100 * scores['accuracy']:.1f}%** on {scores['num_pairs']} pairs; "
             f"per question {100 * scores['member_accuracy']:.1f}%. A blind answerer scores {100 * base['blind']:.0f}% "
             f"(it answers both members alike); random yes/no guessing {100 * base['chance_yes_no']:.0f}% on yes/no "
             f"pairs. Same answer on both members: {_pct(scores.get('same_answer_rate'))}; share of 'yes': "
             f"{_pct(scores.get('yes_rate'))}.", "",
             "| perturbation | paired accuracy (%) | pairs |", "|---|---|---|"]
    for name, row in scores["paired_by_perturbation"].items():
        accuracy = "n/a" if row["accuracy"] is None else f"{100 * row['accuracy']:.1f}"
        lines.append(f"| {name} | {accuracy} | {row['total']} |")
    return lines


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def bench_section(bench_dir: Path, tiny: bool) -> list[str]:
    """The report's benchmark section (empty when the run scored nothing)."""
    scores = read_scores(bench_dir)
    if not scores:
        return []
    md = ["## Geometry benchmarks", ""]
    if tiny:
        md += ["The demo's model is tiny and trained for minutes on our diagrams, and the benchmark files are small "
               "samples written by us in each benchmark's native format: the numbers show that generation and the "
               "official scorers run end to end. A tiny model scores near chance (a guess among 4 options: 25%) "
               "or below it, since replies with no readable answer count as wrong. They are not comparable with "
               "the paper's.", ""]
    md += paper_table(scores)
    md += ["", "Scoring: " + ", ".join(f"{b} `{s['mode']}` ({s['num_unparsed']} unparsed, {s['num_missing']} missing)"
                                       for b, s in scores.items()) + "; per-item results in `bench/<name>/`."]
    if "probe" in scores:
        md += ["", "### Perception probe (ours)", "", *probe_lines(scores["probe"])]
    return md
