"""Bar charts of evaluation results: one bar group per metric or perturbation type, one bar per model."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmgeolm_core.io import atomic_write_with

OVERALL = (("i2t_hard_acc", "i2t hard"), ("t2i_hard_acc", "t2i hard"))
RETRIEVAL = (("i2t_r1", "i2t R@1"), ("t2i_r1", "t2i R@1"))


def plot_results(results: Mapping[str, Mapping[str, Any]], path: str | os.PathLike, title: str = "MMCLIP evaluation") -> Path:
    """Write a PNG comparing models (or ablation arms) side by side, atomically.

    Left panel: overall hard-negative accuracies and R@1 with chance marks; right panel: caption ->
    image pairwise accuracy per perturbation type (chance 0.5).

    Args:
        results: display name -> evaluation result (:func:`~mmclip_plugin.evaluate.evaluate_model`).
        path: the PNG to write.
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    names = list(results)
    types = sorted({t for r in results.values() for t in r.get("per_type", {})})
    width = 0.8 / max(1, len(names))
    fig, (left, right) = plt.subplots(1, 2, figsize=(4 + 0.6 * len(types) + 0.3 * len(names), 4.5),
                                      gridspec_kw={"width_ratios": [1, max(1.5, 0.35 * len(types))]})

    overall = [(key, label, "overall") for key, label in OVERALL] + [(k, lab, "retrieval") for k, lab in RETRIEVAL]
    x = np.arange(len(overall))
    for i, name in enumerate(names):
        r = results[name]
        values = [_value(r[key] if where == "overall" else r.get("retrieval", {}).get(key)) for key, _, where in overall]
        left.bar(x + (i - (len(names) - 1) / 2) * width, values, width, label=name)
    first = results[names[0]]["chance"] if names else {}
    chance = [first.get("i2t_hard_acc"), first.get("t2i_hard_acc"), first.get("r1"), first.get("r1")]
    for xi, c in zip(x, chance):
        if c is not None:
            left.hlines(c, xi - 0.45, xi + 0.45, colors="k", linestyles="dashed", lw=1)
    left.set_xticks(x, [label for _, label, _ in overall], rotation=30, ha="right")
    left.set_ylim(0, 1)
    left.set_ylabel("accuracy (dashed: chance)")
    left.set_title("overall")

    xt = np.arange(len(types))
    for i, name in enumerate(names):
        per_type = results[name].get("per_type", {})
        values = [_value(per_type.get(t, {}).get("t2i_acc")) for t in types]
        right.bar(xt + (i - (len(names) - 1) / 2) * width, values, width, label=name)
    right.axhline(0.5, color="k", ls="dashed", lw=1)
    right.set_xticks(xt, types, rotation=45, ha="right", fontsize=8)
    right.set_ylim(0, 1)
    right.set_title("caption -> image, pairwise, per perturbation type")
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
    return path


def _value(x: float | None) -> float:
    return float("nan") if x is None else float(x)
