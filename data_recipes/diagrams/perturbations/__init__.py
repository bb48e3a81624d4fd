"""Image hard negatives: perturbations of a scene that flip exactly one fact, registered by name.

A perturbation is a function ``(scene, facts, rng) -> Perturbed | None``. It receives a private copy of
the positive scene, edits it (moving points, renaming, dropping or adding elements), and reports which
facts it removed and added. It returns None when it does not apply to the diagram: it is skipped,
never faked. ``data_recipes.diagrams.engine.candidate_negatives`` verifies every result numerically.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from data_recipes.diagrams.scene import Scene
from mmgeolm_core.registry import Registry


@dataclass
class Perturbed:
    """What a perturbation did.

    Attributes:
        scene: the negative scene.
        removed: facts of the positive that no longer hold.
        added: new facts that hold in the negative.
        detail: a human-readable description.
    """

    scene: Scene
    removed: list[str]
    added: list[str] = field(default_factory=list)
    detail: str = ""


PerturbationFn = Callable[[Scene, list[str], np.random.Generator], "Perturbed | None"]
_PERTURBATIONS: Registry[PerturbationFn] = Registry("perturbation")


def register_perturbation(name: str) -> Callable[[PerturbationFn], PerturbationFn]:
    """Decorator registering a perturbation under ``name``; a duplicate name raises."""
    return _PERTURBATIONS.register(name)


def list_perturbations() -> list[str]:
    """Registered perturbation names, sorted."""
    return _PERTURBATIONS.names()


def get_perturbation(name: str) -> PerturbationFn:
    """The perturbation ``name``; an unknown name raises listing the known ones."""
    return _PERTURBATIONS.get(name)


# isort: off
from data_recipes.diagrams.perturbations import relations  # noqa: E402,F401
from data_recipes.diagrams.perturbations import shapes  # noqa: E402,F401
from data_recipes.diagrams.perturbations import labels  # noqa: E402,F401
from data_recipes.diagrams.perturbations import elements  # noqa: E402,F401
# isort: on
