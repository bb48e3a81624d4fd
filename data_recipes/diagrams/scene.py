"""The scene model: named points and the elements drawn from them.

Elements refer to points BY NAME, so moving a point moves everything drawn from it, and renaming a
point (a vertex-label swap) renames it everywhere. A scene is plain data: ``to_dict`` gives JSON.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from data_recipes.diagrams.geometry import dist, line_param, point_line_distance

# kind -> (minimum number of point refs, maximum (None: unbounded), allowed attrs)
ELEMENT_KINDS: dict[str, tuple[int, int | None, frozenset[str]]] = {
    "segment": (2, 2, frozenset({"dashed"})),
    "line": (2, 2, frozenset({"dashed", "extend"})),  # drawn through both points, extended both ways
    "ray": (2, 2, frozenset({"dashed", "extend"})),  # from the first point through the second
    "polygon": (3, None, frozenset({"dashed"})),
    "region": (3, None, frozenset()),  # shaded polygon, no outline
    "circle": (1, 1, frozenset({"radius", "dashed"})),
    "arc": (3, 3, frozenset({"dashed"})),  # centre, from, to (counter-clockwise), radius |centre-from|
    "sector": (3, 3, frozenset()),  # shaded wedge: centre, from, to (counter-clockwise)
    "angle_mark": (3, 3, frozenset({"count"})),  # arcs at the middle point; equal counts claim equal angles
    "right_mark": (3, 3, frozenset()),  # small square at the middle point
    "ticks": (2, 2, frozenset({"count"})),  # equal-length ticks; equal counts claim equal lengths
    "arrows": (2, 2, frozenset({"count"})),  # parallel arrows; equal counts claim parallel lines
    "dot": (1, 1, frozenset()),
    "label": (1, 1, frozenset()),  # the point's name, placed outside the figure
    "length_label": (2, 2, frozenset({"text", "value"})),  # number beside segment
    "angle_label": (3, 3, frozenset({"text", "value"})),  # number inside the angle at the middle point
    "grid": (0, 0, frozenset({"xmin", "xmax", "ymin", "ymax", "step"})),  # coordinate axes and grid
}


@dataclass
class Element:
    """One drawn thing.

    Attributes:
        kind: one of ``ELEMENT_KINDS``.
        refs: names of the points it is drawn from.
        attrs: kind-specific options (``count``, ``dashed``, ``text``, ``value``, ``radius`` ...).
    """

    kind: str
    refs: tuple[str, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ELEMENT_KINDS:
            raise ValueError(f"unknown element kind {self.kind!r}; expected one of {sorted(ELEMENT_KINDS)}")
        self.refs = tuple(self.refs)
        lo, hi, allowed = ELEMENT_KINDS[self.kind]
        if len(self.refs) < lo or (hi is not None and len(self.refs) > hi):
            raise ValueError(f"element {self.kind!r} takes {lo}..{hi} point refs, got {list(self.refs)}")
        unknown = set(self.attrs) - allowed
        if unknown:
            raise ValueError(f"element {self.kind!r}: unknown attrs {sorted(unknown)}; allowed {sorted(allowed)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {"kind": self.kind, "refs": list(self.refs)}
        if self.attrs:
            out["attrs"] = dict(self.attrs)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Element:
        """Inverse of ``to_dict``."""
        return cls(kind=d["kind"], refs=tuple(d.get("refs", ())), attrs=dict(d.get("attrs", {})))


@dataclass
class Scene:
    """Named points plus the elements drawn from them.

    Attributes:
        points: point name -> (x, y); coordinates are in the units of the annotated numbers.
        elements: drawn elements, in drawing order.
        meta: free JSON data (the family, the caption variant ...).
    """

    points: dict[str, tuple[float, float]] = field(default_factory=dict)
    elements: list[Element] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.points = {k: (float(v[0]), float(v[1])) for k, v in self.points.items()}
        for el in self.elements:
            missing = [r for r in el.refs if r not in self.points]
            if missing:
                raise ValueError(f"element {el.kind}{list(el.refs)} refers to unknown points {missing}")

    # -- access ---------------------------------------------------------------------------
    def p(self, name: str) -> np.ndarray:
        """Coordinates of point ``name`` as a 2-vector."""
        if name not in self.points:
            raise KeyError(f"no point {name!r}; scene has {sorted(self.points)}")
        return np.array(self.points[name], dtype=float)

    def find(self, kind: str, refs: tuple[str, ...] | None = None, unordered: bool = False) -> list[Element]:
        """Elements of ``kind`` (optionally with exactly these refs, or the same set when ``unordered``)."""
        out = []
        for el in self.elements:
            if el.kind != kind:
                continue
            if refs is not None:
                if unordered and sorted(el.refs) != sorted(refs):
                    continue
                if not unordered and el.refs != tuple(refs):
                    continue
            out.append(el)
        return out

    def has_segment(self, a: str, b: str) -> bool:
        """Whether a segment, line, ray or polygon edge joins ``a`` and ``b`` (or contains them)."""
        for el in self.elements:
            if el.kind in ("segment", "line", "ray") and set(el.refs) == {a, b}:
                return True
            if el.kind == "polygon":
                n = len(el.refs)
                for i in range(n):
                    if {el.refs[i], el.refs[(i + 1) % n]} == {a, b}:
                        return True
        return self._collinear_drawn(a, b)

    def _collinear_drawn(self, a: str, b: str) -> bool:
        # AB drawn as part of a longer segment (e.g. D on side BC: BD is drawn).
        pa, pb = self.p(a), self.p(b)
        for el in self.elements:
            if el.kind not in ("segment", "line", "ray", "polygon"):
                continue
            edges = [el.refs] if el.kind != "polygon" else [
                (el.refs[i], el.refs[(i + 1) % len(el.refs)]) for i in range(len(el.refs))]
            for u, v in edges:
                pu, pv = self.p(u), self.p(v)
                span = dist(pu, pv)
                if point_line_distance(pa, pu, pv) > 1e-6 * span or point_line_distance(pb, pu, pv) > 1e-6 * span:
                    continue
                if el.kind == "line":
                    return True
                # both within the segment (rays: beyond the start)
                ta, tb = line_param(pa, pu, pv), line_param(pb, pu, pv)
                lo = -1e-9
                hi = float("inf") if el.kind == "ray" else 1 + 1e-9
                if lo <= ta <= hi and lo <= tb <= hi:
                    return True
        return False

    # -- editing --------------------------------------------------------------------------
    def add(self, kind: str, *refs: str, **attrs: Any) -> Element:
        """Append an element and return it."""
        el = Element(kind, tuple(refs), dict(attrs))
        missing = [r for r in el.refs if r not in self.points]
        if missing:
            raise ValueError(f"element {kind}{list(refs)} refers to unknown points {missing}")
        self.elements.append(el)
        return el

    def set_point(self, name: str, xy: Any) -> None:
        """Create or move a point."""
        self.points[name] = (float(xy[0]), float(xy[1]))

    def remove(self, predicate: Any) -> int:
        """Drop the elements for which ``predicate(el)`` is true; returns how many."""
        before = len(self.elements)
        self.elements = [el for el in self.elements if not predicate(el)]
        return before - len(self.elements)

    def remove_point(self, name: str) -> None:
        """Delete a point and every element drawn from it."""
        self.remove(lambda el: name in el.refs)
        self.points.pop(name, None)

    def rename(self, mapping: dict[str, str]) -> Scene:
        """A copy with points renamed by ``mapping`` (names not in it are kept)."""
        new = Scene(
            points={mapping.get(k, k): v for k, v in self.points.items()},
            elements=[Element(el.kind, tuple(mapping.get(r, r) for r in el.refs), copy.deepcopy(el.attrs))
                      for el in self.elements],
            meta=copy.deepcopy(self.meta),
        )
        if len(new.points) != len(self.points):
            raise ValueError(f"renaming {mapping} merges points of {sorted(self.points)}")
        return new

    def copy(self) -> Scene:
        """A deep copy. The scene is valid already, so the copy skips the checks (the builder copies
        every scene once per perturbation it tries)."""
        new = object.__new__(Scene)
        new.points = dict(self.points)  # values are tuples of floats: nothing to copy
        new.elements = []
        for el in self.elements:
            twin = object.__new__(Element)
            twin.kind, twin.refs, twin.attrs = el.kind, el.refs, _copy_values(el.attrs)
            new.elements.append(twin)
        new.meta = _copy_values(self.meta)
        return new

    def labelled(self) -> list[str]:
        """Names of the points that carry a visible label, in drawing order."""
        return [el.refs[0] for el in self.elements if el.kind == "label"]

    # -- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (point coordinates as lists)."""
        return {
            "points": {k: [v[0], v[1]] for k, v in self.points.items()},
            "elements": [el.to_dict() for el in self.elements],
            "meta": copy.deepcopy(self.meta),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scene:
        """Inverse of ``to_dict``; raises ValueError naming the bad key."""
        for key in ("points", "elements"):
            if key not in d:
                raise ValueError(f"scene dict lacks key {key!r}; has {sorted(d)}")
        return cls(
            points={k: (v[0], v[1]) for k, v in d["points"].items()},
            elements=[Element.from_dict(e) for e in d["elements"]],
            meta=copy.deepcopy(d.get("meta", {})),
        )


_SCALARS = (str, int, float, bool, type(None))


def _copy_values(d: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a dict of JSON values, fast where the values are scalars (they almost always are)."""
    return {k: v if isinstance(v, _SCALARS) else copy.deepcopy(v) for k, v in d.items()}
