"""The report's headline comparison and ``report/summary.json``, read from a run's own files.

- :func:`write_summary`: ``report/summary.json``, the contract a check reads::

      {"tower": {"val_t2i_hard": float, "chance": float},
       "e2e": {"original": float, "in_batch": float, "hard_negatives": float, "blind_guess": float,
               "metric": "paired yes/no accuracy", "seeds": int}}

  ``tower`` is the encoder the main LLaVA chain uses (its caption -> image accuracy among the image hard
  negatives of the val split, mean over the ablation's seeds, from ``ablation/ablation.json``, or from
  ``eval/eval.json`` when the tower is the mmclip stage's); ``e2e`` the rows' paired accuracy, mean over
  seeds, from ``e2e/e2e.json``.
- :func:`e2e_section`: the comparison as the paper's table shows it, with the paper's rows beside ours.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mmgeolm.bench.paper import PUBLISHED
from mmgeolm.run_layout import RunLayout
from mmgeolm_core.config import load_yaml_mapping
from mmgeolm_core.io import atomic_write_json, read_json

ROW_LABELS = {
    "original": ("original tower (the encoder the arms start from)", "same, original tower (paper)"),
    "in_batch": ("tower fine-tuned with random in-batch negatives", "same, tower fine-tuned with random in-batch negatives (paper)"),
    "hard_negatives": ("tower fine-tuned with hard negatives (MMGeoLM)", "MMGeoLM-Qwen2.5-7B (paper)"),
}


def read_stage_json(path: Path) -> Any:
    """A stage's JSON output, None when the stage did not write it.

    Raises:
        FormatError: the file is there but broken (naming it and the line), rather than a report that is silently wrong.
    """
    return read_json(path) if path.is_file() else None


def _recipe(run: RunLayout) -> dict[str, Any]:
    return load_yaml_mapping(run.recipe, "run recipe") if run.recipe.is_file() else {}


def tower_result(run: RunLayout) -> dict[str, Any] | None:
    """The val evaluation of the encoder the main LLaVA chain uses (an ablation arm's seed mean, or the
    eval stage's), or None when it was not measured on val."""
    tower = (_recipe(run).get("llava") or {}).get("tower", "mmclip")
    if tower.startswith("ablation:"):
        result = (read_stage_json(run.ablation / "ablation.json") or {}).get(tower.split(":", 1)[1])
    else:
        evaluation = read_stage_json(run.eval_json) or {}
        result = evaluation if "t2i_hard_acc" in evaluation else next(iter(evaluation.values()), None)
    if not result or result.get("split") not in (None, "val") or result.get("t2i_hard_acc") is None:
        return None
    return result


def tower_figures(run: RunLayout) -> dict[str, float] | None:
    """``{"val_t2i_hard", "chance"}`` of the encoder the main LLaVA chain uses, or None when not measured."""
    result = tower_result(run)
    if result is None:
        return None
    return {"val_t2i_hard": float(result["t2i_hard_acc"]), "chance": float(result["chance"]["t2i_hard_acc"])}


def e2e_figures(run: RunLayout) -> dict[str, Any] | None:
    """The contract's ``e2e`` object from ``e2e/e2e.json``, or None when the stage did not run."""
    result = read_stage_json(run.e2e_json)
    if not result:
        return None
    out: dict[str, Any] = {row: float(result["rows"][row]["paired"]["mean"]) for row in ROW_LABELS}
    out.update(blind_guess=float(result["blind_guess"]), metric=result["metric"], seeds=len(result["seeds"]))
    return out


def write_summary(run: Path) -> dict[str, Any] | None:
    """Write ``report/summary.json`` from the run's files; None (nothing written) when neither part exists."""
    layout = RunLayout(run)
    summary = {key: value for key, value in (("tower", tower_figures(layout)), ("e2e", e2e_figures(layout)))
               if value is not None}
    if not summary:
        return None
    layout.report.mkdir(parents=True, exist_ok=True)
    atomic_write_json(layout.summary, summary)
    return summary


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _ci(estimate: dict[str, Any]) -> str:
    lo, hi = estimate["ci95"]
    if estimate["mean"] is None:
        return "n/a"
    return f"{_pct(estimate['mean'])} [{_pct(lo)}, {_pct(hi)}]"


def encoder_interval(result: dict[str, Any], key: str) -> list[float] | None:
    """95% bootstrap interval over the val samples of an arm's ``key`` hits (``t2i_hard`` or ``t2i_paired``),
    mean over its seeds; None when the evaluation kept no per-row hits."""
    from mmgeolm.e2e import bootstrap_interval

    rows = [r.get("hits", {}).get(key) for r in (result.get("per_seed") or {}).values()]
    if not rows or any(not r for r in rows) or len({len(r) for r in rows}) != 1:
        return None
    return bootstrap_interval(rows)


def _with_interval(result: dict[str, Any], key: str, hits: str) -> str:
    interval = encoder_interval(result, hits)
    text = _pct(result.get(key))
    return text if interval is None else f"{text} [{_pct(interval[0])}, {_pct(interval[1])}]"


def _tower_cells(run: RunLayout, arm: str) -> str:
    result = (read_stage_json(run.ablation / "ablation.json") or {}).get(arm)
    if not result:
        return "n/a | n/a"
    return f"{_with_interval(result, 't2i_hard_acc', 't2i_hard')} | {_with_interval(result, 't2i_paired_acc', 't2i_paired')}"


def e2e_section(run: Path) -> list[str]:
    """The headline comparison in markdown (empty when the e2e stage did not run)."""
    layout = RunLayout(run)
    result = read_stage_json(layout.e2e_json)
    if not result:
        return []
    seeds = ", ".join(map(str, result["seeds"]))
    ablation = read_stage_json(layout.ablation / "ablation.json") or {}
    chance = next(iter(ablation.values()), {}).get("chance", {})
    lines = [
        "## The paper's headline in miniature: the same LLaVA with three towers", "",
        f"The same LLaVA stages (same LLM, data, steps) with each tower frozen, LLaVA seeds [{seeds}] (seed s takes "
        f"the arm's seed-s encoder), scored on {result['pairs']} held-out probe pairs: each yes/no question is "
        "asked on a diagram and on its image hard negative, and a pair counts only when both answers are right. "
        f"Mean over seeds with a 95% bootstrap interval over the pairs. A blind answerer scores "
        f"{_pct(result['blind_guess'])} (it answers both members alike), coin flips {_pct(result['random_guess'])}. "
        "The paper's column is GeoQA accuracy of a 7B model; ours is a different, much smaller measurement: "
        "compare the order of the rows, not the numbers.", "",
        "| tower | paper: GeoQA | ours: paired yes/no | per seed | per question | encoder, val: t2i hard "
        f"(chance {_pct(chance.get('t2i_hard_acc'))}) | encoder, val: t2i paired (chance {_pct(chance.get('t2i_paired_acc'))}) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row, (label, paper_row) in ROW_LABELS.items():
        r = result["rows"][row]
        per_seed = " / ".join(_pct(v) for v in r["paired"]["per_seed"].values())
        lines.append(f"| {label} (`{r['arm']}`) | {PUBLISHED[paper_row][0]:.1f} | **{_ci(r['paired'])}** | {per_seed} | "
                     f"{_ci(r['member'])} | {_tower_cells(layout, r['arm'])} |")
    lines += ["", "Differences (same pairs, paired bootstrap):", ""]
    for name, d in result["differences"].items():
        lo, hi = d["ci95"]
        lines.append(f"- `{name}`: {100 * d['mean']:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}]")
    lines += ["", _verdict(result), ""]
    relations = sorted(result["by_relation_pairs"])
    lines += ["Per question type (paired accuracy, mean over seeds, 95% interval; none of these needs reading "
              "letters):", "", "| relation | pairs | " + " | ".join(f"`{row}`" for row in ROW_LABELS) + " |",
              "|---|---:|" + "---:|" * len(ROW_LABELS)]
    for rel in relations:
        lines.append(f"| {rel} | {result['by_relation_pairs'][rel]} | "
                     + " | ".join(_ci(result["rows"][row]["by_relation"][rel]) for row in ROW_LABELS) + " |")
    if result.get("left_out_pairs_seen_in_train"):
        lines += ["", f"{result['left_out_pairs_seen_in_train']} more pairs were left out: one of their pictures "
                      "is also a picture of the training split (the engine draws some identical diagrams from "
                      "different seeds)."]
    return [*lines, ""]


def _verdict(result: dict[str, Any]) -> str:
    """What the numbers say, in words, with the numbers (an absent effect is said to be absent)."""
    rows = result["rows"]
    hard, inb = rows["hard_negatives"]["paired"], rows["in_batch"]["paired"]
    diff = result["differences"].get("hard_negatives - in_batch")
    blind = result["blind_guess"]
    parts = []
    lift = hard["mean"] - blind
    parts.append(f"LLaVA with the hard-negative tower scores {100 * lift:+.1f} points over the blind answerer "
                 f"({'at least' if lift >= 0.10 else 'short of'} the +10 aimed at; interval {_ci(hard)}).")
    if diff is not None:
        lo, hi = diff["ci95"]
        if hard["mean"] >= inb["mean"]:
            sure = "an interval above 0" if lo > 0 else "but its interval includes 0: not an established effect"
            parts.append(f"Hard negatives ≥ in-batch end to end: {100 * diff['mean']:+.1f} points ({sure}).")
        else:
            parts.append(f"The hard-negative tower does **not** beat the in-batch one end to end here: "
                         f"{100 * diff['mean']:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}].")
    parts.append(f"The intervals resample the pairs for these {len(result['seeds'])} LLaVA training seeds; they do not "
                 "measure how far another training run would move a row (compare the per-seed column).")
    return " ".join(parts)
