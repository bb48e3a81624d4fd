"""Layout: a scene becomes a square data window and a list of draw calls (styles fixed by output size).

Vertex labels go where they are clearest of strokes, circles and points (preferring wide angular gaps and
the outside of the figure),
numbers beside their segment or inside their angle, marks at the middle of segments unless a labelled
point sits there. Every call gets an explicit layer and order (zorder), so any renderer replays it the same.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from data_recipes.diagrams import geometry as g
from data_recipes.diagrams.draw_calls import DrawCall, _glyphs, _r
from data_recipes.diagrams.facts import format_number
from data_recipes.diagrams.scene import Element, Scene

TEXT_STROKE = 0.3  # points of outline around each glyph: a little weight for small sizes

MARGIN = 0.16  # fraction of the scene's extent left free on every side (room for labels)
FILL = "0.85"  # shaded regions
GRID = "0.8"


@dataclass(frozen=True)
class Style:
    """Sizes derived from the output size, so diagrams look alike at 224 and 336 px."""

    lw: float  # line width, points
    font: float  # label font size, points
    dot: float  # marker size, points
    unit: float = 1.0  # data units per point (set by ``layout`` once the window is known)

    @classmethod
    def for_size(cls, size_px: int, dpi: int) -> Style:
        pt = 72.0 / dpi
        return cls(lw=round(max(1.0, 0.005 * size_px) * pt, 2), font=round(0.05 * size_px * pt, 1),
                   dot=round(max(3.0, 0.012 * size_px) * pt, 2))


# -- bounds ------------------------------------------------------------------------------------
def _extended(scene: Scene, el: Element) -> tuple[np.ndarray, np.ndarray]:
    a, b = scene.p(el.refs[0]), scene.p(el.refs[1])
    ext = float(el.attrs.get("extend", 0.25))
    if el.kind == "line":
        return g.lerp(a, b, -ext), g.lerp(a, b, 1 + ext)
    return a, g.lerp(a, b, 1 + ext)


def limits(scene: Scene) -> tuple[float, float, float, float]:
    """A square data window holding the whole scene plus ``MARGIN``: (xmin, xmax, ymin, ymax)."""
    xs, ys = [p[0] for p in scene.points.values()], [p[1] for p in scene.points.values()]
    for el in scene.elements:
        if el.kind == "circle":
            (cx, cy), r = scene.points[el.refs[0]], float(el.attrs["radius"])
            xs += [cx - r, cx + r]
            ys += [cy - r, cy + r]
        elif el.kind in ("line", "ray"):
            for p in _extended(scene, el):
                xs.append(p[0])
                ys.append(p[1])
        elif el.kind == "grid":
            xs += [el.attrs["xmin"], el.attrs["xmax"]]
            ys += [el.attrs["ymin"], el.attrs["ymax"]]
    span = max(max(xs) - min(xs), max(ys) - min(ys), 1e-6)
    half = span * (0.5 + MARGIN)
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    return (_r(cx - half), _r(cx + half), _r(cy - half), _r(cy + half))


# -- label placement ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Ink:
    """What vertex labels keep clear of and align with, gathered once per scene."""

    segs: np.ndarray  # (n, 2, 2) straight strokes: segments, polygon sides, the drawn extent of lines and rays
    circles: np.ndarray  # (c, 3) circles as centre x, y and radius
    rings: np.ndarray  # (r, 3) circles and arcs: a point on one keeps its label outside
    points: np.ndarray  # (p, 2) every point of the scene
    center: np.ndarray  # (2,) their mean: numbers and labels sit on the side away from it
    numbers: np.ndarray  # (m, 2) centres of the written numbers

    @classmethod
    def of(cls, scene: Scene, span: float) -> Ink:
        """The ink of ``scene``; ``span`` (the side of its data window) places the numbers."""
        segs, circles, rings = [], [], []
        for el in scene.elements:
            if el.kind == "segment":
                segs.append((scene.p(el.refs[0]), scene.p(el.refs[1])))
            elif el.kind in ("line", "ray"):
                segs.append(_extended(scene, el))
            elif el.kind == "polygon":
                n = len(el.refs)
                segs += [(scene.p(el.refs[i]), scene.p(el.refs[(i + 1) % n])) for i in range(n)]
            elif el.kind == "circle":
                c = scene.p(el.refs[0])
                circles.append((c[0], c[1], float(el.attrs["radius"])))
                rings.append(circles[-1])
            elif el.kind == "arc":
                c = scene.p(el.refs[0])
                rings.append((c[0], c[1], g.dist(c, scene.p(el.refs[1]))))
        points = np.array(list(scene.points.values()), dtype=float).reshape(-1, 2)
        center = points.mean(axis=0)
        numbers = [_number_position(scene, el, span, center) for el in scene.elements
                   if el.kind in ("length_label", "angle_label")]
        return cls(np.array(segs, dtype=float).reshape(-1, 2, 2), np.array(circles, dtype=float).reshape(-1, 3),
                   np.array(rings, dtype=float).reshape(-1, 3), points, center,
                   np.array(numbers, dtype=float).reshape(-1, 2))

    def incident_directions(self, ps: np.ndarray) -> list[list[float]]:
        """For each point of ``ps`` (k, 2): headings (degrees) of the ink leaving it, through edges,
        lines and circles (the tangents and the outward normal of a circle it lies on)."""
        tol = 1e-6 * max(1.0, float(np.abs(self.points).max(initial=0.0)))
        out: list[list[float]] = [[] for _ in ps]
        q = ps[:, None, :]  # (k, 1, 2)
        if len(self.segs):
            a, b = self.segs[None, :, 0], self.segs[None, :, 1]  # (1, n, 2)
            d = b - a
            t = ((q - a) * d).sum(2) / (d * d).sum(2)
            at_a = np.hypot(*np.moveaxis(a - q, 2, 0)) < tol
            at_b = ~at_a & (np.hypot(*np.moveaxis(b - q, 2, 0)) < tol)
            inside = ~at_a & ~at_b & (np.hypot(*np.moveaxis(q - (a + t[..., None] * d), 2, 0)) < tol) & (t > 0) & (t < 1)
            for i, j in zip(*np.nonzero(at_a | at_b | inside)):
                p, ends = ps[i], ([self.segs[j, 1]] if at_a[i, j] else [self.segs[j, 0]] if at_b[i, j]
                                  else [self.segs[j, 0], self.segs[j, 1]])
                out[i] += [_heading(p, e) for e in ends]
        if len(self.rings):
            c, r = self.rings[None, :, :2], self.rings[None, :, 2]
            on = np.abs(np.hypot(*np.moveaxis(q - c, 2, 0)) - r) < tol * 10
            for i, j in zip(*np.nonzero(on)):
                h = _heading(self.rings[j, :2], ps[i])
                out[i] += [(h + 90) % 360, (h - 90) % 360, (h + 180) % 360]
        return out

    def clearance(self, qs: np.ndarray, own: np.ndarray) -> np.ndarray:
        """For each row of ``qs`` (m, 2): distance to the nearest stroke, circle, number or point
        other than ``own[i]`` (the labelled point that row belongs to, and any point at its place)."""
        best = np.full(len(qs), np.inf)
        if len(self.segs):
            a, d = self.segs[:, 0], self.segs[:, 1] - self.segs[:, 0]  # (n, 2)
            rel = qs[:, None, :] - a[None]  # (m, n, 2)
            t = np.clip((rel * d[None]).sum(2) / np.maximum((d * d).sum(1), 1e-12)[None], 0, 1)
            best = np.minimum(best, np.linalg.norm(rel - t[..., None] * d[None], axis=2).min(1))
        if len(self.circles):
            rings = np.abs(np.linalg.norm(qs[:, None, :] - self.circles[None, :, :2], axis=2) - self.circles[None, :, 2])
            best = np.minimum(best, rings.min(1))
        if len(self.numbers):
            best = np.minimum(best, np.linalg.norm(qs[:, None, :] - self.numbers[None], axis=2).min(1))
        if len(self.points):
            others = np.linalg.norm(qs[:, None, :] - self.points[None], axis=2)
            others[np.linalg.norm(own[:, None, :] - self.points[None], axis=2) <= 1e-9] = np.inf
            best = np.minimum(best, others.min(1))
        return best


def _heading(a: np.ndarray, b: np.ndarray) -> float:
    """``geometry.heading`` on plain floats (the same value, without building arrays)."""
    return math.degrees(math.atan2(float(b[1]) - float(a[1]), float(b[0]) - float(a[0]))) % 360.0


def _incident_directions(scene: Scene, name: str) -> list[float]:
    """Headings (degrees) of the ink leaving point ``name``: edges, lines and circles through it."""
    return Ink.of(scene, 1.0).incident_directions(scene.p(name)[None])[0]


def label_offset(span: float, heading: float) -> float:
    """Distance of a vertex label from its point (a little more on the diagonals, where the box reaches further)."""
    return 0.05 * span * (1.0 + 0.25 * abs(math.sin(math.radians(2 * heading))))


def label_directions(scene: Scene, names: list[str], span: float, ink: Ink) -> dict[str, float]:
    """Heading of each of ``names``' labels, all placed in one vectorised pass.

    A label goes where it is clearest of every stroke, circle, number and other point (up to a
    comfortable distance); among clear places it prefers the middle of a wide angular gap between
    the lines through its point, leaning away from the figure. Candidates: every 10 degrees, plus
    the middles of the gaps.
    """
    if not names:
        return {}
    ps = np.array([scene.p(n) for n in names], dtype=float)
    heads, owner, dirs_of, out_h = [], [], [], []
    for i, (p, incident) in enumerate(zip(ps, ink.incident_directions(ps))):
        dirs = sorted(set(round(d, 6) for d in incident))
        outward = p - ink.center
        out_h.append(g.heading((0, 0), outward) if np.hypot(*outward) > 1e-9 else 90.0)
        cand = [float(h) for h in range(0, 360, 10)]
        for k, d in enumerate(dirs):  # middles of the angular gaps
            nxt = dirs[(k + 1) % len(dirs)] + (360 if k == len(dirs) - 1 else 0)
            cand.append((d + ((nxt - d) if len(dirs) > 1 else 360.0) / 2) % 360)
        heads += cand
        owner += [i] * len(cand)
        dirs_of.append(dirs)
    hs, owner = np.array(heads), np.array(owner)
    rad = np.radians(hs)
    offsets = 0.05 * span * (1.0 + 0.25 * np.abs(np.sin(2 * rad)))
    own = ps[owner]
    qs = own + offsets[:, None] * np.stack([np.cos(rad), np.sin(rad)], axis=1)
    clear = np.minimum(ink.clearance(qs, own), 0.04 * span) / span
    width = max(len(d) for d in dirs_of)
    dirs = np.full((len(names), max(width, 1)), np.nan)
    for i, d in enumerate(dirs_of):
        dirs[i, :len(d)] = d
    # angular distance to the nearest line through the point (inf where none: no line to avoid)
    diff = np.fmin.reduce(np.abs((hs[:, None] - dirs[owner] + 180) % 360 - 180), axis=1, initial=np.inf)
    score = 4000.0 * clear + np.minimum(diff, 60.0) + 20.0 * np.cos(np.radians(hs - np.array(out_h)[owner]))
    bounds = np.flatnonzero(np.diff(owner)) + 1
    return {name: float(h[int(np.argmax(sc))])
            for name, h, sc in zip(names, np.split(hs, bounds), np.split(score, bounds))}


def label_direction(scene: Scene, name: str, span: float | None = None) -> float:
    """Heading for the label of ``name``, as ``layout`` places it (see :func:`label_directions`)."""
    if span is None:
        lim = limits(scene)
        span = lim[1] - lim[0]
    return label_directions(scene, [name], span, Ink.of(scene, span))[name]


# -- the layout: scene -> draw calls -----------------------------------------------------------
def _line(xs: list[float], ys: list[float], st: Style, color: str = "black", dashed: bool = False,
          lw: float | None = None) -> DrawCall:
    kw: list[tuple[str, Any]] = [("color", color), ("lw", lw if lw is not None else st.lw)]
    if dashed:
        kw.append(("ls", "--"))
    kw.append(("solid_capstyle", "round"))
    return DrawCall("plot", ([_r(x) for x in xs], [_r(y) for y in ys]), tuple(kw))



def _text(p: np.ndarray, s: str, size_pt: float, st: Style) -> DrawCall:
    """Text centred on ``p`` as a filled glyph outline (``TextPath``), ``size_pt`` points high.

    Outlines instead of ``ax.text``: they are drawn like any other patch (fast, cacheable) and give
    the same pixels in the script and in the fast path.
    """
    from matplotlib.textpath import text_to_path

    size = round(size_pt * st.unit, 3)
    verts, _ = _glyphs(s)
    k = size / text_to_path.FONT_SCALE
    lo, hi = verts.min(axis=0) * k, verts.max(axis=0) * k
    x0, y0 = p[0] - (lo[0] + hi[0]) / 2, p[1] - (lo[1] + hi[1]) / 2
    return DrawCall("TextPath", ((_r(x0), _r(y0)), s, size), (("fc", "black"), ("ec", "black"), ("lw", TEXT_STROKE)))


def _interior_angle(scene: Scene, refs: tuple[str, ...]) -> tuple[float, float, np.ndarray]:
    """(theta1, theta2) counter-clockwise spanning angle refs[0]-refs[1]-refs[2], and its bisector unit."""
    a, v, c = (scene.p(r) for r in refs)
    h1, h2 = g.heading(v, a), g.heading(v, c)
    if (h2 - h1) % 360 > 180:
        h1, h2 = h2, h1
    mid = h1 + ((h2 - h1) % 360) / 2
    return h1, h1 + (h2 - h1) % 360, g.polar((0, 0), 1.0, mid)


ORDER = {"grid": 0, "region": 1, "sector": 1, "polygon": 2, "segment": 2, "line": 2, "ray": 2, "circle": 2,
         "arc": 2, "right_mark": 3, "angle_mark": 3, "ticks": 3, "arrows": 3, "dot": 4, "length_label": 5,
         "angle_label": 5, "label": 6}


def layout(scene: Scene, size_px: int = 336, dpi: int = 100) -> tuple[tuple[float, ...], list[DrawCall]]:
    """The data window and the draw calls of ``scene`` at this output size."""
    lim = limits(scene)
    S = lim[1] - lim[0]
    st = replace(Style.for_size(size_px, dpi), unit=S / size_px * dpi / 72.0)
    ink = Ink.of(scene, S)
    headings = label_directions(scene, [el.refs[0] for el in scene.elements if el.kind == "label"], S, ink)
    calls: list[DrawCall] = []
    for el in sorted(scene.elements, key=lambda e: ORDER[e.kind]):
        calls += _element_calls(scene, el, S, st, ink.center, headings)
    return lim, [_with_zorder(c, i) for i, c in enumerate(calls)]


def _with_zorder(c: DrawCall, index: int) -> DrawCall:
    """An explicit, unique zorder: layer (grid < fills < ink < dots < text) plus the call's index.

    Overlapping antialiased strokes blend differently (by one grey level) in another order, so the
    order is pinned: the fast path's re-used artists draw in exactly the script's order.
    """
    kw = dict(c.kwargs)
    if c.method == "TextPath":
        z = 6
    elif c.method == "arrow":
        z = 2
    elif kw.get("color") == GRID:
        z = 1
    elif kw.get("fc") == FILL:
        z = 3
    elif "marker" in kw:
        z = 5
    else:
        z = 4
    return c.with_kwarg("zorder", z + 0.001 * min(index, 999))


def _number_position(scene: Scene, el: Element, S: float, center: np.ndarray) -> np.ndarray:
    """Centre of a written number: beside its segment (away from the figure) or inside its angle."""
    P = [scene.p(r) for r in el.refs]
    if el.kind == "length_label":
        m, nrm = g.lerp(P[0], P[1], 0.5), g.perp(g.unit(P[1] - P[0]))
        if np.dot(nrm, m - center) < 0 or (abs(np.dot(nrm, m - center)) < 1e-9 and nrm[1] < 0):
            nrm = -nrm
        return m + 0.055 * S * nrm
    t1, t2, bis = _interior_angle(scene, el.refs)
    half = math.radians((t2 - t1) / 2)
    return P[1] + (0.07 * S + 0.035 * S / max(math.sin(half), 0.3)) * bis


def _element_calls(scene: Scene, el: Element, S: float, st: Style, center: np.ndarray,
                   headings: dict[str, float]) -> list[DrawCall]:  # noqa: C901
    k, P = el.kind, [scene.p(r) for r in el.refs]
    dashed = bool(el.attrs.get("dashed", False))
    if k == "segment":
        return [_line([P[0][0], P[1][0]], [P[0][1], P[1][1]], st, dashed=dashed)]
    if k in ("line", "ray"):
        a, b = _extended(scene, el)
        return [_line([a[0], b[0]], [a[1], b[1]], st, dashed=dashed)]
    if k == "polygon":
        kw = [("closed", True), ("fill", False), ("ec", "black"), ("lw", st.lw), ("joinstyle", "round")]
        if dashed:
            kw.append(("ls", "--"))
        return [DrawCall("Polygon", ([[_r(p[0]), _r(p[1])] for p in P],), tuple(kw))]
    if k == "region":
        return [DrawCall("Polygon", ([[_r(p[0]), _r(p[1])] for p in P],),
                         (("closed", True), ("fc", FILL), ("ec", "none")))]
    if k == "circle":
        kw = [("fill", False), ("ec", "black"), ("lw", st.lw)] + ([("ls", "--")] if dashed else [])
        return [DrawCall("Circle", ((_r(P[0][0]), _r(P[0][1])), _r(el.attrs["radius"])), tuple(kw))]
    if k in ("arc", "sector"):
        circles = scene.find("circle", (el.refs[0],))
        r = float(circles[0].attrs["radius"]) if k == "sector" and circles else g.dist(P[0], P[1])
        t1, t2 = g.heading(P[0], P[1]), g.heading(P[0], P[2])
        t2 = t2 if t2 > t1 else t2 + 360
        if k == "sector":
            return [DrawCall("Wedge", ((_r(P[0][0]), _r(P[0][1])), _r(r), _r(t1), _r(t2)), (("fc", FILL), ("ec", "none")))]
        return [DrawCall("Arc", ((_r(P[0][0]), _r(P[0][1])), _r(2 * r), _r(2 * r)),
                         (("theta1", _r(t1)), ("theta2", _r(t2)), ("ec", "black"), ("lw", st.lw)))]
    if k == "angle_mark":
        t1, t2, _ = _interior_angle(scene, el.refs)
        out = []
        for i in range(int(el.attrs.get("count", 1))):
            d = 2 * (0.05 + 0.014 * i) * S
            out.append(DrawCall("Arc", ((_r(P[1][0]), _r(P[1][1])), _r(d), _r(d)),
                                (("theta1", _r(t1)), ("theta2", _r(t2)), ("ec", "black"), ("lw", 0.8 * st.lw))))
        return out
    if k == "right_mark":
        s = 0.035 * S
        u1, u2 = g.unit(P[0] - P[1]) * s, g.unit(P[2] - P[1]) * s
        q = [P[1] + u1, P[1] + u1 + u2, P[1] + u2]
        return [_line([p[0] for p in q], [p[1] for p in q], st, lw=0.8 * st.lw)]
    if k in ("ticks", "arrows"):
        n = int(el.attrs.get("count", 1))
        m, u = g.lerp(P[0], P[1], _mark_param(scene, el.refs, S)), g.unit(P[1] - P[0])
        nrm = g.perp(u)
        out = []
        for i in range(n):
            c = m + (i - (n - 1) / 2) * 0.016 * S * u
            if k == "ticks":
                a, b = c - 0.022 * S * nrm, c + 0.022 * S * nrm
                out.append(_line([a[0], b[0]], [a[1], b[1]], st, lw=0.8 * st.lw))
            else:
                tip = c + 0.012 * S * u
                q = [tip - 0.024 * S * u + 0.018 * S * nrm, tip, tip - 0.024 * S * u - 0.018 * S * nrm]
                out.append(_line([p[0] for p in q], [p[1] for p in q], st, lw=0.8 * st.lw))
        return out
    if k == "dot":
        return [DrawCall("plot", ([_r(P[0][0])], [_r(P[0][1])]),
                         (("marker", "o"), ("ms", st.dot), ("color", "black"), ("ls", "none")))]
    if k == "label":
        h = headings[el.refs[0]]
        return [_text(g.polar(P[0], label_offset(S, h), h), el.refs[0], st.font, st)]
    if k == "length_label":
        text = el.attrs.get("text") or format_number(float(el.attrs["value"]))
        return [_text(_number_position(scene, el, S, center), text, 0.9 * st.font, st)]
    if k == "angle_label":
        text = el.attrs.get("text") or format_number(float(el.attrs["value"])) + "°"
        return [_text(_number_position(scene, el, S, center), text, 0.8 * st.font, st)]
    if k == "grid":
        return _grid_calls(el, S, st)
    raise ValueError(f"no layout for element kind {k!r}")


def _mark_param(scene: Scene, refs: tuple[str, ...], S: float) -> float:
    """Where along segment refs to put ticks or arrows: the middle, unless a labelled point sits there."""
    a, b = scene.p(refs[0]), scene.p(refs[1])
    inner = [scene.p(n) for n in scene.labelled() if n not in refs
             and g.point_line_distance(scene.p(n), a, b) < 1e-6 * S and 0 < g.line_param(scene.p(n), a, b) < 1]
    best, best_d = 0.5, -1.0
    for t in (0.5, 0.35, 0.65, 0.25, 0.75):
        d = min((g.dist(g.lerp(a, b, t), q) for q in inner), default=S)
        if d >= 0.07 * S:
            return t
        if d > best_d:
            best, best_d = t, d
    return best


def _grid_calls(el: Element, S: float, st: Style) -> list[DrawCall]:
    x0, x1, y0, y1 = (int(el.attrs[k]) for k in ("xmin", "xmax", "ymin", "ymax"))
    step = int(el.attrs.get("step", 1))
    out = [_line([x, x], [y0, y1], st, color=GRID, lw=0.5 * st.lw) for x in range(x0, x1 + 1)]
    out += [_line([x0, x1], [y, y], st, color=GRID, lw=0.5 * st.lw) for y in range(y0, y1 + 1)]
    out.append(DrawCall("arrow", (float(x0), 0.0, float(x1 - x0) + 0.4, 0.0),
                        (("color", "black"), ("width", _r(0.002 * S)), ("head_width", _r(0.025 * S)),
                         ("length_includes_head", True))))
    out.append(DrawCall("arrow", (0.0, float(y0), 0.0, float(y1 - y0) + 0.4),
                        (("color", "black"), ("width", _r(0.002 * S)), ("head_width", _r(0.025 * S)),
                         ("length_includes_head", True))))
    small = round(0.65 * st.font, 1)
    out += [_text(np.array([x, -0.045 * S]), str(x), small, st) for x in range(x0, x1 + 1, step) if x != 0]
    out += [_text(np.array([-0.045 * S, y]), str(y), small, st) for y in range(y0, y1 + 1, step) if y != 0]
    out.append(_text(np.array([-0.04 * S, -0.04 * S]), "0", small, st))
    out.append(_text(np.array([x1 + 0.4, -0.05 * S]), "x", round(0.8 * st.font, 1), st))
    out.append(_text(np.array([-0.05 * S, y1 + 0.4]), "y", round(0.8 * st.font, 1), st))
    return out


