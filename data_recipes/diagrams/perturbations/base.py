"""Shared machinery of the perturbations: pick a fact, try candidate edits, keep the first valid one."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from data_recipes.diagrams.facts import Fact, check_facts, holds, parse_fact
from data_recipes.diagrams.marks import drop_false_marks
from data_recipes.diagrams.perturbations import Perturbed
from data_recipes.diagrams.scene import Scene

Edit = Callable[[Scene], str | None]  # edits a scene in place; returns a detail string, or None if impossible


def facts_named(facts: list[str], *names: str) -> list[Fact]:
    """The parsed facts whose relation is one of ``names``."""
    return [f for f in (parse_fact(s) for s in facts) if f.name in names]


def shuffled(rng: np.random.Generator, items: list) -> list:
    """``items`` in a random order drawn from ``rng``."""
    return [items[i] for i in rng.permutation(len(items))]


def signed(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A magnitude in [lo, hi] with a random sign."""
    return float(rng.uniform(lo, hi)) * (1 if rng.random() < 0.5 else -1)


def verify(scene: Scene, facts: list[str], removed: list[str], added: list[str]) -> bool:
    """Whether the negative is exact: removed facts fail, every other old fact and every added fact holds."""
    keep = [f for f in facts if f not in removed]
    return bool(removed or added) and not check_facts(scene, keep + added) and not any(holds(scene, f) for f in removed)


def first_valid(scene: Scene, facts: list[str], removed: list[str], added: list[str], edits: list[Edit],
                clean_marks: bool = True) -> Perturbed | None:
    """Apply each edit to a fresh copy in turn; return the first whose result ``verify``-s, else None."""
    for edit in edits:
        new = scene.copy()
        detail = edit(new)
        if detail is None:
            continue
        if clean_marks:
            drop_false_marks(new)
        if verify(new, facts, removed, added):
            return Perturbed(new, list(removed), list(added), detail)
    return None
