"""Facts: canonical strings, their parser, and a numerical checker working from a scene's coordinates.

Grammar (documented in docs/engine.md)::

    fact   := NAME "(" arg ("," arg)* ")" ["=" value]
    arg    := one or more point names (single capital letters): "AB" is segment AB, "ABC" angle/triangle
    value  := number | word | "(" number "," number ")"

A fact holds in a scene when its geometry is true (within a tight tolerance) AND the image shows it:
relations that the eye cannot measure are shown by marks (perpendicular: a right-angle mark, equal
lengths and midpoints: equal tick marks, parallel: arrows, bisector: equal angle arcs) and numbers by
their labels. So removing a mark removes the fact, and breaking a relation must remove its marks.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from data_recipes.diagrams import geometry as g
from data_recipes.diagrams.scene import Scene

_FACT_RE = re.compile(r"^([a-z_]+)\(([A-Z,]+)\)(?:=(.+))?$")

REL_TOL = 1e-6  # relative length tolerance (constructions are exact up to float rounding)
ANGLE_TOL = 1e-3  # degrees


@dataclass(frozen=True)
class Fact:
    """A parsed fact: ``name(args...)=value``."""

    name: str
    args: tuple[str, ...]
    value: str | None = None

    def __str__(self) -> str:
        return f"{self.name}({','.join(self.args)})" + (f"={self.value}" if self.value is not None else "")


def format_number(x: float) -> str:
    """Numbers as they appear in facts, labels and captions: ``8``, ``2.5``, ``-3``."""
    if abs(x - round(x)) < 1e-9:
        return str(int(round(x)))
    return f"{x:.2f}".rstrip("0").rstrip(".")


# -- canonical argument forms --------------------------------------------------------------
def _seg(s: str) -> str:
    return "".join(sorted(s))


def _angle(s: str) -> str:
    a, b = sorted((s[0], s[2]))
    return a + s[1] + b


def _poly(s: str) -> str:
    n = len(s)
    rots = [s[i:] + s[:i] for i in range(n)]
    rev = s[::-1]
    rots += [rev[i:] + rev[:i] for i in range(n)]
    return min(rots)


def _apex(s: str) -> str:
    return s[0] + "".join(sorted(s[1:]))


def _same(s: str) -> str:
    return s


def _correspondence(a: str, b: str) -> tuple[str, str]:
    pairs = sorted(zip(a, b))
    x = ("".join(p[0] for p in pairs), "".join(p[1] for p in pairs))
    pairs = sorted(zip(b, a))
    y = ("".join(p[0] for p in pairs), "".join(p[1] for p in pairs))
    return min(x, y)


# fact name -> (argument canonicalisers, symmetric: whether the argument list may be sorted)
SIGNATURES: dict[str, tuple[tuple[Callable[[str], str], ...], bool]] = {
    "parallel": ((_seg, _seg), True),
    "perpendicular": ((_seg, _seg), True),
    "equal_length": ((_seg, _seg), True),
    "midpoint": ((_same, _seg), False),
    "on_circle": ((_same, _same), False),
    "tangent": ((_same, _same), False),
    "shape": ((_poly,), False),
    "isosceles": ((_apex,), False),
    "right_triangle": ((_angle,), False),
    "altitude": ((_same, _poly), False),
    "median": ((_same, _poly), False),
    "bisector": ((_same, _angle), False),
    "similar": ((_same, _same), False),
    "congruent": ((_same, _same), False),
    "length": ((_seg,), False),
    "angle": ((_angle,), False),
    "radius": ((_same,), False),
    "diameter": ((_seg, _same), False),
    "intersection": ((_same, _seg, _seg), False),
    "incircle": ((_same, _poly), False),
    "circumcircle": ((_same, _poly), False),
    "point": ((_same,), False),
    "cevian": ((_same, _poly), False),
    "on_segment": ((_same, _seg), False),
    "shaded": ((_apex,), False),  # sector: centre, then the two ends
}


@lru_cache(maxsize=1 << 16)  # a build parses the same few hundred fact strings again and again
def parse_fact(s: str) -> Fact:
    """Parse a fact string; raises ValueError naming the string and the expected form."""
    m = _FACT_RE.match(s.strip())
    if not m:
        raise ValueError(f"bad fact {s!r}: expected NAME(ARG,...)[=VALUE] with capital-letter point names")
    name, args, value = m.group(1), tuple(m.group(2).split(",")), m.group(3)
    if name not in SIGNATURES:
        raise ValueError(f"bad fact {s!r}: unknown relation {name!r}; known: {sorted(SIGNATURES)}")
    forms, _ = SIGNATURES[name]
    if len(args) != len(forms):
        raise ValueError(f"bad fact {s!r}: {name} takes {len(forms)} arguments, got {len(args)}")
    return Fact(name, args, value)


@lru_cache(maxsize=1 << 16)
def canonical(s: str | Fact) -> str:
    """The canonical string of a fact (``parallel(CD,AB)`` -> ``parallel(AB,CD)``)."""
    f = parse_fact(s) if isinstance(s, str) else s
    forms, symmetric = SIGNATURES[f.name]
    args = tuple(form(a) for form, a in zip(forms, f.args))
    if f.name in ("intersection",):
        args = (args[0], *sorted(args[1:]))
    if f.name in ("similar", "congruent"):
        args = _correspondence(*args)
    if symmetric:
        args = tuple(sorted(args))
    return str(Fact(f.name, args, f.value))


def rename_fact(s: str, mapping: dict[str, str]) -> str:
    """Rename the points of a fact and canonicalise it."""
    f = parse_fact(s)
    args = tuple("".join(mapping.get(c, c) for c in a) for a in f.args)
    return canonical(Fact(f.name, args, f.value))


# -- geometric predicates ------------------------------------------------------------------
def scene_scale(scene: Scene) -> float:
    """Size of the figure (diagonal of the points' bounding box), the unit of tolerances."""
    pts = list(scene.points.values())
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return max(1e-9, float(g.dist((min(xs), min(ys)), (max(xs), max(ys)))))


def close(a: float, b: float, scale: float) -> bool:
    """Lengths equal up to ``REL_TOL`` of the scene scale."""
    return abs(a - b) <= REL_TOL * scale


def _parallel(scene: Scene, s1: str, s2: str) -> bool:
    return g.line_angle(scene.p(s1[0]), scene.p(s1[1]), scene.p(s2[0]), scene.p(s2[1])) < ANGLE_TOL


def _perpendicular(scene: Scene, s1: str, s2: str) -> bool:
    return abs(g.line_angle(scene.p(s1[0]), scene.p(s1[1]), scene.p(s2[0]), scene.p(s2[1])) - 90) < ANGLE_TOL


def _on_line(scene: Scene, p: str, s: str) -> bool:
    return g.point_line_distance(scene.p(p), scene.p(s[0]), scene.p(s[1])) <= REL_TOL * scene_scale(scene)


def _between(scene: Scene, p: str, s: str) -> bool:
    t = g.line_param(scene.p(p), scene.p(s[0]), scene.p(s[1]))
    return _on_line(scene, p, s) and -1e-9 <= t <= 1 + 1e-9


def _length(scene: Scene, s: str) -> float:
    return g.dist(scene.p(s[0]), scene.p(s[1]))


def _angle_deg(scene: Scene, a: str) -> float:
    return g.angle_at(scene.p(a[0]), scene.p(a[1]), scene.p(a[2]))


def _circle_radius(scene: Scene, center: str) -> float | None:
    circles = scene.find("circle", (center,))
    return float(circles[0].attrs["radius"]) if circles else None


# -- marks: how the image shows a relation ----------------------------------------------------
def has_ticks(scene: Scene, *segments: str) -> bool:
    """Equal tick marks (same count) on every given segment."""
    counts = []
    for s in segments:
        found = scene.find("ticks", (s[0], s[1]), unordered=True)
        if not found:
            return False
        counts.append(found[0].attrs.get("count", 1))
    return len(set(counts)) == 1


def has_arrows(scene: Scene, s1: str, s2: str) -> bool:
    """Parallel arrows with the same count on both segments."""
    a = scene.find("arrows", (s1[0], s1[1]), unordered=True)
    b = scene.find("arrows", (s2[0], s2[1]), unordered=True)
    return bool(a and b and a[0].attrs.get("count", 1) == b[0].attrs.get("count", 1))


def has_right_mark(scene: Scene, vertex: str, s1: str, s2: str) -> bool:
    """A right-angle mark at ``vertex`` between lines ``s1`` and ``s2``."""
    for el in scene.find("right_mark"):
        x, v, y = el.refs
        if v != vertex:
            continue
        for u, w in ((x, y), (y, x)):
            if (g.line_angle(scene.p(v), scene.p(u), scene.p(s1[0]), scene.p(s1[1])) < ANGLE_TOL
                    and g.line_angle(scene.p(v), scene.p(w), scene.p(s2[0]), scene.p(s2[1])) < ANGLE_TOL):
                return True
    return False


def has_equal_arcs(scene: Scene, a1: str, a2: str) -> bool:
    """Angle arcs with the same count on angles ``a1`` and ``a2``."""
    counts = []
    for a in (a1, a2):
        found = [el for el in scene.find("angle_mark") if el.refs[1] == a[1] and {el.refs[0], el.refs[2]} == {a[0], a[2]}]
        if not found:
            return False
        counts.append(found[0].attrs.get("count", 1))
    return counts[0] == counts[1]


def _label_value(scene: Scene, kind: str, refs: str, value: str) -> bool:
    for el in scene.find(kind):
        if kind == "length_label" and set(el.refs) != set(refs):
            continue
        if kind == "angle_label" and (el.refs[1] != refs[1] or {el.refs[0], el.refs[2]} != {refs[0], refs[2]}):
            continue
        if format_number(float(el.attrs["value"])) == value:
            return True
    return False


# -- shape classes ----------------------------------------------------------------------------
_NGON = {3: "triangle", 4: "quadrilateral", 5: "pentagon", 6: "hexagon", 7: "heptagon", 8: "octagon"}


def classify_polygon(scene: Scene, poly: str) -> str:
    """The most specific class of polygon ``poly`` (vertices in order)."""
    pts = [scene.p(c) for c in poly]
    n = len(pts)
    scale = scene_scale(scene)
    sides = [g.dist(pts[i], pts[(i + 1) % n]) for i in range(n)]
    angles = [g.angle_at(pts[i - 1], pts[i], pts[(i + 1) % n]) for i in range(n)]
    if n == 3:
        eq = [close(sides[i], sides[j], scale) for i, j in ((0, 1), (1, 2), (0, 2))]
        right = any(abs(a - 90) < ANGLE_TOL for a in angles)
        if all(eq):
            return "equilateral"
        if right:
            return "right_isosceles" if any(eq) else "right"
        return "isosceles" if any(eq) else "scalene"
    if not g.is_convex(pts):
        return "concave"
    all_sides = all(close(s, sides[0], scale) for s in sides)
    all_angles = all(abs(a - angles[0]) < ANGLE_TOL for a in angles)
    if n != 4:
        return ("regular_" if all_sides and all_angles else "") + _NGON.get(n, f"{n}-gon")
    par1 = g.line_angle(pts[0], pts[1], pts[2], pts[3]) < ANGLE_TOL
    par2 = g.line_angle(pts[1], pts[2], pts[3], pts[0]) < ANGLE_TOL
    if par1 and par2:
        right = abs(angles[0] - 90) < ANGLE_TOL
        if all_sides:
            return "square" if right else "rhombus"
        return "rectangle" if right else "parallelogram"
    if par1 or par2:
        return "trapezoid"
    if (close(sides[0], sides[3], scale) and close(sides[1], sides[2], scale)) or (
            close(sides[0], sides[1], scale) and close(sides[2], sides[3], scale)):
        return "kite"
    return "quadrilateral"


def _polygon_drawn(scene: Scene, poly: str) -> bool:
    return any(canonical(f"shape({''.join(el.refs)})") == canonical(f"shape({poly})")
               for el in scene.find("polygon")) or all(
        scene.has_segment(poly[i], poly[(i + 1) % len(poly)]) for i in range(len(poly)))


# -- the checker -------------------------------------------------------------------------------
def _check(scene: Scene, f: Fact) -> bool:  # noqa: C901  (one branch per relation, flat on purpose)
    a = f.args
    sc = scene_scale(scene)
    if any(c not in scene.points for arg in a for c in arg):
        return False
    if f.name == "parallel":
        return _parallel(scene, *a) and has_arrows(scene, *a)
    if f.name == "perpendicular":
        (p, q), (r, s) = a
        common = set(a[0]) & set(a[1])
        if not common:
            return False
        v = common.pop()
        return _perpendicular(scene, *a) and has_right_mark(scene, v, a[0], a[1])
    if f.name == "equal_length":
        return close(_length(scene, a[0]), _length(scene, a[1]), sc) and has_ticks(scene, *a)
    if f.name == "midpoint":
        m, s = a
        return (_between(scene, m, s) and close(g.dist(scene.p(m), scene.p(s[0])), g.dist(scene.p(m), scene.p(s[1])), sc)
                and has_ticks(scene, m + s[0], m + s[1]))
    if f.name == "on_circle":
        r = _circle_radius(scene, a[1])
        return r is not None and close(g.dist(scene.p(a[0]), scene.p(a[1])), r, sc)
    if f.name == "tangent":
        (p, t), o = a[0], a[1]
        r = _circle_radius(scene, o)
        return (r is not None and close(g.dist(scene.p(t), scene.p(o)), r, sc)
                and abs(g.angle_at(scene.p(p), scene.p(t), scene.p(o)) - 90) < ANGLE_TOL and scene.has_segment(p, t))
    if f.name == "shape":
        return classify_polygon(scene, a[0]) == f.value and _polygon_drawn(scene, a[0])
    if f.name == "isosceles":
        t = a[0]
        return (classify_polygon(scene, t) in ("isosceles", "right_isosceles")
                and close(_length(scene, t[0] + t[1]), _length(scene, t[0] + t[2]), sc)
                and has_ticks(scene, t[0] + t[1], t[0] + t[2]) and _polygon_drawn(scene, t))
    if f.name == "right_triangle":
        t = a[0]
        return (abs(_angle_deg(scene, t) - 90) < ANGLE_TOL and has_right_mark(scene, t[1], t[0] + t[1], t[1] + t[2])
                and _polygon_drawn(scene, t))
    if f.name in ("altitude", "median"):
        (v, d), tri = a[0], a[1]
        if v not in tri or d in tri or not scene.has_segment(v, d):
            return False
        b, c = [x for x in tri if x != v]
        if not _between(scene, d, b + c):
            return False
        if f.name == "altitude":
            return _perpendicular(scene, v + d, b + c) and has_right_mark(scene, d, v + d, b + c)
        return close(_length(scene, d + b), _length(scene, d + c), sc) and has_ticks(scene, d + b, d + c)
    if f.name == "cevian":
        (v, d), tri = a[0], a[1]
        b, c = [x for x in tri if x != v] if v in tri else ("", "")
        return bool(b) and d not in tri and scene.has_segment(v, d) and _between(scene, d, b + c)
    if f.name == "shaded":  # a shaded sector (centre, then its two ends, either order) or region (same vertices)
        return any(el.kind in ("sector", "region") and (el.refs == tuple(a[0]) or (
            el.kind == "sector" and el.refs == (a[0][0], a[0][2], a[0][1]))) for el in scene.elements)
    if f.name == "on_segment":
        return _between(scene, a[0], a[1]) and a[0] not in a[1]
    if f.name == "bisector":
        (v, d), ang = a[0], a[1]
        b, c = ang[0], ang[2]
        if ang[1] != v or not scene.has_segment(v, d) or not _between(scene, d, b + c):
            return False
        return (abs(_angle_deg(scene, b + v + d) - _angle_deg(scene, d + v + c)) < ANGLE_TOL
                and has_equal_arcs(scene, b + v + d, d + v + c))
    if f.name in ("similar", "congruent"):
        t1, t2 = a
        l1 = [_length(scene, t1[i] + t1[(i + 1) % 3]) for i in range(3)]
        l2 = [_length(scene, t2[i] + t2[(i + 1) % 3]) for i in range(3)]
        k = l2[0] / l1[0]
        if f.name == "congruent" and not close(k, 1.0, 1.0):
            return False
        return all(close(l2[i], k * l1[i], sc) for i in range(3)) and _polygon_drawn(scene, t1) and _polygon_drawn(scene, t2)
    if f.name == "length":
        return _label_value(scene, "length_label", a[0], f.value or "")
    if f.name == "angle":
        return _label_value(scene, "angle_label", a[0], f.value or "")
    if f.name == "radius":
        r = _circle_radius(scene, a[0])
        if r is None:
            return False
        return any(a[0] in el.refs and _label_value(scene, "length_label", "".join(el.refs), f.value or "")
                   for el in scene.find("length_label"))
    if f.name == "diameter":
        (p, q), o = a
        r = _circle_radius(scene, o)
        return (r is not None and close(g.dist(scene.p(p), scene.p(o)), r, sc) and close(g.dist(scene.p(q), scene.p(o)), r, sc)
                and _between(scene, o, p + q) and scene.has_segment(p, q))
    if f.name == "intersection":
        o, s1, s2 = a
        return (_between(scene, o, s1) and _between(scene, o, s2) and scene.has_segment(*s1) and scene.has_segment(*s2))
    if f.name in ("incircle", "circumcircle"):
        o, tri = a
        r = _circle_radius(scene, o)
        if r is None or not _polygon_drawn(scene, tri):
            return False
        if f.name == "circumcircle":
            return all(close(g.dist(scene.p(o), scene.p(c)), r, sc) for c in tri)
        center, rin = g.incircle(*(scene.p(c) for c in tri))
        return close(g.dist(center, scene.p(o)), 0.0, sc) and close(r, rin, sc)
    if f.name == "point":
        x, y = (float(t) for t in (f.value or "").strip("()").split(","))
        return close(g.dist(scene.p(a[0]), (x, y)), 0.0, sc) and bool(scene.find("grid"))
    raise ValueError(f"no checker for fact {f}")


def holds(scene: Scene, fact: str) -> bool:
    """Whether ``fact`` holds in ``scene``: geometry within tolerance and shown by its marks/labels."""
    return _check(scene, parse_fact(fact))


def check_facts(scene: Scene, facts: list[str]) -> list[str]:
    """The facts of ``facts`` that do NOT hold in ``scene`` (empty when all hold)."""
    return [f for f in facts if not holds(scene, f)]
