"""Quadrilateral families: square, rectangle, rhombus, parallelogram, trapezoid, kite, each with its diagonals.

Vertices run counter-clockwise A (bottom left), B, C, D; the diagonals AC and BD meet at O.
"""
from __future__ import annotations

import math

import numpy as np

from data_recipes.diagrams import geometry as g
from data_recipes.diagrams.families import register_family
from data_recipes.diagrams.families.common import annotate_length, label_all, pick_letters, transform
from data_recipes.diagrams.scene import Scene


def _finish(pts: list[np.ndarray], cls: str, rng: np.random.Generator, lengths: list[tuple[int, int, float]],
            ticks: dict[tuple[int, int], int] | None = None, right_at_a: bool = False,
            arrows: dict[tuple[int, int], int] | None = None) -> tuple[Scene, list[str]]:
    t = pick_letters(rng, 4)
    o = "O"
    center = g.intersect_lines(pts[0], pts[2], pts[1], pts[3])
    scene = Scene(points={**{t[i]: pts[i] for i in range(4)}, o: center})
    scene.add("polygon", *t)
    scene.add("segment", t[0], t[2])
    scene.add("segment", t[1], t[3])
    for (i, j), n in (ticks or {}).items():
        scene.add("ticks", t[i], t[j], count=n)
    for (i, j), n in (arrows or {}).items():
        scene.add("arrows", t[i], t[j], count=n)
    if right_at_a:
        scene.add("right_mark", t[3], t[0], t[1])
    facts = [f"shape({''.join(t)})={cls}", f"intersection({o},{t[0]}{t[2]},{t[1]}{t[3]})"]
    for i, j, v in lengths:
        if rng.random() < 0.75:
            annotate_length(scene, t[i], t[j], v, facts)
    label_all(scene, t + [o], dots=(o,))
    transform(scene, rng)
    return scene, facts


ALL_SIDES = {(0, 1): 1, (1, 2): 1, (2, 3): 1, (3, 0): 1}


@register_family("square")
def square(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Square with its diagonals (equal sides ticked, right angle marked at A)."""
    s = int(rng.integers(4, 11))
    pts = [g.vec(0, 0), g.vec(s, 0), g.vec(s, s), g.vec(0, s)]
    return _finish(pts, "square", rng, [(0, 1, s)], ticks=ALL_SIDES, right_at_a=True)


@register_family("rectangle")
def rectangle(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Rectangle (not a square) with its diagonals; right angle marked at A."""
    w = int(rng.integers(6, 13))
    h = int(rng.integers(max(3, math.ceil(w / 2.2)), w - 1))
    pts = [g.vec(0, 0), g.vec(w, 0), g.vec(w, h), g.vec(0, h)]
    return _finish(pts, "rectangle", rng, [(0, 1, w), (1, 2, h)], right_at_a=True)


@register_family("rhombus")
def rhombus(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Rhombus (not a square) with its diagonals; equal sides ticked."""
    s = int(rng.integers(5, 11))
    theta = float(rng.choice([55, 60, 65, 70, 110, 115, 120]))
    d = g.polar((0, 0), s, theta)
    pts = [g.vec(0, 0), g.vec(s, 0), g.vec(s, 0) + d, d]
    return _finish(pts, "rhombus", rng, [(0, 1, s)], ticks=ALL_SIDES)


@register_family("parallelogram")
def parallelogram(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Parallelogram (unequal sides, oblique) with its diagonals; parallel sides marked by arrows."""
    a = int(rng.integers(7, 13))
    b = int(rng.integers(4, a - 1))
    theta = float(rng.choice([55, 60, 65, 70]))
    d = g.polar((0, 0), b, theta)
    pts = [g.vec(0, 0), g.vec(a, 0), g.vec(a, 0) + d, d]
    return _finish(pts, "parallelogram", rng, [(0, 1, a), (3, 0, b)], arrows={(0, 1): 1, (3, 2): 1, (0, 3): 2, (1, 2): 2})


@register_family("trapezoid")
def trapezoid(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Trapezoid AB parallel to DC (arrows), with its diagonals."""
    while True:
        a = int(rng.integers(8, 14))
        b, h = int(rng.integers(math.ceil(0.4 * a), int(0.7 * a) + 1)), int(rng.integers(math.ceil(0.45 * a), int(0.8 * a) + 1))
        x0 = round(float(rng.uniform(0.5, a - b - 0.5)) * 2) / 2 if a - b > 1 else 0.0
        if b < a - 1 and abs(x0 - (a - b) / 2) > 0.3 and 0 < x0 < a - b:
            break
    pts = [g.vec(0, 0), g.vec(a, 0), g.vec(x0 + b, h), g.vec(x0, h)]
    return _finish(pts, "trapezoid", rng, [(0, 1, a), (2, 3, b)], arrows={(0, 1): 1, (3, 2): 1})


@register_family("kite")
def kite(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Kite with AB = AD (single ticks) and CB = CD (double ticks); its diagonals are perpendicular."""
    w, p, q = float(rng.integers(3, 6)), float(rng.integers(2, 5)), float(rng.integers(6, 10))
    pts = [g.vec(0, -q), g.vec(w, 0), g.vec(0, p), g.vec(-w, 0)]
    return _finish(pts, "kite", rng, [], ticks={(0, 1): 1, (0, 3): 1, (2, 1): 2, (2, 3): 2})
