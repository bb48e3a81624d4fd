"""Numeric edits: angles, ratios and other numbers (lengths, areas), with plausible new values.

Only the digits change, so units, degree signs (°, ^\\circ, "degrees") and the ratio's notation stay
as written. New values keep the original's precision and sign and stay in range (angles in (0, 180),
or (0, 360) for reflex angles). Angle sums stay plausible where that is easy: when the degree values
of a sentence sum to less than 180 they still do after the edit, and when a sentence holds exactly
three angles summing to 180 (a triangle) one goes up and another down by the same amount.
"""
from __future__ import annotations

import re

import numpy as np

from .grammar import segment_index, sentence_spans
from .registry import Edit, Span, register_rule

_NUM = r"\d+(?:\.\d+)?"
_DEGREE = r"\s*(?:°|\^\s*\{?\s*\\circ\s*\}?|\\circ|\s?degrees?\b|\s?deg\b)"
ANGLE_RE = re.compile(rf"(?<![A-Za-z0-9_.^\\{{])({_NUM})(?={_DEGREE})")
RATIO_RES = (
    re.compile(r"(?<![A-Za-z0-9_.^\\{])(\d+)\s*[:∶]\s*(\d+)(?![0-9]|\.\d)"),
    re.compile(r"(?<![A-Za-z0-9_.^\\{])(\d+)\s*/\s*(\d+)(?![0-9]|\.\d)"),
    re.compile(r"\\[dt]?frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}"),
)
NUMBER_RE = re.compile(rf"(?<![A-Za-z0-9_.^\\{{]){_NUM}(?![0-9]|\.\d)")

MAX_CANDIDATES = 3


def _format_like(original: str, value: float) -> str:
    decimals = len(original.split(".")[1]) if "." in original else 0
    return f"{value:.{decimals}f}" if decimals else str(int(round(value)))


def _pick(rng: np.random.Generator, values: list, k: int = MAX_CANDIDATES) -> list:
    values = list(dict.fromkeys(values))
    if len(values) <= k:
        return values
    return [values[i] for i in sorted(rng.choice(len(values), size=k, replace=False))]


def _degree_values(caption: str) -> list[tuple[int, int, float]]:
    return [(m.start(1), m.end(1), float(m.group(1))) for m in ANGLE_RE.finditer(caption)]


@register_rule("number_angle", "number", "change an angle in degrees, keeping angle sums plausible")
def propose_angles(caption: str, rng: np.random.Generator) -> list[Edit]:
    angles = _degree_values(caption)
    sentences = sentence_spans(caption)
    edits = []
    for start, end, value in angles:
        text = caption[start:end]
        if value <= 0 or value >= 360:
            continue
        same = [a for a in angles if segment_index(sentences, a[0]) == segment_index(sentences, start)]
        others = [a for a in same if a[0] != start]
        rest = sum(a[2] for a in others)
        steps = (5, 10, 15, 20) if value % 5 == 0 else (2, 5, 10)
        deltas = [s for s in steps] + [-s for s in steps]
        high = 360 if value >= 180 else 180
        if len(same) == 3 and abs(value + rest - 180) < 1e-6:
            # A triangle's three angles: move one up and another (the next) down by the same amount.
            partner = others[0]
            options = [d for d in deltas if 0 < value + d < 180 and 0 < partner[2] - d < 180]
            for d in _pick(rng, options):
                spans = (Span(start, end, _format_like(text, value + d)),
                         Span(partner[0], partner[1], _format_like(caption[partner[0]:partner[1]], partner[2] - d)))
                edits.append(Edit("number_angle", spans))
            continue
        options = [value + d for d in deltas if 0 < value + d < high]
        if others and value + rest < 180:
            options = [v for v in options if v + rest < 180]
        edits.extend(
            Edit("number_angle", (Span(start, end, _format_like(text, v)),)) for v in _pick(rng, options)
        )
    return edits


def _ratio_spans(caption: str) -> list[re.Match]:
    return [m for pattern in RATIO_RES for m in pattern.finditer(caption)]


@register_rule("number_ratio", "number", "change a ratio or fraction (1:2 -> 2:1, 2/3 -> 2/5)")
def propose_ratios(caption: str, rng: np.random.Generator) -> list[Edit]:
    edits = []
    for m in _ratio_spans(caption):
        a, b = int(m.group(1)), int(m.group(2))
        if a <= 0 or b <= 0:
            continue
        options = [(b, a), (a, b + 1), (a + 1, b), (a, b + 2)]
        options = [(x, y) for x, y in options if x * b != y * a]
        for x, y in _pick(rng, options, 2):
            spans = (Span(m.start(1), m.end(1), str(x)), Span(m.start(2), m.end(2), str(y)))
            edits.append(Edit("number_ratio", spans))
    return edits


@register_rule("number_length", "number", "change a length, area or other plain number (side 8 -> side 6)")
def propose_lengths(caption: str, rng: np.random.Generator) -> list[Edit]:
    taken = [(s, e) for s, e, _ in _degree_values(caption)]
    taken += [(m.start(), m.end()) for m in _ratio_spans(caption)]
    edits = []
    for m in NUMBER_RE.finditer(caption):
        if any(s <= m.start() < e for s, e in taken):
            continue
        text = m.group()
        value = float(text)
        if "." in text:
            options = [value * f for f in (0.5, 0.75, 1.25, 1.5, 2.0)]
        else:
            n = int(text)
            options = [n + d for d in (-3, -2, -1, 1, 2, 3)] + [2 * n] + ([n // 2] if n >= 4 else [])
        formatted = [_format_like(text, v) for v in options if v > 0]
        formatted = [f for f in formatted if float(f) != value]
        edits.extend(Edit("number_length", (Span(m.start(), m.end(), f),)) for f in _pick(rng, formatted))
    return edits
