"""Element and mark changes: a construction dropped or added, a right-angle mark, ticks or arcs removed."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from data_recipes.diagrams import geometry as g
from data_recipes.diagrams.facts import Fact, canonical
from data_recipes.diagrams.families.common import POOL
from data_recipes.diagrams.perturbations import Perturbed, register_perturbation
from data_recipes.diagrams.perturbations.base import facts_named, first_valid, shuffled
from data_recipes.diagrams.scene import Element, Scene


@register_perturbation("drop_construction")
def drop_construction(scene: Scene, facts: list[str], rng: np.random.Generator) -> Perturbed | None:
    """An altitude, median, bisector, diagonal, tangent or diameter is not drawn (with the point it made)."""
    for f in shuffled(rng, facts_named(facts, "altitude", "median", "bisector", "intersection", "tangent", "diameter")):
        def edit(s: Scene, f=f) -> str:
            if f.name in ("altitude", "median", "bisector"):
                s.remove_point(f.args[0][1])
                return f"dropped the {f.name} {f.args[0]}"
            seg = f.args[2] if f.name == "intersection" else f.args[0]
            s.remove(lambda el: el.kind in ("segment", "line", "ray") and set(el.refs) == set(seg))
            s.remove(lambda el: el.kind in ("ticks", "arrows", "length_label") and set(el.refs) <= set(seg) | {f.args[0]})
            if f.name == "intersection":
                s.remove(lambda el: el.kind in ("right_mark", "angle_mark") and f.args[0] == el.refs[1])
            if f.name == "tangent":
                s.remove(lambda el: el.kind == "right_mark" and el.refs[1] == seg[1])
            return f"dropped segment {seg}"

        res = first_valid(scene, facts, [str(f)], [], [edit])
        if res:
            return res
    return None


def _free_letter(scene: Scene) -> str | None:
    free = [c for c in POOL if c not in scene.points]
    return free[0] if free else None


@register_perturbation("add_construction")
def add_construction(scene: Scene, facts: list[str], rng: np.random.Generator) -> Perturbed | None:
    """A median or altitude from a vertex that has none is drawn, with its marks and a new labelled foot."""
    tris = [f.args[0] for f in facts_named(facts, "shape", "isosceles", "right_triangle") if len(f.args[0]) == 3]
    used = {f.args[0][0] for f in facts_named(facts, "altitude", "median", "bisector")}
    new_name = _free_letter(scene)
    if new_name is None:
        return None
    for tri in shuffled(rng, tris):
        for v in shuffled(rng, [x for x in tri if x not in used]):
            b, c = [x for x in tri if x != v]
            for kind in shuffled(rng, ["median", "altitude"]):
                def edit(s: Scene, v=v, b=b, c=c, kind=kind) -> str | None:
                    B, C = s.p(b), s.p(c)
                    if kind == "median":
                        s.set_point(new_name, g.lerp(B, C, 0.5))
                        s.add("ticks", b, new_name, count=3)
                        s.add("ticks", new_name, c, count=3)
                    else:
                        t = g.line_param(s.p(v), B, C)
                        if not 0.15 < t < 0.85:
                            return None
                        s.set_point(new_name, g.lerp(B, C, t))
                        s.add("right_mark", v, new_name, c)
                    s.elements.insert(0, Element("segment", (v, new_name)))
                    s.add("dot", new_name)
                    s.add("label", new_name)
                    return f"added the {kind} {v}{new_name}"

                added = [canonical(f"{kind}({v}{new_name},{tri})")]
                res = first_valid(scene, facts, [], added, [edit], clean_marks=False)
                if res:
                    return res
    return None


def _tick_segments(f: Fact) -> list[set[str]]:
    a = f.args
    if f.name == "midpoint":
        return [{a[0], a[1][0]}, {a[0], a[1][1]}]
    if f.name == "median":
        b, c = [x for x in a[1] if x != a[0][0]]
        return [{b, a[0][1]}, {a[0][1], c}]
    if f.name == "equal_length":
        return [set(a[0]), set(a[1])]
    t = a[0]  # isosceles: the two legs
    return [{t[0], t[1]}, {t[0], t[2]}]


def _mark_predicate(f: Fact, kind: str) -> Callable[[Element], bool]:
    if kind == "ticks":
        segs = _tick_segments(f)
        return lambda el: el.kind == "ticks" and set(el.refs) in segs
    if kind == "right_mark":
        if f.name == "perpendicular":
            v = (set(f.args[0]) & set(f.args[1])).pop()
        else:
            v = f.args[0][1]
        return lambda el: el.kind == "right_mark" and el.refs[1] == v
    (v, d), ang = f.args  # bisector
    halves = [{ang[0], d}, {d, ang[2]}]
    return lambda el: el.kind == "angle_mark" and el.refs[1] == v and {el.refs[0], el.refs[2]} in halves


def _drop_marks(kind: str, names: tuple[str, ...], added_of: Callable[[Fact], list[str]], what: str):
    def perturb(scene: Scene, facts: list[str], rng: np.random.Generator) -> Perturbed | None:
        for f in shuffled(rng, facts_named(facts, *names)):
            pred = _mark_predicate(f, kind)

            def edit(s: Scene, pred=pred) -> str | None:
                n = s.remove(pred)
                return f"removed {n} {what}" if n else None

            res = first_valid(scene, facts, [str(f)], [canonical(a) for a in added_of(f)], [edit], clean_marks=False)
            if res:
                return res
        return None

    perturb.__doc__ = f"The {what} showing a relation are removed: the image no longer states it."
    return perturb


def _cevian_of(f: Fact) -> list[str]:
    return [f"cevian({f.args[0]},{f.args[1]})"] if f.name in ("altitude", "median") else []


register_perturbation("drop_right_mark")(_drop_marks(
    "right_mark", ("perpendicular", "altitude", "right_triangle"), _cevian_of, "right-angle mark"))
register_perturbation("drop_equal_ticks")(_drop_marks(
    "ticks", ("midpoint", "median", "equal_length", "isosceles"),
    lambda f: _cevian_of(f) + ([f"on_segment({f.args[0]},{f.args[1]})"] if f.name == "midpoint" else []),
    "equal-length tick marks"))
register_perturbation("drop_angle_marks")(_drop_marks(
    "angle_mark", ("bisector",),
    lambda f: [f"cevian({f.args[0]},{f.args[1][1]}{f.args[1][0]}{f.args[1][2]})"], "equal-angle arcs"))
