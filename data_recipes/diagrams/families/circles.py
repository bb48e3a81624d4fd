"""Circle families: diameter and inscribed angle, central angle, cyclic quadrilateral, tangents,
incircle, circumcircle, shaded sector. The centre is always called O (I for an incentre)."""
from __future__ import annotations

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
from data_recipes.diagrams.families.triangles import _from_sides, _scalene_sides
from data_recipes.diagrams.scene import Scene


def _circle(r: float, **pts: np.ndarray) -> Scene:
    scene = Scene(points={"O": g.vec(0, 0), **pts})
    scene.add("circle", "O", radius=float(r))
    return scene


def _spread_angles(rng: np.random.Generator, n: int, min_gap: float) -> list[float]:
    """``n`` sorted integer headings (degrees) at least ``min_gap`` apart around the circle, all even."""
    while True:
        a = sorted(int(x) * 2 for x in rng.integers(0, 180, size=n))
        gaps = [(a[(i + 1) % n] - a[i]) % 360 for i in range(n)]
        if min(gaps) >= min_gap:
            return [float(x) for x in a]


@register_family("circle_diameter")
def circle_diameter(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Circle with diameter AB and a point C on it; chords CA, CB form the right angle at C."""
    a_, b_, c_ = pick_letters(rng, 3)
    r = int(rng.integers(3, 8))
    start = float(rng.choice([0, 0, 10, -10, 20]))
    c_deg = start + float(rng.uniform(40, 140)) * (1 if rng.random() < 0.7 else -1)
    scene = _circle(r, **{a_: g.polar((0, 0), r, start + 180), b_: g.polar((0, 0), r, start), c_: g.polar((0, 0), r, c_deg)})
    scene.add("segment", a_, b_)
    scene.add("segment", c_, a_)
    scene.add("segment", c_, b_)
    scene.add("right_mark", a_, c_, b_)
    facts = [f"diameter({a_}{b_},O)", f"on_circle({c_},O)"]
    scene.add("length_label", "O", b_, value=float(r))
    facts.append(f"radius(O)={r}")
    label_all(scene, [a_, b_, c_, "O"], dots=("O",))
    transform(scene, rng)
    return scene, facts


@register_family("circle_angles")
def circle_angles(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Central angle AOB (annotated) and inscribed angle ACB on the same arc."""
    a_, b_, c_ = pick_letters(rng, 3)
    r = float(rng.integers(3, 7))
    central = float(rng.choice(list(range(70, 142, 4))))
    base = float(rng.uniform(-120, -60))
    c_deg = base + central + float(rng.uniform(0.35, 0.65)) * (360 - central)
    scene = _circle(r, **{a_: g.polar((0, 0), r, base), b_: g.polar((0, 0), r, base + central), c_: g.polar((0, 0), r, c_deg)})
    for u, v in (("O", a_), ("O", b_), (c_, a_), (c_, b_)):
        scene.add("segment", u, v)
    facts = [f"on_circle({x},O)" for x in (a_, b_, c_)]
    annotate_angle(scene, a_, "O", b_, central, facts)
    label_all(scene, [a_, b_, c_, "O"], dots=("O",))
    transform(scene, rng)
    return scene, facts


@register_family("cyclic_quadrilateral")
def cyclic_quadrilateral(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Quadrilateral ABCD inscribed in circle O, one angle annotated (integer degrees by construction)."""
    t = pick_letters(rng, 4)
    r = float(rng.integers(3, 7))
    angles = _spread_angles(rng, 4, 56)
    scene = _circle(r, **{t[i]: g.polar((0, 0), r, angles[i]) for i in range(4)})
    scene.add("polygon", *t)
    facts = [f"on_circle({x},O)" for x in t]
    i = int(rng.integers(4))
    a, v, c = t[i - 1], t[i], t[(i + 1) % 4]
    annotate_angle(scene, a, v, c, round(g.angle_at(scene.p(a), scene.p(v), scene.p(c))), facts)
    label_all(scene, t + ["O"], dots=("O",))
    transform(scene, rng)
    return scene, facts


TANGENT_TRIPLES = [(3, 4, 5), (6, 8, 10), (5, 12, 13), (9, 12, 15), (8, 15, 17), (4, 3, 5)]  # (r, PA, OP)


@register_family("tangents")
def tangents(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Tangent(s) PA (and PB) from an external point P to circle O, radii to the touching points."""
    p_, a_, b_ = pick_letters(rng, 3)
    r, pa, op = TANGENT_TRIPLES[int(rng.integers(len(TANGENT_TRIPLES)))]
    P = g.vec(op, 0)
    A, B = g.tangent_points(P, (0, 0), r)
    two = rng.random() < 0.7
    scene = _circle(r, **{p_: P, a_: A, **({b_: B} if two else {})})
    facts = [f"tangent({p_}{a_},O)"]
    scene.add("segment", p_, a_)
    scene.add("segment", "O", a_)
    scene.add("right_mark", "O", a_, p_)
    if two:
        scene.add("segment", p_, b_)
        scene.add("segment", "O", b_)
        scene.add("right_mark", "O", b_, p_)
        facts.append(f"tangent({p_}{b_},O)")
    scene.add("segment", "O", p_, dashed=True)
    annotate_length(scene, p_, a_, pa, facts)
    if rng.random() < 0.5:
        scene.add("length_label", "O", a_, value=float(r))
        facts.append(f"radius(O)={r}")
    label_all(scene, [p_, a_] + ([b_] if two else []) + ["O"], dots=("O",))
    transform(scene, rng, max_rotation=30)
    return scene, facts


@register_family("incircle")
def incircle(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Triangle with its inscribed circle (centre I)."""
    t = pick_letters(rng, 3)
    A, B, C = _from_sides(*_scalene_sides(rng))
    center, r = g.incircle(A, B, C)
    scene = Scene(points={t[0]: A, t[1]: B, t[2]: C, "I": center})
    scene.add("polygon", *t)
    scene.add("circle", "I", radius=float(r))
    label_all(scene, t + ["I"], dots=("I",))
    transform(scene, rng)
    return scene, [f"incircle(I,{''.join(t)})"]


@register_family("circumcircle")
def circumcircle(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Scalene triangle with its circumscribed circle (centre O, inside or outside the triangle)."""
    t = pick_letters(rng, 3)
    A, B, C = _from_sides(*_scalene_sides(rng))
    center = g.circumcenter(A, B, C)
    scene = Scene(points={t[0]: A, t[1]: B, t[2]: C, "O": center})
    scene.add("polygon", *t)
    scene.add("circle", "O", radius=g.dist(center, A))
    label_all(scene, t + ["O"], dots=("O",))
    transform(scene, rng)
    return scene, [f"circumcircle(O,{''.join(t)})"]


@register_family("sector")
def sector(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Circle O with the sector AOB shaded; radius and central angle annotated."""
    a_, b_ = pick_letters(rng, 2)
    r = int(rng.integers(3, 10))
    theta = float(rng.choice([40, 60, 72, 80, 100, 120, 135, 150]))
    start = float(rng.uniform(-30, 60))
    scene = _circle(r, **{a_: g.polar((0, 0), r, start), b_: g.polar((0, 0), r, start + theta)})
    scene.add("sector", "O", a_, b_)
    scene.add("segment", "O", a_)
    scene.add("segment", "O", b_)
    facts = [f"on_circle({a_},O)", f"on_circle({b_},O)", f"shaded(O{a_}{b_})"]
    annotate_angle(scene, a_, "O", b_, theta, facts, arc=False)
    annotate_length(scene, "O", a_, r, facts)
    facts[-1] = f"radius(O)={r}"
    label_all(scene, [a_, b_, "O"], dots=("O",))
    transform(scene, rng)
    return scene, facts
