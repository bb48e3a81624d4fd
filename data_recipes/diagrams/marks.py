"""Consistency of what an image claims: marks that contradict the geometry, numbers that contradict the scale.

A right-angle mark claims 90°, ticks with the same count claim equal lengths, arrows with the same count
claim parallel lines, arcs with the same count claim equal angles (arcs carrying a number only show
the angle being measured). ``drop_false_marks`` is what every geometric perturbation runs after moving
points, so a negative image never contradicts itself.
"""
from __future__ import annotations

from collections.abc import Callable

from data_recipes.diagrams import geometry as g
from data_recipes.diagrams.facts import ANGLE_TOL, REL_TOL, format_number, scene_scale
from data_recipes.diagrams.scene import Element, Scene


def _largest_cluster(items: list[Element], same: Callable[[Element, Element], bool]) -> list[Element]:
    best: list[Element] = []
    for it in items:
        cluster = [o for o in items if same(it, o)]
        if len(cluster) > len(best):
            best = cluster
    return best if len(best) >= 2 else []


def _angle_of(scene: Scene, el: Element) -> float:
    return g.angle_at(*(scene.p(r) for r in el.refs))


def _is_labelled_angle(scene: Scene, el: Element) -> bool:
    return any(lab.refs[1] == el.refs[1] and {lab.refs[0], lab.refs[2]} == {el.refs[0], el.refs[2]}
               for lab in scene.find("angle_label"))


def false_marks(scene: Scene) -> list[Element]:
    """The marks of ``scene`` whose claim does not hold in its geometry."""
    scale = scene_scale(scene)
    bad = [el for el in scene.find("right_mark") if abs(_angle_of(scene, el) - 90) > ANGLE_TOL]

    def length(el: Element) -> float:
        return g.dist(scene.p(el.refs[0]), scene.p(el.refs[1]))

    rules: dict[str, Callable[[Element, Element], bool]] = {
        "ticks": lambda a, b: abs(length(a) - length(b)) <= REL_TOL * scale,
        "arrows": lambda a, b: g.line_angle(*(scene.p(r) for r in a.refs + b.refs)) < ANGLE_TOL,
        "angle_mark": lambda a, b: abs(_angle_of(scene, a) - _angle_of(scene, b)) < ANGLE_TOL,
    }
    for kind, same in rules.items():
        marks = [el for el in scene.find(kind) if not (kind == "angle_mark" and _is_labelled_angle(scene, el))]
        for count in sorted({el.attrs.get("count", 1) for el in marks}):
            group = [el for el in marks if el.attrs.get("count", 1) == count]
            keep = _largest_cluster(group, same)
            bad += [el for el in group if not any(el is k for k in keep)]
    return bad


def drop_false_marks(scene: Scene) -> int:
    """Remove every false mark from ``scene`` in place; returns how many were removed."""
    bad = false_marks(scene)
    return scene.remove(lambda el: any(el is b for b in bad))


def scale_errors(scene: Scene) -> list[str]:
    """Numbers written in the figure that do not match its proportions (lengths in scene units, angles in degrees)."""
    scale = scene_scale(scene)
    unit = float(scene.meta.get("unit", 1.0))
    errors = []
    for el in scene.find("length_label"):
        d = g.dist(scene.p(el.refs[0]), scene.p(el.refs[1])) * unit
        if abs(d - float(el.attrs["value"])) > 1e-6 * scale * unit:
            errors.append(f"length {''.join(el.refs)} is {d:.4f} but labelled {format_number(el.attrs['value'])}")
    for el in scene.find("angle_label"):
        a = _angle_of(scene, el)
        if abs(a - float(el.attrs["value"])) > ANGLE_TOL:
            errors.append(f"angle {''.join(el.refs)} is {a:.4f} but labelled {format_number(el.attrs['value'])}")
    return errors
