"""Diagram families: seeded generators of valid middle-school geometry, registered by name.

A family is a function ``rng -> (Scene, facts)``; it must draw a scene in which every fact holds
(``data_recipes.diagrams.facts.check_facts``) and every mark is true. Families live in one module per group
(triangles, quadrilaterals, circles, lines); importing this package registers all of them.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from data_recipes.diagrams.scene import Scene
from mmgeolm_core.registry import Registry

FamilyFn = Callable[[np.random.Generator], tuple[Scene, list[str]]]
_FAMILIES: Registry[FamilyFn] = Registry("diagram family")


def register_family(name: str) -> Callable[[FamilyFn], FamilyFn]:
    """Decorator registering a family under ``name``; a duplicate name raises."""
    return _FAMILIES.register(name)


def list_families() -> list[str]:
    """Registered family names, sorted."""
    return _FAMILIES.names()


def get_family(name: str) -> FamilyFn:
    """The generator of family ``name``; an unknown name raises listing the known ones."""
    return _FAMILIES.get(name)


# Registration happens on import.
# isort: off
from data_recipes.diagrams.families import triangles  # noqa: E402,F401
from data_recipes.diagrams.families import quadrilaterals  # noqa: E402,F401
from data_recipes.diagrams.families import circles  # noqa: E402,F401
from data_recipes.diagrams.families import lines  # noqa: E402,F401
# isort: on
