"""Helpers shared by the families: letter pools, random placement, common constructions."""
from __future__ import annotations

import string

import numpy as np

from data_recipes.diagrams import geometry as g
from data_recipes.diagrams.facts import format_number
from data_recipes.diagrams.scene import Scene

RESERVED = ("O", "I")  # circle centres and incentres
POOL = [c for c in string.ascii_uppercase if c not in RESERVED]


def pick_letters(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct vertex letters: usually A, B, C, ...; sometimes a run starting elsewhere (P, Q, R ...)."""
    if n > len(POOL):
        raise ValueError(f"cannot pick {n} letters from a pool of {len(POOL)}")
    if rng.random() < 0.6:
        return POOL[:n]
    starts = [POOL.index(c) for c in ("D", "E", "K", "M", "P") if POOL.index(c) + n <= len(POOL)]
    s = int(rng.choice(starts))
    return POOL[s:s + n]


def transform(scene: Scene, rng: np.random.Generator, max_rotation: float = 0.0, mirror: bool = True) -> None:
    """Randomly mirror (x -> -x) and rotate the scene in place, around the origin.

    Geometry, lengths and angles are unchanged, so facts still hold.
    """
    flip = mirror and rng.random() < 0.5
    angle = float(rng.uniform(-max_rotation, max_rotation)) if max_rotation else 0.0
    for name, (x, y) in list(scene.points.items()):
        p = g.vec(-x if flip else x, y)
        scene.set_point(name, g.rotate_about(p, (0.0, 0.0), angle) if angle else p)
    if flip:
        # arcs and sectors run counter-clockwise: mirroring reverses them
        for el in scene.elements:
            if el.kind in ("arc", "sector"):
                el.refs = (el.refs[0], el.refs[2], el.refs[1])


def label_all(scene: Scene, names: list[str], dots: tuple[str, ...] = ()) -> None:
    """Add a vertex label for each name and a dot for each name in ``dots``."""
    for n in dots:
        scene.add("dot", n)
    for n in names:
        scene.add("label", n)


def annotate_length(scene: Scene, a: str, b: str, value: float, facts: list[str]) -> None:
    """Write ``value`` beside segment ``ab`` and record the fact ``length(ab)=value``."""
    scene.add("length_label", a, b, value=float(value))
    facts.append(f"length({a}{b})={format_number(value)}")


def annotate_angle(scene: Scene, a: str, v: str, c: str, value: float, facts: list[str], arc: bool = True) -> None:
    """Write ``value``° inside angle ``a v c`` (with a single arc) and record ``angle(avc)=value``."""
    if arc:
        scene.add("angle_mark", a, v, c, count=1)
    scene.add("angle_label", a, v, c, value=float(value))
    facts.append(f"angle({a}{v}{c})={format_number(value)}")

