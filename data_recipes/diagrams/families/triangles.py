"""Triangle families: the four types with a cevian, the midsegment, altitude to the hypotenuse, similar triangles.

Every triangle is apex-up: apex ``A`` (first letter), base ``B``-``C`` on the x-axis, then randomly mirrored.
Lengths are integers (or built from integer lengths and angles), so annotated numbers match the drawing.
"""
from __future__ import annotations

import math

import numpy as np

from data_recipes.diagrams import geometry as g
from data_recipes.diagrams.families import register_family
from data_recipes.diagrams.families.common import (
    annotate_angle,
    annotate_length,
    label_all,
    pick_letters,
    transform,
)
from data_recipes.diagrams.scene import Scene

RIGHT_TRIPLES = [(3, 4, 5), (6, 8, 10), (5, 12, 13), (8, 15, 17), (9, 12, 15), (12, 16, 20), (15, 20, 25)]


def _from_sides(a: float, b: float, c: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apex A, base B=(0,0), C=(a,0) for BC=a, CA=b, AB=c."""
    x = (c * c - b * b + a * a) / (2 * a)
    return g.vec(x, math.sqrt(c * c - x * x)), g.vec(0, 0), g.vec(a, 0)


def _scalene_sides(rng: np.random.Generator) -> tuple[int, int, int]:
    for _ in range(1000):
        a, b, c = (int(v) for v in rng.integers(4, 13, size=3))
        if len({a, b, c}) < 3 or not (a < b + c and b < a + c and c < a + b):
            continue
        A, B, C = _from_sides(a, b, c)
        angles = [g.angle_at(B, A, C), g.angle_at(A, B, C), g.angle_at(A, C, B)]
        if min(angles) > 28 and max(angles[1:]) < 85 and all(abs(t - 90) > 5 for t in angles):
            return a, b, c
    raise RuntimeError("no scalene triangle found")  # unreachable in practice


def _base_triangle(kind: str, rng: np.random.Generator, t: list[str], facts: list[str]) -> tuple[Scene, list]:
    """Triangle t[0] t[1] t[2] of ``kind`` with its shape fact and marks; returns (scene, deferred annotations)."""
    a_, b_, c_ = t
    notes: list[tuple] = []
    if kind == "equilateral":
        s = int(rng.integers(4, 13))
        A, B, C = _from_sides(s, s, s)
        facts.append(f"shape({a_}{b_}{c_})=equilateral")
        notes.append(("len", a_, b_, s))
    elif kind == "isosceles":
        if rng.random() < 0.5:
            while True:
                leg, base = int(rng.integers(5, 13)), int(rng.integers(4, 13))
                if base != leg and base < 2 * leg - 1 and abs(2 * math.degrees(math.asin(base / (2 * leg))) - 90) > 6:
                    break
            A, B, C = _from_sides(base, leg, leg)
            notes.append(("len", a_, b_, leg))
        else:
            base, theta = int(rng.integers(6, 13)), int(rng.choice([30, 35, 40, 50, 55, 65, 70, 75]))
            B, C = g.vec(0, 0), g.vec(base, 0)
            A = g.vec(base / 2, base / 2 * math.tan(math.radians(theta)))
            notes.append(("ang", a_, b_, c_, theta))
        facts.append(f"isosceles({a_}{b_}{c_})")
    elif kind == "right":
        p, q, c = RIGHT_TRIPLES[int(rng.integers(len(RIGHT_TRIPLES)))]
        if rng.random() < 0.5:
            p, q = q, p
        A, B, C = g.vec(p * p / c, p * q / c), g.vec(0, 0), g.vec(c, 0)
        facts.append(f"right_triangle({b_}{a_}{c_})")
        notes += [("len", a_, b_, p), ("len", a_, c_, q)]
    elif kind == "scalene":
        a, b, c = _scalene_sides(rng)
        A, B, C = _from_sides(a, b, c)
        facts.append(f"shape({a_}{b_}{c_})=scalene")
        notes += [("len", a_, b_, c), ("len", a_, c_, b)]
    else:
        raise ValueError(f"unknown triangle kind {kind!r}")
    scene = Scene(points={a_: A, b_: B, c_: C})
    scene.add("polygon", a_, b_, c_)
    if kind == "isosceles":
        scene.add("ticks", a_, b_, count=1)
        scene.add("ticks", a_, c_, count=1)
    elif kind == "right":
        scene.add("right_mark", b_, a_, c_)
    return scene, notes


def _annotate(scene: Scene, notes: list[tuple], facts: list[str]) -> None:
    for n in notes:
        if n[0] == "len":
            annotate_length(scene, n[1], n[2], n[3], facts)
        else:
            annotate_angle(scene, n[1], n[2], n[3], n[4], facts)


def _cevian(scene: Scene, kind: str, t: list[str], d: str, facts: list[str]) -> None:
    """Draw from apex t[0] to foot ``d`` on side t[1] t[2]: altitude, median or bisector, with its marks."""
    a_, b_, c_ = t
    A, B, C = scene.p(a_), scene.p(b_), scene.p(c_)
    if kind == "altitude":
        scene.set_point(d, g.foot(A, B, C))
        scene.add("right_mark", a_, d, c_)
        facts.append(f"altitude({a_}{d},{a_}{b_}{c_})")
    elif kind == "median":
        scene.set_point(d, g.lerp(B, C, 0.5))
        scene.add("ticks", b_, d, count=2)
        scene.add("ticks", d, c_, count=2)
        facts.append(f"median({a_}{d},{a_}{b_}{c_})")
    elif kind == "bisector":
        ab, ac = g.dist(A, B), g.dist(A, C)
        scene.set_point(d, g.lerp(B, C, ab / (ab + ac)))
        scene.add("angle_mark", b_, a_, d, count=2)
        scene.add("angle_mark", d, a_, c_, count=2)
        facts.append(f"bisector({a_}{d},{b_}{a_}{c_})")
    else:
        raise ValueError(f"unknown cevian {kind!r}")
    scene.add("segment", a_, d)


def _typed_triangle(kind: str, rng: np.random.Generator) -> tuple[Scene, list[str]]:
    t = pick_letters(rng, 4)
    facts: list[str] = []
    scene, notes = _base_triangle(kind, rng, t[:3], facts)
    _cevian(scene, str(rng.choice(["altitude", "median", "bisector"])), t[:3], t[3], facts)
    keep = notes if len(notes) <= 1 else [notes[i] for i in sorted(rng.choice(len(notes), size=int(rng.integers(1, len(notes) + 1)), replace=False))]
    _annotate(scene, keep, facts)
    label_all(scene, t, dots=(t[3],))
    transform(scene, rng)
    return scene, facts


@register_family("triangle_equilateral")
def triangle_equilateral(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Equilateral triangle with an altitude, median or bisector from the apex."""
    return _typed_triangle("equilateral", rng)


@register_family("triangle_isosceles")
def triangle_isosceles(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Isosceles triangle (equal legs ticked) with a cevian from the apex."""
    return _typed_triangle("isosceles", rng)


@register_family("triangle_right")
def triangle_right(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Right triangle (Pythagorean-triple sides) with a cevian from the right angle."""
    return _typed_triangle("right", rng)


@register_family("triangle_scalene")
def triangle_scalene(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Scalene acute-based triangle with integer sides and a cevian from the apex."""
    return _typed_triangle("scalene", rng)


@register_family("midsegment")
def midsegment(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Triangle with the segment joining the midpoints of two sides."""
    t = pick_letters(rng, 5)
    a_, b_, c_, d_, e_ = t
    while True:
        a, b, c = 2 * int(rng.integers(3, 7)), int(rng.integers(5, 13)), int(rng.integers(5, 13))
        if a < b + c and b < a + c and c < a + b:
            A, B, C = _from_sides(a, b, c)
            if min(g.angle_at(A, B, C), g.angle_at(A, C, B)) > 30 and max(g.angle_at(A, B, C), g.angle_at(A, C, B)) < 85:
                break
    scene = Scene(points={a_: A, b_: B, c_: C, d_: g.lerp(A, B, 0.5), e_: g.lerp(A, C, 0.5)})
    scene.add("polygon", a_, b_, c_)
    scene.add("segment", d_, e_)
    scene.add("ticks", a_, d_, count=1)
    scene.add("ticks", d_, b_, count=1)
    scene.add("ticks", a_, e_, count=2)
    scene.add("ticks", e_, c_, count=2)
    facts = [f"midpoint({d_},{a_}{b_})", f"midpoint({e_},{a_}{c_})"]
    annotate_length(scene, b_, c_, a, facts)
    label_all(scene, t, dots=(d_, e_))
    transform(scene, rng)
    return scene, facts


@register_family("right_triangle_altitude")
def right_triangle_altitude(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Right triangle with the altitude from the right angle to the hypotenuse."""
    t = pick_letters(rng, 4)
    facts: list[str] = []
    scene, notes = _base_triangle("right", rng, t[:3], facts)
    _cevian(scene, "altitude", t[:3], t[3], facts)
    _annotate(scene, notes[: int(rng.integers(1, 3))], facts)
    label_all(scene, t, dots=(t[3],))
    transform(scene, rng)
    return scene, facts


@register_family("similar_triangles")
def similar_triangles(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Triangle ABC cut by DE parallel to BC (D on AB, E on AC): triangle ADE is similar to ABC."""
    t = pick_letters(rng, 5)
    a_, b_, c_, d_, e_ = t
    m, n = int(rng.integers(2, 7)), int(rng.integers(2, 6))
    ab = m + n
    while True:
        bc, ac = (int(v) for v in rng.integers(5, 14, size=2))
        if ab < bc + ac and bc < ab + ac and ac < ab + bc and len({ab, bc, ac}) == 3:
            A, B, C = _from_sides(bc, ac, ab)
            if min(g.angle_at(A, B, C), g.angle_at(A, C, B)) > 35 and g.angle_at(B, A, C) > 30:
                break
    k = m / ab
    scene = Scene(points={a_: A, b_: B, c_: C, d_: g.lerp(A, B, k), e_: g.lerp(A, C, k)})
    scene.add("polygon", a_, b_, c_)
    scene.add("segment", d_, e_)
    scene.add("arrows", d_, e_, count=1)
    scene.add("arrows", b_, c_, count=1)
    facts = [f"similar({a_}{d_}{e_},{a_}{b_}{c_})"]
    annotate_length(scene, a_, d_, m, facts)
    annotate_length(scene, d_, b_, n, facts)
    if rng.random() < 0.5:
        annotate_length(scene, b_, c_, bc, facts)
    label_all(scene, t, dots=(d_, e_))
    transform(scene, rng)
    return scene, facts
