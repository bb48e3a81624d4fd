"""Line and polygon families: parallel lines cut by a transversal, regular polygons, figures on a coordinate grid."""
from __future__ import annotations

import math

import numpy as np

from data_recipes.diagrams import geometry as g
from data_recipes.diagrams.families import register_family
from data_recipes.diagrams.families.common import (
    POOL,
    annotate_angle,
    annotate_length,
    label_all,
    pick_letters,
    transform,
)
from data_recipes.diagrams.scene import Scene


@register_family("parallel_transversal")
def parallel_transversal(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Lines AB and CD (parallel, arrows) cut by transversal EF at G and H; one angle annotated."""
    a_, b_, c_, d_, e_, f_, g_, h_ = pick_letters(rng, 8)
    length, gap = 10.0, float(rng.integers(3, 6))
    phi = float(rng.choice([40, 45, 50, 55, 60, 65, 70, 110, 115, 120, 125, 130, 135]))
    gx = float(rng.uniform(3.0, 4.5)) if phi < 90 else float(rng.uniform(5.5, 7.0))
    G = g.vec(gx, 0)
    H = G + gap * g.vec(1 / math.tan(math.radians(phi)), 1)
    u = g.unit(H - G)
    scene = Scene(points={a_: g.vec(0, 0), b_: g.vec(length, 0), c_: g.vec(0, gap), d_: g.vec(length, gap),
                          g_: G, h_: H, e_: G - 2.2 * u, f_: H + 2.2 * u})
    scene.add("segment", a_, b_)
    scene.add("segment", c_, d_)
    scene.add("segment", e_, f_)
    scene.add("arrows", a_, b_, count=1)
    scene.add("arrows", c_, d_, count=1)
    facts = [f"parallel({a_}{b_},{c_}{d_})"]
    annotate_angle(scene, b_, g_, h_, phi, facts)
    label_all(scene, [a_, b_, c_, d_, e_, f_, g_, h_], dots=(g_, h_))
    transform(scene, rng)
    return scene, facts


POLYGON_NAMES = {5: "pentagon", 6: "hexagon", 8: "octagon"}


@register_family("regular_polygon")
def regular_polygon(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """Regular pentagon, hexagon or octagon with one side annotated."""
    n = int(rng.choice([5, 6, 8]))
    t = pick_letters(rng, n)
    side = int(rng.integers(3, 9))
    r = side / (2 * math.sin(math.pi / n))
    start = -90 - 180 / n
    pts = {t[i]: g.polar((0, 0), r, start + 360 * i / n) for i in range(n)}
    scene = Scene(points=pts)
    scene.add("polygon", *t)
    facts = [f"shape({''.join(t)})=regular_{POLYGON_NAMES[n]}"]
    annotate_length(scene, t[0], t[1], side, facts)
    label_all(scene, t)
    transform(scene, rng, mirror=False)
    return scene, facts


@register_family("coordinate_grid")
def coordinate_grid(rng: np.random.Generator) -> tuple[Scene, list[str]]:
    """A triangle (often right-angled) or quadrilateral with integer vertices on a coordinate grid."""
    size = 8
    while True:
        n = int(rng.choice([3, 3, 4]))
        pts = [(int(x), int(y)) for x, y in rng.integers(1, size, size=(n, 2))]
        right = n == 3 and rng.random() < 0.5
        if right:
            (x0, y0), w, h = pts[0], int(rng.integers(2, 6)), int(rng.integers(2, 6))
            sx, sy = (1 if x0 + w < size else -1), (1 if y0 + h < size else -1)
            pts = [(x0, y0), (x0 + sx * w, y0), (x0, y0 + sy * h)]
        arr = [g.vec(*p) for p in pts]
        if len(set(pts)) < n or not all(0 < p[0] < size and 0 < p[1] < size for p in pts):
            continue
        if abs(g.polygon_area(arr)) < 4 or (n == 4 and not g.is_convex(arr)):
            continue
        if min(g.angle_at(arr[i - 1], arr[i], arr[(i + 1) % n]) for i in range(n)) < 25:
            continue
        break
    if g.polygon_area(arr) < 0:
        pts, arr = pts[::-1], arr[::-1]
        if right:
            pts, arr = pts[-1:] + pts[:-1], arr[-1:] + arr[:-1]
    t = POOL[:n] if rng.random() < 0.7 else pick_letters(rng, n)
    scene = Scene(points={t[i]: arr[i] for i in range(n)})
    scene.add("grid", xmin=0, xmax=size, ymin=0, ymax=size, step=1)
    scene.add("polygon", *t)
    facts = [f"point({t[i]})=({pts[i][0]},{pts[i][1]})" for i in range(n)]
    if right:
        k = pts.index(next(p for p in pts if sum(1 for q in pts if q[0] == p[0] or q[1] == p[1]) == 3))
        scene.add("right_mark", t[k - 1], t[k], t[(k + 1) % 3])
        facts.append(f"right_triangle({t[k - 1]}{t[k]}{t[(k + 1) % 3]})")
        if rng.random() < 0.5:
            a, b = t[k], t[(k + 1) % 3]
            annotate_length(scene, a, b, g.dist(scene.p(a), scene.p(b)), facts)
    label_all(scene, list(t), dots=tuple(t))
    return scene, facts
