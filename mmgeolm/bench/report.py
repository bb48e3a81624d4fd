"""A benchmark's ``report.md`` and bar chart, from its scores."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mmgeolm.bench.base import Benchmark  # noqa: E402

MAX_LISTED = 20


def pct(x: Any) -> str:
    """``0.4567`` -> ``45.7``; None -> ``n/a``."""
    return "n/a" if x is None else f"{100 * x:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _breakdown_rows(table: dict[str, Any]) -> list[list[str]]:
    return [[str(k), pct(v.get("accuracy")), f"{v.get('correct', '')}/{v.get('total', '')}"]
            for k, v in table.items() if isinstance(v, dict)]


def plot_scores(bench: Benchmark, scores: dict[str, Any], path: str | os.PathLike) -> Path | None:
    """A bar chart: the headline numbers, then the first breakdown's groups (accuracy in %)."""
    bars = [(key, scores.get(key)) for key in bench.headline if isinstance(scores.get(key), int | float)]
    first = next((scores[k] for k in bench.breakdowns if isinstance(scores.get(k), dict) and scores[k]), {})
    bars += [(str(k), v.get("accuracy")) for k, v in list(first.items())[:16] if isinstance(v, dict)]
    bars = [(k, v) for k, v in bars if v is not None]
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(bars) + 1.5), 3.2))
    colours = ["#2b6cb0" if i < len(bench.headline) else "#90cdf4" for i in range(len(bars))]
    ax.bar(range(len(bars)), [100 * v for _, v in bars], color=colours)
    ax.set_xticks(range(len(bars)), [k for k, _ in bars], rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{bench.name} ({scores.get('mode')}), {scores.get('num_items')} items", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def render_report(bench: Benchmark, scored: Any, figure: str | None, title: str | None = None) -> str:
    """The markdown report of one scoring run."""
    s = scored.scores
    md = [f"# {title or bench.title}", "",
          f"Scoring mode `{s['mode']}`; {s['num_items']} items, {s['num_unparsed']} unparsed "
          f"(no answer read: counted wrong), {s['num_missing']} without a prediction (counted wrong), "
          f"{s['num_judged']} decided by the judge.", ""]
    md += _table(["metric", "value (%)"], [[k, pct(s.get(k))] for k in bench.headline])
    extra = {k: v for k, v in s.items() if k in getattr(bench, "extra_numbers", ())}
    if extra:
        md += ["", *_table(["", "value"], [[k, str(v)] for k, v in extra.items()])]
    if figure:
        md += ["", f"![scores]({figure})"]
    for key in bench.breakdowns:
        table = s.get(key)
        if isinstance(table, dict) and table:
            md += ["", f"## {key}", "", *_table(["group", "accuracy (%)", "correct/total"], _breakdown_rows(table))]
    if s["missing_ids"]:
        shown = ", ".join(map(str, s["missing_ids"][:MAX_LISTED]))
        more = f" and {len(s['missing_ids']) - MAX_LISTED} more" if len(s["missing_ids"]) > MAX_LISTED else ""
        md += ["", f"Items without a prediction: {shown}{more}."]
    unparsed = [r["id"] for r in scored.results if r["method"] == "none" and not r["missing"]]
    if unparsed:
        more = f" and {len(unparsed) - MAX_LISTED} more" if len(unparsed) > MAX_LISTED else ""
        md += ["", f"Unparsed responses: {', '.join(map(str, unparsed[:MAX_LISTED]))}{more}."]
    if s.get("judge"):
        j = s["judge"]
        md += ["", f"Judge: {j['model']} at {j['url']}, {j['requests']} requests, {j['cache_hits']} answered "
                   "from the cache."]
    return "\n".join(md) + "\n"
