"""Concept and relation swaps: replace a geometric term by a related but different one.

Each rule is a table ``term -> alternatives``. Nouns carry their plural so that a swap keeps the
number ("squares" -> "rhombi"); letter case follows the original ("Square" -> "Rectangle"); the
engine then makes a preceding "a"/"an" agree. A context pattern keeps ambiguous words to their
geometric sense ("right" only before triangle/angle, "square" not in "square root").
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from .grammar import match_case
from .registry import Edit, Span, register_rule

Forms = tuple[str, str | None]  # (singular, plural or None for adjectives, verbs and symbols)


def _noun(singular: str, plural: str | None = None) -> Forms:
    return (singular, plural or singular + "s")


def _word(word: str) -> Forms:
    return (word, None)


def _build(table: Mapping[Forms, Sequence[Forms]]) -> dict[str, list[str]]:
    """Flatten a table of forms into ``surface form (lower case) -> replacement surface forms``."""
    out: dict[str, list[str]] = {}
    for source, targets in table.items():
        for number in (0, 1):
            if source[number] is None:
                continue
            out[source[number]] = [t[number] if t[number] is not None else t[0] for t in targets]
    return out


def _table_rule(name: str, family: str, table: Mapping[Forms, Sequence[Forms]], after: str = "",
                before: str = "", description: str = "") -> None:
    """Register a swap rule from a table; ``after``/``before`` are look-ahead/look-behind contexts."""
    mapping = _build(table)
    terms = sorted(mapping, key=len, reverse=True)
    pieces = "|".join(
        re.escape(t).replace(r"\ ", r"\s+") for t in terms
    )
    edge_l = "" if not terms[0][0].isalpha() else r"(?<![A-Za-z\\])"
    pattern = re.compile(f"{before}{edge_l}(?:{pieces})(?![A-Za-z]){after}", re.IGNORECASE)

    def propose(caption: str, rng: np.random.Generator) -> list[Edit]:
        edits = []
        for m in pattern.finditer(caption):
            key = re.sub(r"\s+", " ", m.group()).lower()
            for replacement in mapping.get(key, []):
                text = match_case(m.group(), replacement)
                if text.lower() != m.group().lower():
                    edits.append(Edit(name, (Span(m.start(), m.end(), text),)))
        return edits

    propose.__doc__ = description
    register_rule(name, family, description)(propose)


def _symbol_rule(name: str, family: str, pairs: Mapping[str, Sequence[str]], description: str) -> None:
    """Register a swap rule over symbols (matched literally, no word boundaries)."""
    terms = sorted(pairs, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(t) + (r"(?![A-Za-z])" if t[-1].isalpha() else "") for t in terms))

    def propose(caption: str, rng: np.random.Generator) -> list[Edit]:
        return [
            Edit(name, (Span(m.start(), m.end(), replacement),))
            for m in pattern.finditer(caption)
            for replacement in pairs[m.group()]
        ]

    register_rule(name, family, description)(propose)


_table_rule("quadrilateral_type", "concept", {
    _noun("square"): [_noun("rectangle"), _noun("rhombus", "rhombi")],
    _noun("rectangle"): [_noun("square"), _noun("parallelogram")],
    _noun("rhombus", "rhombi"): [_noun("square"), _noun("parallelogram")],
    _noun("parallelogram"): [_noun("rectangle"), _noun("rhombus", "rhombi"), _noun("trapezoid")],
    _noun("trapezoid"): [_noun("parallelogram")],
    _noun("trapezium", "trapezia"): [_noun("parallelogram")],
    _noun("kite"): [_noun("rhombus", "rhombi")],
}, after=r"(?!\s+(?:root|units?|centimet|met|cm\b|m\b|inch|feet|foot))",
    description="square <-> rectangle/rhombus, parallelogram <-> rectangle/rhombus/trapezoid, kite -> rhombus")

_table_rule("triangle_sides", "concept", {
    _word("equilateral"): [_word("isosceles")],
    _word("isosceles"): [_word("scalene"), _word("equilateral")],
    _word("scalene"): [_word("isosceles")],
}, after=r"(?!\s+trapez)", description="equilateral -> isosceles, isosceles -> scalene/equilateral")

_table_rule("angle_type", "concept", {
    _word("acute"): [_word("obtuse"), _word("right")],
    _word("obtuse"): [_word("acute"), _word("right")],
    _word("right"): [_word("acute"), _word("obtuse")],
}, after=r"(?=[\s-]+(?:angled?|triangles?|△|\\triangle))",
    description="acute / obtuse / right (triangles and angles)")

_table_rule("similar_congruent", "concept", {
    _word("similar"): [_word("congruent")],
    _word("congruent"): [_word("similar")],
}, description="similar <-> congruent")

_table_rule("inscribed_circumscribed", "concept", {
    _word("inscribed in"): [_word("circumscribed about")],
    _word("circumscribed about"): [_word("inscribed in")],
    _word("circumscribed around"): [_word("inscribed in")],
    _word("inscribed"): [_word("circumscribed")],
    _word("circumscribed"): [_word("inscribed")],
    _noun("incircle"): [_noun("circumcircle")],
    _noun("circumcircle"): [_noun("incircle")],
}, description="inscribed <-> circumscribed, incircle <-> circumcircle")

_table_rule("tangent_secant", "concept", {
    _noun("tangent"): [_noun("secant")],
    _noun("secant"): [_noun("tangent")],
}, description="tangent <-> secant")

_table_rule("cevian_type", "concept", {
    _noun("median"): [_noun("altitude"), _noun("angle bisector")],
    _noun("altitude"): [_noun("median"), _noun("angle bisector")],
    _noun("height"): [_noun("median")],
    _noun("angle bisector"): [_noun("median"), _noun("altitude")],
    _noun("perpendicular bisector"): [_noun("median"), _noun("angle bisector")],
}, description="median / altitude / angle bisector / perpendicular bisector")

_table_rule("chord_diameter", "concept", {
    _noun("diameter"): [_noun("chord"), _noun("radius", "radii")],
    _noun("chord"): [_noun("diameter")],
    _noun("radius", "radii"): [_noun("diameter")],
}, description="chord <-> diameter, radius -> diameter")

_table_rule("parallel_perpendicular", "concept", {
    _word("parallel"): [_word("perpendicular")],
    _word("perpendicular"): [_word("parallel")],
}, after=r"(?!\s+bisector)", description="parallel <-> perpendicular")

_table_rule("division_point", "concept", {
    _noun("midpoint"): [_noun("trisection point")],
    _noun("mid-point"): [_noun("trisection point")],
    _noun("trisection point"): [_noun("midpoint")],
}, description="midpoint <-> trisection point")

_table_rule("triangle_center", "concept", {
    _noun("centroid"): [_noun("incenter"), _noun("orthocenter")],
    _noun("incenter"): [_noun("circumcenter"), _noun("centroid")],
    _noun("circumcenter"): [_noun("incenter"), _noun("orthocenter")],
    _noun("orthocenter"): [_noun("centroid"), _noun("circumcenter")],
    _noun("incentre"): [_noun("circumcentre")],
    _noun("circumcentre"): [_noun("incentre")],
}, description="centroid / incenter / circumcenter / orthocenter")

_table_rule("angle_pair", "concept", {
    _word("complementary"): [_word("supplementary")],
    _word("supplementary"): [_word("complementary")],
}, description="complementary <-> supplementary")

_table_rule("relation_verb", "relation", {
    _word("intersects"): [_word("bisects")],
    _word("bisects"): [_word("intersects"), _word("trisects")],
    _word("trisects"): [_word("bisects")],
    _word("intersect"): [_word("bisect")],
    _word("bisect"): [_word("intersect")],
    _word("lies on"): [_word("lies outside"), _word("lies inside")],
    _word("lies inside"): [_word("lies outside"), _word("lies on")],
    _word("lies outside"): [_word("lies inside"), _word("lies on")],
    _word("lie on"): [_word("lie outside")],
    _word("passes through"): [_word("does not pass through")],
    _word("does not pass through"): [_word("passes through")],
    _word("touches"): [_word("crosses")],
    _word("is greater than"): [_word("is less than")],
    _word("is less than"): [_word("is greater than")],
    _word("is equal to"): [_word("is twice")],
    _word("equals"): [_word("is twice")],
}, description="relation verbs: intersects/bisects, lies on/inside/outside, passes through, ...")

_symbol_rule("relation_symbol", "relation", {
    "∥": ["⊥"], "⊥": ["∥"], "//": ["⊥"],
    "\\parallel": ["\\perp"], "\\perp": ["\\parallel"],
    "∼": ["≅"], "∽": ["≅"], "~": ["≅"], "≅": ["∼"], "\\sim": ["\\cong"], "\\cong": ["\\sim"],
    ">": ["<"], "<": [">"], "≥": ["≤"], "≤": ["≥"],
}, description="relation symbols: ∥ <-> ⊥, ∼ <-> ≅, > <-> <")
