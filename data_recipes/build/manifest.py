"""The aggregate side of a build: the caption-negative post-pass and the manifest's counts and stats.

Both run over all samples of a build (or shard), in index order, after every sample is done; both
are deterministic, so the manifest is byte-identical across worker counts and interruptions.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from data_recipes.build.recipe import Recipe

MAX_REPORTS = 50  # the manifest lists the first reports of the post-pass; "short" counts them all


def run_text_post_pass(recipe: Recipe, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Add rule / retrieval caption negatives to ``samples`` in place (when the recipe asks for them).

    Calls ``data_recipes.text_negatives.generate.generate_text_negatives(items, num, kinds, seed)`` once over
    all samples (retrieval needs the whole pool).

    Returns:
        The manifest's ``text_negatives`` section: status, kinds, counts per kind and the reports.
    """
    cfg = recipe.text_negatives
    kinds = list(cfg.post_pass_kinds)
    report: dict[str, Any] = {"kinds": list(cfg.kinds), "num": cfg.num, "status": "done", "short": {}, "reports": []}
    if kinds and cfg.num > 0 and samples:
        from data_recipes.text_negatives.generate import generate_text_negatives  # scikit-learn: only when needed

        items = [{"id": s["id"], "caption": s["caption"], "facts": s["facts"]} for s in samples]
        lines, reports = generate_text_negatives(items, cfg.num, kinds, recipe.seed)
        by_id = {line["id"]: line["negatives"] for line in lines}
        for sample in samples:
            have = {t["caption"] for t in sample["text_negatives"]} | {sample["caption"]}
            for negative in by_id.get(sample["id"], []):
                if negative["caption"] not in have:
                    have.add(negative["caption"])
                    sample["text_negatives"].append(
                        {"caption": negative["caption"], "kind": negative["kind"], "rules": list(negative.get("rules", []))}
                    )
        report["short"] = dict(sorted(Counter(str(r.get("kind", "?")) for r in reports).items()))
        report["reports"] = [
            {"id": r["id"], "kind": r.get("kind"), "reason": r["reason"]} for r in reports[:MAX_REPORTS]
        ]
    report["counts"] = dict(sorted(Counter(t["kind"] for s in samples for t in s["text_negatives"]).items()))
    return report


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": round(min(values), 6), "mean": round(sum(values) / len(values), 6), "max": round(max(values), 6)}


def _hardness(negatives: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "count": len(negatives),
        "changed_fraction": _stats([n["hardness"]["changed_fraction"] for n in negatives]),
        "ssim": _stats([n["hardness"]["ssim"] for n in negatives]),
    }


def build_manifest(
    recipe: Recipe, parts: Sequence[dict[str, Any]], samples: Sequence[dict[str, Any]], text_report: dict[str, Any]
) -> dict[str, Any]:
    """Counts per family / perturbation type / split, hardness stats, rejects and shortfalls."""
    negatives = [n for s in samples for n in s["negatives"]]
    types = sorted({n["type"] for n in negatives})
    negative_rejects: dict[str, Counter] = {}
    for part in parts:
        for rejected in part.get("negative_rejects", []):
            category = rejected["reason"].split(":", 1)[0]
            negative_rejects.setdefault(rejected["type"], Counter())[category] += 1
    short = [p for p in parts if p["status"] == "ok" and p["shortfall"] > 0]
    return {
        "counts": {
            "requested": len(parts),
            "accepted": len(samples),
            "rejected": len(parts) - len(samples),
            "negatives": len(negatives),
            "images": len(samples) + len(negatives),
            "by_family": dict(sorted(Counter(s["family"] for s in samples).items())),
            "by_perturbation": dict(sorted(Counter(n["type"] for n in negatives).items())),
            "by_split": dict(sorted(Counter(s["split"] for s in samples).items())),
        },
        "hardness": {
            "thresholds": {
                "min_changed_fraction": recipe.negatives.min_changed_fraction, "min_ssim": recipe.negatives.min_ssim,
            },
            "all": _hardness(negatives),
            "by_perturbation": {t: _hardness([n for n in negatives if n["type"] == t]) for t in types},
        },
        "negative_rejects": {t: dict(sorted(c.items())) for t, c in sorted(negative_rejects.items())},
        "rejects": [{"index": p["index"], "id": p["id"], "reason": p["reason"]} for p in parts if p["status"] != "ok"],
        "shortfalls": {
            "samples": len(short),
            "missing_negatives": sum(p["shortfall"] for p in short),
            "by_id": {p["id"]: p["shortfall"] for p in short},
        },
        "text_negatives": text_report,
    }
