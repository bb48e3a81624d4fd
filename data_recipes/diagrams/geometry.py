"""Plane-geometry helpers on 2-vectors (numpy arrays of shape (2,)); angles are in degrees."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Point = np.ndarray


def vec(x: float, y: float) -> Point:
    """A 2-vector of floats."""
    return np.array([float(x), float(y)])


def dist(a: Point, b: Point) -> float:
    """Euclidean distance."""
    return float(np.hypot(*(np.asarray(a, float) - np.asarray(b, float))))


def unit(v: Point) -> Point:
    """``v`` scaled to length one."""
    n = float(np.hypot(*v))
    if n == 0:
        raise ValueError("cannot normalise a zero vector")
    return np.asarray(v, float) / n


def perp(v: Point) -> Point:
    """``v`` rotated by +90 degrees."""
    return np.array([-v[1], v[0]], dtype=float)


def cross(a: Point, b: Point) -> float:
    """z-component of the cross product of two 2-vectors."""
    return float(a[0] * b[1] - a[1] * b[0])


def lerp(a: Point, b: Point, t: float) -> Point:
    """The point ``a + t (b - a)``."""
    return np.asarray(a, float) + t * (np.asarray(b, float) - np.asarray(a, float))


def polar(center: Point, radius: float, degrees: float) -> Point:
    """The point at ``radius`` from ``center`` in direction ``degrees``."""
    t = math.radians(degrees)
    return np.asarray(center, float) + radius * np.array([math.cos(t), math.sin(t)])


def heading(a: Point, b: Point) -> float:
    """Direction of ``b - a`` in degrees, in [0, 360)."""
    d = np.asarray(b, float) - np.asarray(a, float)
    return math.degrees(math.atan2(d[1], d[0])) % 360.0


def rotate_about(p: Point, center: Point, degrees: float) -> Point:
    """``p`` rotated counter-clockwise by ``degrees`` around ``center``."""
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    d = np.asarray(p, float) - np.asarray(center, float)
    return np.asarray(center, float) + np.array([c * d[0] - s * d[1], s * d[0] + c * d[1]])


def angle_at(a: Point, b: Point, c: Point) -> float:
    """The (unsigned) angle ABC at vertex ``b`` in degrees, in [0, 180]."""
    u, v = np.asarray(a, float) - b, np.asarray(c, float) - b
    cosv = float(np.dot(u, v) / (np.hypot(*u) * np.hypot(*v)))
    return math.degrees(math.acos(max(-1.0, min(1.0, cosv))))


def line_angle(a: Point, b: Point, c: Point, d: Point) -> float:
    """Acute angle between line AB and line CD in degrees, in [0, 90]."""
    t = abs(heading(a, b) - heading(c, d)) % 180.0
    return min(t, 180.0 - t)


def foot(p: Point, a: Point, b: Point) -> Point:
    """Orthogonal projection of ``p`` on line AB."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    return a + float(np.dot(np.asarray(p, float) - a, d) / np.dot(d, d)) * d


def line_param(p: Point, a: Point, b: Point) -> float:
    """Parameter t of the projection of ``p`` on line AB (A at 0, B at 1)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    return float(np.dot(np.asarray(p, float) - a, d) / np.dot(d, d))


def point_line_distance(p: Point, a: Point, b: Point) -> float:
    """Distance from ``p`` to the infinite line AB."""
    return dist(p, foot(p, a, b))


def intersect_lines(a: Point, b: Point, c: Point, d: Point) -> Point:
    """Intersection of lines AB and CD; raises ValueError when they are parallel."""
    r, s = np.asarray(b, float) - a, np.asarray(d, float) - c
    den = cross(r, s)
    if abs(den) < 1e-12:
        raise ValueError("lines are parallel")
    t = cross(np.asarray(c, float) - a, s) / den
    return np.asarray(a, float) + t * r


def circumcenter(a: Point, b: Point, c: Point) -> Point:
    """Centre of the circle through A, B, C."""
    ax, ay = a
    bx, by = b
    cx, cy = c
    d = 2 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
    if abs(d) < 1e-12:
        raise ValueError("points are collinear")
    ux = ((ax**2 + ay**2) * (by - cy) + (bx**2 + by**2) * (cy - ay) + (cx**2 + cy**2) * (ay - by)) / d
    uy = ((ax**2 + ay**2) * (cx - bx) + (bx**2 + by**2) * (ax - cx) + (cx**2 + cy**2) * (bx - ax)) / d
    return vec(ux, uy)


def incircle(a: Point, b: Point, c: Point) -> tuple[Point, float]:
    """Centre and radius of the circle inscribed in triangle ABC."""
    la, lb, lc = dist(b, c), dist(a, c), dist(a, b)
    center = (la * np.asarray(a, float) + lb * np.asarray(b, float) + lc * np.asarray(c, float)) / (la + lb + lc)
    return center, point_line_distance(center, a, b)


def tangent_points(p: Point, center: Point, radius: float) -> tuple[Point, Point]:
    """The two points where tangents from external point ``p`` touch the circle."""
    d = dist(p, center)
    if d <= radius:
        raise ValueError("point is not outside the circle")
    base = heading(center, p)
    half = math.degrees(math.acos(radius / d))
    return polar(center, radius, base + half), polar(center, radius, base - half)


def polygon_area(points: Sequence[Point]) -> float:
    """Signed area (positive when counter-clockwise)."""
    pts = np.asarray(points, float)
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def centroid(points: Sequence[Point]) -> Point:
    """Mean of the points."""
    return np.asarray(points, float).mean(axis=0)


def is_convex(points: Sequence[Point]) -> bool:
    """Whether the polygon (in order) is strictly convex."""
    pts = np.asarray(points, float)
    n = len(pts)
    signs = [cross(pts[(i + 1) % n] - pts[i], pts[(i + 2) % n] - pts[(i + 1) % n]) for i in range(n)]
    return all(s > 1e-9 for s in signs) or all(s < -1e-9 for s in signs)
