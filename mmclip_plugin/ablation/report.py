"""Reporting of an ablation: seed means of evaluation JSON and the markdown table (``ablation.md``)."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mmclip_plugin.ablation.config import AblationConfig


def mean_tree(trees: Sequence[Any]) -> Any:
    """Element-wise mean of JSON trees of the same shape (numbers averaged, None ignored, the rest from the first)."""
    first = trees[0]
    if isinstance(first, dict):
        keys = list(dict.fromkeys(k for t in trees if isinstance(t, dict) for k in t))
        return {k: mean_tree([t[k] for t in trees if isinstance(t, dict) and k in t]) for k in keys}
    numbers = [t for t in trees if isinstance(t, int | float) and not isinstance(t, bool)]
    if numbers and len(numbers) == len([t for t in trees if t is not None]):
        return sum(numbers) / len(numbers)
    return first


def summarise_seeds(runs: Mapping[int, dict[str, Any]]) -> dict[str, Any]:
    """An arm's evaluation JSON averaged over seeds, with ``seeds`` and every seed's JSON in ``per_seed``."""
    seeds = list(runs)
    summary = mean_tree([runs[s] for s in seeds])
    for key in ("checkpoint", "seed", "hits"):  # per-row hits stay per seed: a mean of lists means nothing
        summary.pop(key, None)
    summary["seeds"] = seeds
    summary["per_seed"] = {str(s): runs[s] for s in seeds}
    return summary


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _cell(result: dict[str, Any], get: Callable[[dict[str, Any]], float | None]) -> str:
    per_seed = [get(r) for r in result["per_seed"].values()]
    mean = get(result)
    if len(per_seed) == 1:
        return _pct(mean)
    return f"{_pct(mean)} ({' / '.join(_pct(v) for v in per_seed)})"


def format_table(ablation: AblationConfig, results: Mapping[str, dict[str, Any]]) -> str:
    """The markdown report: main table (mean and per-seed), per-kind and per-type tables, the key difference."""
    metrics = [
        ("t2i hard (caption->image)", lambda r: r["t2i_hard_acc"]),
        ("t2i paired (both captions)", lambda r: r.get("t2i_paired_acc")),
        ("i2t hard (image->caption)", lambda r: r["i2t_hard_acc"]),
        ("t2i R@1", lambda r: r["retrieval"]["t2i_r1"]),
        ("i2t R@1", lambda r: r["retrieval"]["i2t_r1"]),
    ]
    seeds = ", ".join(str(s) for s in ablation.seeds)
    first = next(iter(results.values()))
    chance = first["chance"]
    lines = [
        f"# Ablation: {ablation.name}",
        "",
        f"Held-out split `{ablation.eval_split}` ({round(first['counts']['samples'])} samples"
        + (f"; {round(first['left_out_seen_in_train'])} more left out, their picture also in train"
           if first.get("left_out_seen_in_train") else "") + "), accuracy in %, "
        f"mean over seeds [{seeds}] with each seed in parentheses. Budget: equal "
        f"{'encoded images' if ablation.match == 'images' else 'optimizer steps'} per arm.",
        "",
        "| arm | steps | images | " + " | ".join(m for m, _ in metrics) + " | train s |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in metrics) + " | ---: |",
    ]
    for name, r in results.items():
        cells = " | ".join(_cell(r, get) for _, get in metrics)
        lines.append(f"| {r.get('label', name)} (`{name}`) | {round(r.get('steps', 0))} | {round(r.get('images', 0))} | "
                     f"{cells} | {r.get('train_seconds', 0):.0f} |")
    lines.append(f"| chance | | | {_pct(chance['t2i_hard_acc'])} | {_pct(chance.get('t2i_paired_acc'))} | "
                 f"{_pct(chance['i2t_hard_acc'])} | "
                 f"{_pct(chance['r1'])} | {_pct(chance['r1'])} | |")
    kinds = list(dict.fromkeys(k for r in results.values() for k in r["per_kind"]))
    if kinds:
        lines += ["", "Image -> caption accuracy against each kind of caption negative only (chance in the header):", "",
                  "| arm | " + " | ".join(f"{k} ({_pct(first['per_kind'].get(k, {}).get('chance'))})" for k in kinds) + " |",
                  "| --- | " + " | ".join("---:" for _ in kinds) + " |"]
        for name, r in results.items():
            lines.append(f"| `{name}` | " + " | ".join(
                _cell(r, lambda x, k=k: x["per_kind"].get(k, {}).get("acc")) for k in kinds) + " |")
    types = sorted({t for r in results.values() for t in r["per_type"]})
    if types:
        lines += ["", "Caption -> image pairwise accuracy per perturbation type (mean over seeds; chance 50):", "",
                  "| type | n | " + " | ".join(f"`{n}`" for n in results) + " |",
                  "| --- | ---: | " + " | ".join("---:" for _ in results) + " |"]
        for t in types:
            n = first["per_type"].get(t, {}).get("t2i_n", 0)
            lines.append(f"| {t} | {round(n)} | " + " | ".join(
                _pct(r["per_type"].get(t, {}).get("t2i_acc")) for r in results.values()) + " |")
    if "image" in results and "in_batch" in results:
        a, b = results["image"], results["in_batch"]
        deltas = [100 * (a["per_seed"][s]["t2i_hard_acc"] - b["per_seed"][s]["t2i_hard_acc"])
                  for s in a["per_seed"] if s in b["per_seed"]]
        lines += ["", f"Caption -> image hard accuracy, `image` minus `in_batch`: "
                      f"{100 * (a['t2i_hard_acc'] - b['t2i_hard_acc']):+.1f} points "
                      f"(per seed: {', '.join(f'{d:+.1f}' for d in deltas)})."]
    return "\n".join(lines) + "\n"
