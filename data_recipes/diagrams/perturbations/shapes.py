"""Shape-class swaps: square -> rhombus or rectangle, equilateral -> isosceles, regular -> irregular, ...

Quadrilaterals are edited keeping side AB fixed (so its annotated length stays right where possible):
vertex D moves, C follows as B + (D - A) for parallelograms, and the diagonals' intersection is recomputed.
"""
from __future__ import annotations

import numpy as np

from data_recipes.diagrams import geometry as g
from data_recipes.diagrams.facts import canonical, classify_polygon
from data_recipes.diagrams.perturbations import Perturbed, register_perturbation
from data_recipes.diagrams.perturbations.base import Edit, facts_named, first_valid, shuffled, signed
from data_recipes.diagrams.scene import Scene

# class -> classes it may become
QUAD_TARGETS = {
    "square": ["rhombus", "rectangle"],
    "rectangle": ["parallelogram", "square"],
    "rhombus": ["parallelogram", "square"],
    "parallelogram": ["rhombus", "rectangle"],
    "trapezoid": ["quadrilateral"],
    "kite": ["quadrilateral"],
}


def _fix_intersections(s: Scene, facts: list[str]) -> None:
    """Move diagonal intersection points back onto the (moved) diagonals."""
    for f in facts_named(facts, "intersection"):
        o, s1, s2 = f.args
        try:
            s.set_point(o, g.intersect_lines(s.p(s1[0]), s.p(s1[1]), s.p(s2[0]), s.p(s2[1])))
        except ValueError:
            continue


def _quad_edit(poly: str, target: str, rng: np.random.Generator, facts: list[str]) -> Edit:
    a, b, c, d = poly

    def edit(s: Scene) -> str | None:
        A, B, C, D = (s.p(x) for x in poly)
        ab, ad = B - A, D - A
        angle = g.angle_at(B, A, D)
        if target in ("rhombus", "parallelogram") and abs(angle - 90) < 1e-3:  # from square / rectangle: shear
            ad = g.rotate_about(ad, (0, 0), signed(rng, 4, 6))
            if target == "parallelogram" and abs(np.hypot(*ab) - np.hypot(*ad)) < 1e-6:
                ad = ad * (1 + signed(rng, 0.07, 0.1))
        elif target == "rectangle":
            if abs(angle - 90) > 8:
                return None
            ad = g.rotate_about(g.unit(ab), (0, 0), 90 if g.cross(ab, ad) > 0 else -90) * np.hypot(*ad)
            if abs(np.hypot(*ab) - np.hypot(*ad)) < 1e-6:
                ad = ad * (1 + signed(rng, 0.07, 0.1))
        elif target == "square":
            ratio = np.hypot(*ad) / np.hypot(*ab)
            if not (0.9 < ratio < 1.12 and abs(angle - 90) < 8):
                return None
            ad = g.rotate_about(g.unit(ab), (0, 0), 90 if g.cross(ab, ad) > 0 else -90) * np.hypot(*ab)
        elif target == "rhombus":  # from parallelogram: equal sides
            ratio = np.hypot(*ad) / np.hypot(*ab)
            if not 0.9 < ratio < 1.12:
                return None
            ad = g.unit(ad) * np.hypot(*ab)
        elif target == "parallelogram":  # from rhombus: stretch one pair of sides
            ad = ad * (1 + signed(rng, 0.07, 0.1))
        elif target == "quadrilateral":  # trapezoid / kite: turn side CD about C
            s.set_point(d, g.rotate_about(D, C, signed(rng, 3, 5)))
            _fix_intersections(s, facts)
            return f"turned side {c}{d}: {poly} is now a general quadrilateral"
        else:
            return None
        s.set_point(d, A + ad)
        s.set_point(c, B + ad)
        _fix_intersections(s, facts)
        return f"reshaped {poly} into a {target}"

    return edit


@register_perturbation("quad_shape_swap")
def quad_shape_swap(scene: Scene, facts: list[str], rng: np.random.Generator) -> Perturbed | None:
    """A special quadrilateral becomes a neighbouring class (square -> rhombus, rectangle -> parallelogram ...)."""
    for f in shuffled(rng, [f for f in facts_named(facts, "shape") if f.value in QUAD_TARGETS]):
        for target in shuffled(rng, QUAD_TARGETS[f.value or ""]):
            added = [canonical(f"shape({f.args[0]})={target}")] if target != "quadrilateral" else []
            res = first_valid(scene, facts, [str(f)], added, [_quad_edit(f.args[0], target, rng, facts)])
            if res and (target != "quadrilateral" or classify_polygon(res.scene, f.args[0]) == "quadrilateral"):
                return res
    return None


def _move_apex_along_axis(t: str, k: float) -> Edit:
    def edit(s: Scene) -> str:
        m = g.lerp(s.p(t[1]), s.p(t[2]), 0.5)
        s.set_point(t[0], g.lerp(m, s.p(t[0]), k))
        return f"moved apex {t[0]}: height scaled by {k:.2f}"

    return edit


def _slide_vertex(v: str, a: str, b: str, k: float) -> Edit:
    def edit(s: Scene) -> str:
        s.set_point(v, s.p(a) + k * (s.p(b) - s.p(a)))
        return f"moved {v} along line {a}{b}"

    return edit


@register_perturbation("triangle_shape_swap")
def triangle_shape_swap(scene: Scene, facts: list[str], rng: np.random.Generator) -> Perturbed | None:
    """Equilateral -> isosceles, isosceles -> scalene (a vertex moves by 10-20 percent)."""
    for f in shuffled(rng, facts_named(facts, "shape", "isosceles")):
        t = f.args[0]
        if f.name == "shape" and f.value == "equilateral":
            edits = []
            for apex in shuffled(rng, [0, 1, 2]):
                tri = t[apex:] + t[:apex]
                edits.append(_move_apex_along_axis(tri, 1 + signed(rng, 0.1, 0.15)))
            added = lambda tri: canonical(f"isosceles({tri})")  # noqa: E731
            for edit, apex in zip(edits, range(3)):
                tri = t[apex:] + t[:apex]
                res = first_valid(scene, facts, [str(f)], [added(tri)], [edit])
                if res:
                    return res
        elif f.name == "isosceles":
            a, b, c = t
            edits = [_slide_vertex(c, b, c, 1 + signed(rng, 0.1, 0.14)), _slide_vertex(b, c, b, 1 + signed(rng, 0.1, 0.14))]
            edits.append(_shift_apex(a, b, c, signed(rng, 0.08, 0.12)))
            res = first_valid(scene, facts, [str(f)], [canonical(f"shape({t})=scalene")], edits)
            if res:
                return res
    return None


@register_perturbation("regular_polygon_break")
def regular_polygon_break(scene: Scene, facts: list[str], rng: np.random.Generator) -> Perturbed | None:
    """One vertex of a regular polygon moves radially by 10-14 percent: the polygon is no longer regular."""
    for f in shuffled(rng, [f for f in facts_named(facts, "shape") if (f.value or "").startswith("regular_")]):
        poly = f.args[0]
        center = g.centroid([scene.p(x) for x in poly])
        edits = [_scale_from(v, center, 1 + signed(rng, 0.08, 0.12)) for v in shuffled(rng, list(poly))[:3]]
        plain = (f.value or "").replace("regular_", "")
        res = first_valid(scene, facts, [str(f)], [canonical(f"shape({poly})={plain}")], edits)
        if res:
            return res
    return None


def _shift_apex(a: str, b: str, c: str, shift: float) -> Edit:
    def edit(s: Scene) -> str:
        s.set_point(a, s.p(a) + shift * (s.p(c) - s.p(b)))
        return f"moved apex {a} sideways by {abs(shift):.2f} {b}{c}"

    return edit


def _scale_from(v: str, center: np.ndarray, k: float) -> Edit:
    def edit(s: Scene) -> str:
        s.set_point(v, g.lerp(center, s.p(v), k))
        return f"moved vertex {v} {'outward' if k > 1 else 'inward'} ({k:.2f} of its distance to the centre)"

    return edit
