"""Rendering a scene: one list of matplotlib calls, three ways to run it.

``layout(scene)`` turns a scene into ``DrawCall``s (rounded coordinates, fixed styles). The same calls
are (1) written out as a standalone script by ``emit_script``, (2) replayed on a cached
``Figure``/``FigureCanvasAgg`` by ``render_array`` (the builder's fast path), and (3) replayed on a
fresh pyplot figure saved with ``savefig`` by ``render_naive`` (the benchmark's baseline). Because the
calls are identical, the script reproduces the fast path's pixels exactly.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np

from data_recipes import geometry as g
from data_recipes.facts import format_number
from data_recipes.scene import Element, Scene

PATCHES = ("Arc", "Circle", "Polygon", "Wedge")
MARGIN = 0.16  # fraction of the scene's extent left free on every side (room for labels)
FILL = "0.85"  # shaded regions
GRID = "0.8"


@dataclass(frozen=True)
class DrawCall:
    """One matplotlib call: ``ax.<method>(*args, **kwargs)`` or ``ax.add_patch(<method>(*args, **kwargs))``."""

    method: str
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...]

    def __post_init__(self) -> None:
        # every number is rounded once here, so the script's literals and the fast path's values agree
        object.__setattr__(self, "args", _round_all(self.args))
        object.__setattr__(self, "kwargs", tuple((k, _round_all(v)) for k, v in self.kwargs))

    def pool_key(self) -> tuple[Any, ...]:
        """Calls with equal keys draw artists that differ only in geometry, so one artist can be reused."""
        if self.method == "arrow":
            return (self.method, self.args, self.kwargs)
        if self.method == "Arc":
            return (self.method, tuple(kv for kv in self.kwargs if kv[0] not in ("theta1", "theta2")))
        if self.method == "text":
            return (self.method, self.kwargs)
        return (self.method, self.kwargs)

    def update(self, artist: Any) -> None:
        """Give a pooled artist (made by an equal-keyed call) this call's geometry."""
        m, a = self.method, self.args
        if m == "plot":
            artist.set_data(a[0], a[1])
        elif m == "text":
            artist.set_position((a[0], a[1]))
            artist.set_text(a[2])
        elif m == "TextPath":
            artist.set_path(_text_path(*a))
        elif m == "Polygon":
            artist.set_xy(a[0])
        elif m == "Circle":
            artist.set_center(a[0])
            artist.set_radius(a[1])
        elif m == "Arc":
            kw = dict(self.kwargs)
            artist.set_center(a[0])
            artist.set_width(a[1])
            artist.set_height(a[2])
            artist.theta1, artist.theta2 = kw["theta1"], kw["theta2"]
            artist.stale = True
        elif m == "Wedge":
            artist.set_center(a[0])
            artist.set_radius(a[1])
            artist.set_theta1(a[2])
            artist.set_theta2(a[3])

    def source(self) -> str:
        """The call as one line of Python."""
        parts = [_py(a) for a in self.args] + [f"{k}={_py(v)}" for k, v in self.kwargs]
        if self.method == "TextPath":
            (x, y), text, size = self.args
            kw = ", ".join(f"{k}={_py(v)}" for k, v in self.kwargs)
            return f"ax.add_patch(PathPatch(TextPath(({_py(x)}, {_py(y)}), {text!r}, size={_py(size)}), {kw}))"
        if self.method in PATCHES:
            return f"ax.add_patch({self.method}({', '.join(parts)}))"
        return f"ax.{self.method}({', '.join(parts)})"

    def apply(self, ax: Any) -> list[Any]:
        """Run the call on ``ax``; returns the artists it created."""
        kwargs = dict(self.kwargs)
        if self.method == "TextPath":
            from matplotlib.patches import PathPatch
            from matplotlib.textpath import TextPath

            return [ax.add_patch(PathPatch(TextPath(self.args[0], self.args[1], size=self.args[2]), **kwargs))]
        if self.method in PATCHES:
            from matplotlib import patches

            return [ax.add_patch(getattr(patches, self.method)(*self.args, **kwargs))]
        out = getattr(ax, self.method)(*self.args, **kwargs)
        return list(out) if isinstance(out, list) else [out]


def _round_all(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 3) + 0.0
    if isinstance(v, list):
        return [_round_all(x) for x in v]
    if isinstance(v, tuple):
        return tuple(_round_all(x) for x in v)
    return v


def _py(v: Any) -> str:
    if isinstance(v, float):
        return repr(round(v, 3))
    if isinstance(v, (list, tuple)):
        inner = ", ".join(_py(x) for x in v)
        return f"[{inner}]"
    return repr(v)


def _r(x: float) -> float:
    return round(float(x), 3) + 0.0  # + 0.0 turns -0.0 into 0.0


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
def _incident_directions(scene: Scene, name: str) -> list[float]:
    """Headings (degrees) of the ink leaving point ``name``: edges, lines and circles through it."""
    p = scene.p(name)
    tol = 1e-6 * max(1.0, float(np.abs(np.array(list(scene.points.values()))).max()))
    out: list[float] = []
    edges: list[tuple[np.ndarray, np.ndarray, str]] = []
    for el in scene.elements:
        if el.kind in ("segment", "line", "ray"):
            a, b = (scene.p(el.refs[0]), scene.p(el.refs[1])) if el.kind == "segment" else _extended(scene, el)
            edges.append((a, b, el.kind))
        elif el.kind == "polygon":
            n = len(el.refs)
            edges += [(scene.p(el.refs[i]), scene.p(el.refs[(i + 1) % n]), "segment") for i in range(n)]
        elif el.kind in ("circle", "arc"):
            c = scene.p(el.refs[0])
            r = float(el.attrs["radius"]) if el.kind == "circle" else g.dist(c, scene.p(el.refs[1]))
            if abs(g.dist(c, p) - r) < tol * 10:
                h = g.heading(c, p)
                out += [(h + 90) % 360, (h - 90) % 360, (h + 180) % 360]  # keep labels outside circles
    for a, b, _kind in edges:
        if g.dist(a, p) < tol:
            out.append(g.heading(p, b))
        elif g.dist(b, p) < tol:
            out.append(g.heading(p, a))
        elif g.point_line_distance(p, a, b) < tol and 0 < g.line_param(p, a, b) < 1:
            out += [g.heading(p, a), g.heading(p, b)]
    return out


def label_direction(scene: Scene, name: str) -> float:
    """Heading for the label of ``name``: the middle of the widest free angular gap, leaning outward."""
    pts = np.array(list(scene.points.values()))
    outward = scene.p(name) - pts.mean(axis=0)
    out_h = g.heading((0, 0), outward) if np.hypot(*outward) > 1e-9 else 90.0
    dirs = sorted(set(round(d, 6) for d in _incident_directions(scene, name)))
    if not dirs:
        return out_h
    best, best_score = out_h, -1e9
    for i, d in enumerate(dirs):
        nxt = dirs[(i + 1) % len(dirs)] + (360 if i == len(dirs) - 1 else 0)
        gap = nxt - d if len(dirs) > 1 else 360.0
        mid = (d + gap / 2) % 360
        score = gap + 25.0 * math.cos(math.radians(mid - out_h))
        if score > best_score:
            best, best_score = mid, score
    return best


# -- the layout: scene -> draw calls -----------------------------------------------------------
def _line(xs: list[float], ys: list[float], st: Style, color: str = "black", dashed: bool = False,
          lw: float | None = None) -> DrawCall:
    kw: list[tuple[str, Any]] = [("color", color), ("lw", lw if lw is not None else st.lw)]
    if dashed:
        kw.append(("ls", "--"))
    kw.append(("solid_capstyle", "round"))
    return DrawCall("plot", ([_r(x) for x in xs], [_r(y) for y in ys]), tuple(kw))


@lru_cache(maxsize=4096)
def _glyphs(s: str) -> tuple[np.ndarray, np.ndarray]:
    """Outline of ``s`` in the default font at ``text_to_path.FONT_SCALE`` (what ``TextPath`` builds on)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    verts, codes = text_to_path.get_text_path(FontProperties(), s)
    return np.asarray(verts, dtype=float), np.asarray(codes)


def _text_path(xy: tuple[float, float], s: str, size: float) -> Any:
    """The same vertices ``TextPath(xy, s, size=size)`` draws, from the cached outline (no font work)."""
    from matplotlib.path import Path
    from matplotlib.textpath import text_to_path
    from matplotlib.transforms import Affine2D

    verts, codes = _glyphs(s)
    return Path(Affine2D().scale(size / text_to_path.FONT_SCALE).translate(*xy).transform(verts), codes)


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
    return DrawCall("TextPath", ((_r(x0), _r(y0)), s, size), (("fc", "black"), ("ec", "none"), ("lw", 0.0)))


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
    pts = np.array(list(scene.points.values()))
    center = pts.mean(axis=0)
    calls: list[DrawCall] = []
    for el in sorted(scene.elements, key=lambda e: ORDER[e.kind]):
        calls += _element_calls(scene, el, S, st, center)
    return lim, [_with_zorder(c) for c in calls]


def _with_zorder(c: DrawCall) -> DrawCall:
    """Explicit layers (grid < fills < ink < dots < text): drawing order never depends on creation order."""
    kw = dict(c.kwargs)
    if c.method == "TextPath":
        z = 3.0
    elif c.method == "arrow":
        z = 0.6
    elif kw.get("color") == GRID:
        z = 0.5
    elif kw.get("fc") == FILL:
        z = 0.7
    elif "marker" in kw:
        z = 2.5
    else:
        z = 2.0
    return DrawCall(c.method, c.args, (*c.kwargs, ("zorder", z)))


def _element_calls(scene: Scene, el: Element, S: float, st: Style, center: np.ndarray) -> list[DrawCall]:  # noqa: C901
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
        r = g.dist(P[0], P[1])
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
        h = label_direction(scene, el.refs[0])
        lean = 1.0 + 0.25 * abs(math.sin(math.radians(2 * h)))
        return [_text(g.polar(P[0], 0.05 * S * lean, h), el.refs[0], st.font, st)]
    if k == "length_label":
        text = el.attrs.get("text") or format_number(float(el.attrs["value"]))
        m, nrm = g.lerp(P[0], P[1], 0.5), g.perp(g.unit(P[1] - P[0]))
        if np.dot(nrm, m - center) < 0 or (abs(np.dot(nrm, m - center)) < 1e-9 and nrm[1] < 0):
            nrm = -nrm
        return [_text(m + 0.055 * S * nrm, text, 0.9 * st.font, st)]
    if k == "angle_label":
        text = el.attrs.get("text") or format_number(float(el.attrs["value"])) + "°"
        t1, t2, bis = _interior_angle(scene, el.refs)
        half = math.radians((t2 - t1) / 2)
        d = 0.07 * S + 0.035 * S / max(math.sin(half), 0.3)
        return [_text(P[1] + d * bis, text, 0.8 * st.font, st)]
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


# -- the three paths -------------------------------------------------------------------------
def emit_script(scene: Scene, size_px: int = 336, dpi: int = 100) -> str:
    """A standalone matplotlib script that writes this scene's PNG to ``sys.argv[1]``."""
    lim, calls = layout(scene, size_px, dpi)
    inch = size_px / dpi
    family = scene.meta.get("family", "diagram")
    lines = [
        f'"""Geometry diagram ({family}) generated by mmgeolm. Usage: python this.py [out.png]"""',
        "import sys",
        "",
        "import matplotlib",
        "",
        'matplotlib.use("Agg")',
        "import matplotlib.pyplot as plt  # noqa: E402",
        "from matplotlib.patches import Arc, Circle, PathPatch, Polygon, Wedge  # noqa: E402,F401",
        "from matplotlib.textpath import TextPath  # noqa: E402,F401",
        "",
        f"fig = plt.figure(figsize=({inch!r}, {inch!r}), dpi={dpi})",
        "ax = fig.add_axes([0, 0, 1, 1])",
        "ax.set_axis_off()",
        f"ax.set_xlim({lim[0]!r}, {lim[1]!r})",
        f"ax.set_ylim({lim[2]!r}, {lim[3]!r})",
    ]
    lines += [c.source() for c in calls]
    lines.append(f'fig.savefig(sys.argv[1] if len(sys.argv) > 1 else "diagram.png", dpi={dpi})')
    return "\n".join(lines) + "\n"


class _Canvas:
    """A reusable figure, axes and Agg canvas for one output size (one per process and size)."""

    def __init__(self, size_px: int, dpi: int) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.fig = Figure(figsize=(size_px / dpi, size_px / dpi), dpi=dpi)
        self.canvas = FigureCanvasAgg(self.fig)
        self.ax = self.fig.add_axes([0, 0, 1, 1])
        self.ax.set_axis_off()
        self.pools: dict[tuple[Any, ...], list[Any]] = {}

    def draw(self, lim: tuple[float, ...], calls: list[DrawCall]) -> np.ndarray:
        # Artists are pooled by style and re-used with new geometry: creating matplotlib artists costs
        # more than drawing them. Unused pooled artists are hidden. Layers are explicit zorders, so
        # re-use never changes what is drawn over what.
        self.ax.set_xlim(lim[0], lim[1])
        self.ax.set_ylim(lim[2], lim[3])
        used: dict[tuple[Any, ...], int] = {}
        for c in calls:
            key = c.pool_key()
            pool = self.pools.setdefault(key, [])
            i = used.get(key, 0)
            used[key] = i + 1
            if i < len(pool):
                c.update(pool[i])
                pool[i].set_visible(True)
            else:
                pool.extend(c.apply(self.ax))
        for key, pool in self.pools.items():
            for artist in pool[used.get(key, 0):]:
                artist.set_visible(False)
        self.canvas.draw()
        return np.asarray(self.canvas.buffer_rgba())[..., :3].copy()


_CANVASES: dict[tuple[int, int], _Canvas] = {}


def render_array(scene: Scene, size_px: int = 336, dpi: int = 100) -> np.ndarray:
    """The scene as an (H, W, 3) uint8 array, drawn on a cached canvas (the fast path)."""
    key = (int(size_px), int(dpi))
    if key not in _CANVASES:
        _CANVASES[key] = _Canvas(*key)
    lim, calls = layout(scene, size_px, dpi)
    return _CANVASES[key].draw(lim, calls)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 array (fast zlib level; deterministic)."""
    from PIL import Image

    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim == 3 and (image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all():
        image = image[..., 0]  # our diagrams are grey: a one-channel PNG is a third of the work, same pixels
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def render_naive(scene: Scene, path: str, size_px: int = 336, dpi: int = 100) -> None:
    """The baseline: a new pyplot figure per image, the same calls, ``savefig`` to ``path``."""
    import matplotlib.pyplot as plt

    lim, calls = layout(scene, size_px, dpi)
    fig = plt.figure(figsize=(size_px / dpi, size_px / dpi), dpi=dpi)
    try:
        ax = fig.add_axes([0, 0, 1, 1])
        ax.set_axis_off()
        ax.set_xlim(lim[0], lim[1])
        ax.set_ylim(lim[2], lim[3])
        for c in calls:
            c.apply(ax)
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
