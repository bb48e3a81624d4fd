"""Draw calls: one matplotlib call each, printable as a line of Python and replayable on an axes.

Numbers are rounded once, when a call is made, so the emitted script and the fast path use the very
same values. Text is drawn as glyph outlines (``TextPath``), whose vertices are cached per string.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

PATCHES = ("Arc", "Circle", "Polygon", "Wedge")


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

    def with_kwarg(self, key: str, value: Any) -> DrawCall:
        """This call with one more keyword argument (the numbers it has are rounded already)."""
        call = copy.copy(self)  # no __post_init__: rounding again would only cost time
        object.__setattr__(call, "kwargs", (*self.kwargs, (key, _round_all(value))))
        return call

    def pool_key(self) -> tuple[Any, ...]:
        """Calls with equal keys draw artists that differ only in geometry, so one artist can be reused."""
        style = tuple(kv for kv in self.kwargs if kv[0] not in ("theta1", "theta2", "zorder"))
        if self.method == "arrow":
            return (self.method, self.args, style)
        return (self.method, style)

    def update(self, artist: Any) -> None:
        """Give a pooled artist (made by an equal-keyed call) this call's geometry."""
        m, a = self.method, self.args
        artist.set_zorder(dict(self.kwargs)["zorder"])
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
            return f"ax.add_patch(PathPatch(TextPath(({_py(x)}, {_py(y)}), {text!r}, size={_py(size)}, prop=FONT), {kw}))"
        if self.method in PATCHES:
            return f"ax.add_patch({self.method}({', '.join(parts)}))"
        return f"ax.{self.method}({', '.join(parts)})"

    def apply(self, ax: Any) -> list[Any]:
        """Run the call on ``ax``; returns the artists it created."""
        kwargs = dict(self.kwargs)
        if self.method == "TextPath":
            from matplotlib.patches import PathPatch
            from matplotlib.textpath import TextPath

            return [ax.add_patch(PathPatch(TextPath(self.args[0], self.args[1], size=self.args[2], prop=font()), **kwargs))]
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



FONT_FAMILY = "DejaVu Serif"  # ships with matplotlib; its serifs keep "I" and "l" legible at 224 px


@lru_cache(maxsize=1)
def font() -> Any:
    """The labels' font (the script defines the same one as ``FONT``)."""
    from matplotlib.font_manager import FontProperties

    return FontProperties(family=FONT_FAMILY)


@lru_cache(maxsize=4096)
def _glyphs(s: str) -> tuple[np.ndarray, np.ndarray]:
    """Outline of ``s`` in the labels' font at ``text_to_path.FONT_SCALE`` (what ``TextPath`` builds on)."""
    from matplotlib.textpath import text_to_path

    verts, codes = text_to_path.get_text_path(font(), s)
    return np.asarray(verts, dtype=float), np.asarray(codes)


def _text_path(xy: tuple[float, float], s: str, size: float) -> Any:
    """The same vertices ``TextPath(xy, s, size=size)`` draws, from the cached outline (no font work)."""
    from matplotlib.path import Path
    from matplotlib.textpath import text_to_path
    from matplotlib.transforms import Affine2D

    verts, codes = _glyphs(s)
    return Path(Affine2D().scale(size / text_to_path.FONT_SCALE).translate(*xy).transform(verts), codes)


