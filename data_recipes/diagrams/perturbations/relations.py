"""Relation flips: a relation becomes a near miss (a point moves by a few percent of the figure)."""
from __future__ import annotations

import numpy as np

from data_recipes.diagrams import geometry as g
from data_recipes.diagrams.facts import canonical
from data_recipes.diagrams.perturbations import Perturbed, register_perturbation
from data_recipes.diagrams.perturbations.base import Edit, facts_named, first_valid, shuffled, signed
from data_recipes.diagrams.scene import Element, Scene


def _slide(name: str, a: str, b: str, t: float) -> Edit:
    """Edit: put point ``name`` at parameter ``t`` of segment ``ab``."""

    def edit(s: Scene) -> str:
        s.set_point(name, g.lerp(s.p(a), s.p(b), t))
        return f"moved {name} along {a}{b} ({a}{name}:{name}{b} = {t:.2f}:{1 - t:.2f})"

    return edit


@register_perturbation("midpoint_shift")
def midpoint_shift(scene: Scene, facts: list[str], rng: np.random.Generator) -> Perturbed | None:
    """A midpoint slides off the middle of its segment (its equal ticks go)."""
    for f in shuffled(rng, facts_named(facts, "midpoint")):
        m, seg = f.args
        t = 0.5 + signed(rng, 0.1, 0.15)
        res = first_valid(scene, facts, [str(f)], [canonical(f"on_segment({m},{seg})")], [_slide(m, seg[0], seg[1], t)])
        if res:
            res.detail = f"moved {m} off the midpoint of {seg} ({seg[0]}{m}:{m}{seg[1]} = {t:.2f}:{1 - t:.2f})"
            return res
    return None


def _cevian_miss(kind: str):
    def perturb(scene: Scene, facts: list[str], rng: np.random.Generator) -> Perturbed | None:
        for f in shuffled(rng, facts_named(facts, kind)):
            v, d = f.args[0]
            b, c = (f.args[1][0], f.args[1][2]) if kind == "bisector" else [x for x in f.args[1] if x != v]
            tri = v + b + c
            B, C = scene.p(b), scene.p(c)
            t0 = g.line_param(scene.p(d), B, C)
            edits = [_slide(d, b, c, t0 + signed(rng, 0.1, 0.15)) for _ in range(3)]
            res = first_valid(scene, facts, [str(f)], [canonical(f"cevian({v}{d},{tri})")], edits)
            if res:
                res.detail = f"{v}{d} is no longer the {kind}: " + res.detail
                return res
        return None

    perturb.__doc__ = f"The {kind} becomes a near miss: its foot slides along the opposite side (marks removed)."
    return perturb


for _kind in ("altitude", "median", "bisector"):
    register_perturbation(f"{_kind}_near_miss")(_cevian_miss(_kind))


def _rotate_points(names: list[str], pivot: np.ndarray, deg: float, what: str):
    def edit(s: Scene) -> str:
        for n in names:
            s.set_point(n, g.rotate_about(s.p(n), pivot, deg))
        return f"rotated {what} by {deg:+.1f} degrees"

    return edit


def _points_on(scene: Scene, a: str, b: str) -> list[str]:
    """Named points on line ab (a and b included)."""
    A, B = scene.p(a), scene.p(b)
    return [n for n in scene.points if g.point_line_distance(scene.p(n), A, B) < 1e-9 * (1 + g.dist(A, B))]


@register_perturbation("parallel_break")
def parallel_break(scene: Scene, facts: list[str], rng: np.random.Generator) -> Perturbed | None:
    """One of two parallel lines turns by a few degrees about a point on it (arrows removed)."""
    for f in shuffled(rng, facts_named(facts, "parallel")):
        edits = []
        for seg in shuffled(rng, list(f.args)):
            on = _points_on(scene, seg[0], seg[1])
            inner = [n for n in on if n not in seg]
            pivot = scene.p(inner[0]) if inner else g.lerp(scene.p(seg[0]), scene.p(seg[1]), 0.5)
            edits.append(_rotate_points([n for n in on if n not in inner[:1]], pivot, signed(rng, 5, 8), f"line {seg}"))
        res = first_valid(scene, facts, [str(f)], [], edits)
        if res:
            res.detail = f"{f.args[0]} and {f.args[1]} no longer parallel: {res.detail}"
            return res
    return None


@register_perturbation("perpendicular_break")
def perpendicular_break(scene: Scene, facts: list[str], rng: np.random.Generator) -> Perturbed | None:
    """A right angle becomes oblique (80-84 or 96-100 degrees); its right-angle mark is removed."""
    for f in shuffled(rng, facts_named(facts, "perpendicular", "right_triangle")):
        if f.name == "right_triangle":
            a, v, c = f.args[0]
            rays = [(a, c), (c, a)]
        else:
            v = (set(f.args[0]) & set(f.args[1])).pop()
            a, c = f.args[0].replace(v, ""), f.args[1].replace(v, "")
            rays = [(a, c), (c, a)]
        deg = signed(rng, 5, 8)
        # first try turning one side about the vertex, then sliding its far end along the third side
        edits = [_rotate_points([moving], scene.p(v), deg, f"{v}{moving} about {v}") for moving, _ in rays]
        edits += [_slide_line(moving, v, other, deg) for moving, other in rays]
        res = first_valid(scene, facts, [str(f)], [], edits)
        if res:
            res.detail = f"angle {a}{v}{c} is no longer right: {res.detail}"
            return res
    return None


def _slide_line(moving: str, v: str, other: str, deg: float):
    """Edit: move the far vertex ``moving`` along line (moving, other) so the angle at ``v`` changes by ``deg``."""

    def edit(s: Scene) -> str | None:
        vx, px, ox = s.p(v), s.p(moving), s.p(other)
        target = g.rotate_about(px, vx, deg)
        try:
            new = g.intersect_lines(vx, target, px, ox)
        except ValueError:
            return None
        s.set_point(moving, new)
        return f"moved {moving} along {moving}{other}"

    return edit


@register_perturbation("on_circle_off")
def on_circle_off(scene: Scene, facts: list[str], rng: np.random.Generator) -> Perturbed | None:
    """A point on a circle moves off it, radially by 8-12 percent of the radius."""
    cands = []
    for f in facts_named(facts, "on_circle", "circumcircle"):
        pts = [f.args[0]] if f.name == "on_circle" else list(f.args[1])
        center = f.args[1] if f.name == "on_circle" else f.args[0]
        cands += [(f, p, center) for p in pts]
    for f, p, o in shuffled(rng, cands):
        res = first_valid(scene, facts, [str(f)], [], [_radial(p, o, 1 + signed(rng, 0.06, 0.09))])
        if res:
            return res
    return None


@register_perturbation("tangent_to_secant")
def tangent_to_secant(scene: Scene, facts: list[str], rng: np.random.Generator) -> Perturbed | None:
    """The touching point of a tangent slides along the circle, so the line from P cuts the circle."""
    for f in shuffled(rng, facts_named(facts, "tangent")):
        p, a = f.args[0]
        o = f.args[1]
        edit = _along_circle(a, o, signed(rng, 10, 15), f"{p}{a} is now a secant")
        res = first_valid(scene, facts, [str(f)], [canonical(f"on_circle({a},{o})")], [edit])
        if res:
            return res
    return None


@register_perturbation("similar_break")
def similar_break(scene: Scene, facts: list[str], rng: np.random.Generator) -> Perturbed | None:
    """In nested triangles ADE, ABC, E slides along AC so DE is no longer parallel to BC."""
    for f in shuffled(rng, facts_named(facts, "similar")):
        t1, t2 = f.args
        edits = []
        for i in shuffled(rng, [0, 1, 2]):
            for small, big in ((t1, t2), (t2, t1)):
                apex, x, y = small[i], small[(i + 1) % 3], big[(i + 1) % 3]
                if (apex == big[i] and x != y and x in scene.points and y in scene.points
                        and g.dist(scene.p(apex), scene.p(x)) < g.dist(scene.p(apex), scene.p(y))):
                    t = g.line_param(scene.p(x), scene.p(apex), scene.p(y))
                    edits.append(_slide(x, apex, y, t * (1 + signed(rng, 0.15, 0.22))))
        res = first_valid(scene, facts, [str(f)], [], edits)
        if res:
            res.detail = f"triangles {t1} and {t2} no longer similar: {res.detail}"
            return res
    return None


@register_perturbation("diameter_to_chord")
def diameter_to_chord(scene: Scene, facts: list[str], rng: np.random.Generator) -> Perturbed | None:
    """One end of a diameter slides along the circle: the chord misses the centre."""
    for f in shuffled(rng, facts_named(facts, "diameter")):
        a, b = f.args[0]
        o = f.args[1]
        edits = [_along_circle(end, o, signed(rng, 12, 16), f"{a}{b} is a chord, not a diameter", keep_radius=True)
                 for end in shuffled(rng, [a, b])]
        res = first_valid(scene, facts, [str(f)], [], edits)
        if res:
            return res
    return None


@register_perturbation("incircle_shift")
def incircle_shift(scene: Scene, facts: list[str], rng: np.random.Generator) -> Perturbed | None:
    """The inscribed circle shrinks or grows by 10-14 percent: it no longer touches the sides."""
    for f in shuffled(rng, facts_named(facts, "incircle")):
        res = first_valid(scene, facts, [str(f)], [], [_scale_circle(f.args[0], 1 + signed(rng, 0.08, 0.11))])
        if res:
            return res
    return None


@register_perturbation("grid_point_shift")
def grid_point_shift(scene: Scene, facts: list[str], rng: np.random.Generator) -> Perturbed | None:
    """A vertex on a coordinate grid moves by one grid unit; its coordinates change."""
    for f in shuffled(rng, facts_named(facts, "point")):
        x, y = (int(v) for v in (f.value or "").strip("()").split(","))
        name = f.args[0]
        for dx, dy in shuffled(rng, [(1, 0), (-1, 0), (0, 1), (0, -1)]):
            edit = _move_to(name, (x + dx, y + dy), f"moved {name} from ({x},{y}) to ({x + dx},{y + dy})")
            res = first_valid(scene, facts, [str(f)], [canonical(f"point({name})=({x + dx},{y + dy})")], [edit])
            if res:
                return res
    return None


# -- edit factories (each returns an Edit bound to its arguments) ------------------------------------
def _move_to(name: str, xy: tuple[float, float], detail: str) -> Edit:
    def edit(s: Scene) -> str:
        s.set_point(name, xy)
        return detail

    return edit


def _radial(p: str, o: str, k: float) -> Edit:
    def edit(s: Scene) -> str:
        s.set_point(p, g.lerp(s.p(o), s.p(p), k))
        return f"moved {p} {'outside' if k > 1 else 'inside'} circle {o} (distance {k:.2f} r)"

    return edit


def _along_circle(p: str, o: str, deg: float, note: str, keep_radius: bool = False) -> Edit:
    def edit(s: Scene) -> str:
        s.set_point(p, g.rotate_about(s.p(p), s.p(o), deg))
        if keep_radius:  # a radius written on the old diameter keeps a drawn segment
            for el in s.find("length_label"):
                if o in el.refs and not s.has_segment(*el.refs):
                    s.elements.insert(0, Element("segment", el.refs))
        return f"moved {p} along circle {o} by {deg:+.0f} degrees: {note}"

    return edit


def _scale_circle(o: str, k: float) -> Edit:
    def edit(s: Scene) -> str:
        for el in s.find("circle", (o,)):
            el.attrs["radius"] = float(el.attrs["radius"]) * k
        return f"scaled circle {o} by {k:.2f}: it no longer touches the sides"

    return edit
