"""Text in the figure: vertex-label swaps and changed numeric annotations."""
from __future__ import annotations

import numpy as np

from data_recipes.diagrams.facts import canonical, format_number, holds, rename_fact
from data_recipes.diagrams.families.common import RESERVED
from data_recipes.diagrams.perturbations import Perturbed, register_perturbation
from data_recipes.diagrams.perturbations.base import facts_named, shuffled
from data_recipes.diagrams.scene import Scene


@register_perturbation("label_swap")
def label_swap(scene: Scene, facts: list[str], rng: np.random.Generator) -> Perturbed | None:
    """Two vertex labels trade places; the drawing is unchanged.

    Every fact naming the two points is renamed, so several fact strings may change (one edit, the
    labelling); swaps that leave the facts unchanged (symmetric figures) are skipped.
    """
    labelled = [n for n in scene.labelled() if n not in RESERVED]  # centres keep their conventional O / I
    pairs = [(a, b) for i, a in enumerate(labelled) for b in labelled[i + 1:]]
    for a, b in shuffled(rng, pairs):
        mapping = {a: b, b: a}
        new_facts = sorted({rename_fact(f, mapping) for f in facts})
        removed = sorted(set(facts) - set(new_facts))
        added = sorted(set(new_facts) - set(facts))
        if not removed:
            continue
        new = scene.rename(mapping)
        if any(holds(new, f) for f in removed):
            continue
        return Perturbed(new, removed, added, f"swapped labels {a} and {b}")
    return None


def _new_value(rng: np.random.Generator, name: str, v: float) -> float | None:
    if name == "angle":
        options = [v + d for d in (-20, -15, -10, 10, 15, 20) if 10 < v + d < 170 and v + d != 90]
    elif v == round(v):
        options = [v + d for d in (-3, -2, -1, 1, 2, 3) if v + d > 0]
    else:
        options = [round(v + d, 1) for d in (-1.5, -1, 1, 1.5) if v + d > 0]
    return float(rng.choice(options)) if options else None


@register_perturbation("number_change")
def number_change(scene: Scene, facts: list[str], rng: np.random.Generator) -> Perturbed | None:
    """One written number (a length, angle or radius) changes; the drawing is unchanged."""
    for f in shuffled(rng, facts_named(facts, "length", "angle", "radius")):
        old = float(f.value or "nan")
        new_v = _new_value(rng, f.name, old)
        if new_v is None:
            continue
        others = {x.value for x in facts_named(facts, f.name)}
        if format_number(new_v) in others:  # would duplicate another label's fact
            continue
        new = scene.copy()
        kind = "angle_label" if f.name == "angle" else "length_label"
        target = f.args[0]
        for el in new.find(kind):
            same = (set(el.refs) == set(target) if f.name == "length" else
                    f.name == "radius" and target in el.refs or
                    f.name == "angle" and el.refs[1] == target[1] and {el.refs[0], el.refs[2]} == {target[0], target[2]})
            if same and format_number(float(el.attrs["value"])) == f.value:
                el.attrs["value"] = new_v
                break
        else:
            continue
        added = canonical(f"{f.name}({target})={format_number(new_v)}")
        return Perturbed(new, [str(f)], [added], f"{f.name} of {target} written as {format_number(new_v)} instead of {f.value}")
    return None
