"""Captions from facts, in the style of MM-Math-Align ("In the figure, ABCD is a square with ...").

Each fact kind has several clause templates. The template of a kind is chosen from
``(variant, kind)`` only, so a negative (same variant, one fact changed) keeps the positive's phrasing
everywhere except where the fact changed: the caption pair is textually as close as the images.
"""
from __future__ import annotations

import re
import zlib
from collections.abc import Callable

import numpy as np

from data_recipes.diagrams.facts import Fact, parse_fact

OPENERS = ["In the figure, ", "As shown in the figure, ", "In the diagram, ", "In the figure shown, "]

SHAPE_WORDS = {
    "equilateral": "an equilateral triangle", "scalene": "a scalene triangle", "isosceles": "an isosceles triangle",
    "right": "a right triangle", "square": "a square", "rectangle": "a rectangle", "rhombus": "a rhombus",
    "parallelogram": "a parallelogram", "trapezoid": "a trapezoid", "kite": "a kite", "quadrilateral": "a quadrilateral",
    "regular_pentagon": "a regular pentagon", "regular_hexagon": "a regular hexagon", "regular_octagon": "a regular octagon",
    "pentagon": "a pentagon", "hexagon": "a hexagon", "octagon": "an octagon",
}


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _other(tri: str, v: str) -> str:
    return "".join(c for c in tri if c != v)


def _shape(f: Fact) -> list[str]:
    p, cls = f.args[0], f.value or ""
    word = SHAPE_WORDS.get(cls, "a " + cls.replace("_", " "))
    if len(p) == 3:
        return [f"{p} is {word}", f"triangle {p} is {cls}"]
    noun = "quadrilateral" if len(p) == 4 else "polygon"
    return [f"{p} is {word}", f"{noun} {p} is {word}"]


# kind -> function(fact) -> alternative clauses
TEMPLATES: dict[str, Callable[[Fact], list[str]]] = {
    "shape": _shape,
    "isosceles": lambda f: [
        f"triangle {f.args[0]} is isosceles with {f.args[0][:2]} = {f.args[0][0]}{f.args[0][2]}",
        f"{f.args[0]} is an isosceles triangle with legs {f.args[0][:2]} and {f.args[0][0]}{f.args[0][2]}"],
    "right_triangle": lambda f: [
        f"triangle {f.args[0]} is a right triangle with the right angle at {f.args[0][1]}",
        f"∠{f.args[0]} = 90°", f"angle {f.args[0]} is a right angle"],
    "altitude": lambda f: [
        f"{f.args[0]} is the altitude from {f.args[0][0]} to {_other(f.args[1], f.args[0][0])}",
        f"{f.args[0]} is perpendicular to {_other(f.args[1], f.args[0][0])} at {f.args[0][1]}"],
    "median": lambda f: [
        f"{f.args[0]} is the median to side {_other(f.args[1], f.args[0][0])}",
        f"{f.args[0][1]} is the midpoint of {_other(f.args[1], f.args[0][0])} and {f.args[0]} is drawn"],
    "bisector": lambda f: [
        f"{f.args[0]} bisects ∠{f.args[1]}", f"{f.args[0]} is the bisector of angle {f.args[1]}"],
    "cevian": lambda f: [
        f"{f.args[0][1]} is a point on {_other(f.args[1], f.args[0][0])} and segment {f.args[0]} is drawn",
        f"{f.args[0]} joins {f.args[0][0]} to a point {f.args[0][1]} on {_other(f.args[1], f.args[0][0])}"],
    "midpoint": lambda f: [f"{f.args[0]} is the midpoint of {f.args[1]}", f"point {f.args[0]} bisects segment {f.args[1]}"],
    "on_segment": lambda f: [f"{f.args[0]} is a point on {f.args[1]}", f"point {f.args[0]} lies on segment {f.args[1]}"],
    "parallel": lambda f: [f"{f.args[0]} ∥ {f.args[1]}", f"{f.args[0]} is parallel to {f.args[1]}"],
    "perpendicular": lambda f: [f"{f.args[0]} ⊥ {f.args[1]}", f"{f.args[0]} is perpendicular to {f.args[1]}"],
    "equal_length": lambda f: [f"{f.args[0]} = {f.args[1]}", f"{f.args[0]} and {f.args[1]} have equal length"],
    "tangent": lambda f: [f"{f.args[0]} is tangent to circle {f.args[1]} at {f.args[0][1]}",
                          f"{f.args[0]} touches ⊙{f.args[1]} at {f.args[0][1]}"],
    "diameter": lambda f: [f"{f.args[0]} is a diameter of circle {f.args[1]}", f"{f.args[0]} is a diameter of ⊙{f.args[1]}"],
    "intersection": lambda f: [f"{f.args[1]} and {f.args[2]} intersect at point {f.args[0]}",
                               f"{f.args[1]} and {f.args[2]} meet at {f.args[0]}"],
    "similar": lambda f: [f"triangle {f.args[0]} is similar to triangle {f.args[1]}", f"△{f.args[0]} ∼ △{f.args[1]}"],
    "congruent": lambda f: [f"triangle {f.args[0]} is congruent to triangle {f.args[1]}", f"△{f.args[0]} ≅ △{f.args[1]}"],
    "incircle": lambda f: [f"circle {f.args[0]} is inscribed in triangle {f.args[1]}", f"⊙{f.args[0]} is the incircle of △{f.args[1]}"],
    "circumcircle": lambda f: [f"circle {f.args[0]} passes through {_and(list(f.args[1]))}",
                               f"⊙{f.args[0]} is the circumcircle of △{f.args[1]}"],
    "shaded": lambda f: [f"the sector {f.args[0]} is shaded" if len(f.args[0]) == 3 else f"region {f.args[0]} is shaded",
                         f"the shaded region is sector {f.args[0]}" if len(f.args[0]) == 3 else f"{f.args[0]} is shaded"],
    "radius": lambda f: [f"the radius of circle {f.args[0]} is {f.value}", f"circle {f.args[0]} has radius {f.value}"],
}

# kinds merged into one clause listing all their facts
GROUPS: dict[str, Callable[[list[Fact]], list[str]]] = {
    "on_circle": lambda fs: [f"{_and([f.args[0] for f in fs])} {'lie' if len(fs) > 1 else 'lies'} on circle {fs[0].args[1]}",
                             f"{_and([f.args[0] for f in fs])} {'are' if len(fs) > 1 else 'is'} on ⊙{fs[0].args[1]}"],
    "length": lambda fs: [_and([f"{f.args[0]} = {f.value}" for f in fs]),
                          "the length of " + _and([f"{f.args[0]} is {f.value}" for f in fs])],
    "angle": lambda fs: [_and([f"∠{f.args[0]} = {f.value}°" for f in fs]),
                         _and([f"angle {f.args[0]} measures {f.value}°" for f in fs])],
    "point": lambda fs: ["the points are " + _and([f"{f.args[0]}{f.value.replace(',', ', ')}" for f in fs if f.value]),
                         "on the coordinate grid, " + _and([f"{f.args[0]} = {f.value.replace(',', ', ')}" for f in fs if f.value])],
}

ORDER = ["shape", "isosceles", "right_triangle", "similar", "congruent", "circumcircle", "incircle", "diameter", "radius",
         "on_circle", "shaded", "tangent", "parallel", "perpendicular", "midpoint", "on_segment", "altitude", "median",
         "bisector", "cevian", "intersection", "equal_length", "length", "angle", "point"]


def _diagonals(f: Fact, facts: list[Fact]) -> bool:
    """Whether the two segments of an intersection fact are the diagonals of a quadrilateral named in a shape fact."""
    for s in facts:
        if s.name == "shape" and len(s.args[0]) == 4:
            p = s.args[0]
            diags = {frozenset((p[0], p[2])), frozenset((p[1], p[3]))}
            if {frozenset(f.args[1]), frozenset(f.args[2])} == diags:
                return True
    return False


def _pick(options: list[str], variant: int, key: str) -> str:
    rng = np.random.default_rng([variant, zlib.crc32(key.encode())])
    return options[int(rng.integers(len(options)))]


def make_caption(facts: list[str], variant: int) -> str:
    """A caption stating every fact, phrased by ``variant`` (an integer seed)."""
    parsed = sorted((parse_fact(f) for f in facts), key=lambda f: (ORDER.index(f.name), str(f)))
    clauses: list[str] = []
    grouped: dict[tuple[str, str], list[Fact]] = {}
    for f in parsed:
        if f.name in GROUPS:
            key = (f.name, f.args[1] if f.name == "on_circle" else "")
            if key not in grouped:
                grouped[key] = []
                clauses.append(f"__group__{len(grouped) - 1}")
            grouped[key].append(f)
        elif f.name == "intersection" and _diagonals(f, parsed):
            options = [f"its diagonals {f.args[1]} and {f.args[2]} intersect at point {f.args[0]}",
                       f"the diagonals {f.args[1]} and {f.args[2]} meet at {f.args[0]}"]
            clauses.append(_pick(options, variant, f.name))
        else:
            clauses.append(_pick(TEMPLATES[f.name](f), variant, f.name))
    keys = list(grouped)
    clauses = [_pick(GROUPS[keys[int(c[9:])][0]](grouped[keys[int(c[9:])]]), variant, keys[int(c[9:])][0])
               if c.startswith("__group__") else c for c in clauses]
    if not clauses:
        return "The figure shows a geometric diagram."
    opener = _pick(OPENERS, variant, "__opener__")
    first = opener + clauses[0] + "."
    first = first[0].upper() + first[1:]
    rest = [c[0].upper() + c[1:] + "." for c in clauses[1:]]
    return " ".join([first, *rest])


# --------------------------------------------------------------------------- symbols written as words
SYMBOL_STYLES = ("unicode", "words")
# Ordered (pattern, replacement): prefixes naming an object first, then relations, then units. Tokenizers that
# drop punctuation or lack these symbols (SigLIP's) see the words; the rule negatives edit the words
# ("parallel" <-> "perpendicular", "similar" <-> "congruent", numbers before "degrees").
SYMBOL_WORDS: tuple[tuple[str, str], ...] = (
    (r"△\s*(?=[A-Z])", "triangle "),
    (r"∠\s*(?=[A-Z])", "angle "),
    (r"⊙\s*(?=[A-Z])", "circle "),
    (r"\s*∥\s*", " is parallel to "),
    (r"\s*⊥\s*", " is perpendicular to "),
    (r"\s*≅\s*", " is congruent to "),
    (r"\s*[∼∽]\s*", " is similar to "),
    (r"\s*≠\s*", " is not equal to "),
    (r"\s*<\s*", " is less than "),
    (r"\s*>\s*", " is greater than "),
    (r"\s*=\s*", " equals "),
    (r"(\d)\s*°", r"\1 degrees"),
    (r"°", " degrees"),
)
_SYMBOL_WORDS = tuple((re.compile(p), r) for p, r in SYMBOL_WORDS)


def symbols_as_words(text: str) -> str:
    """``text`` with the geometry symbols written as words: "AB ∥ CD" -> "AB is parallel to CD",
    "∠ABC = 90°" -> "angle ABC equals 90 degrees", "△ABC ≅ △DEF" -> "triangle ABC is congruent to triangle DEF"
    (a word that starts a sentence is capitalised)."""
    for pattern, words in _SYMBOL_WORDS:
        text = pattern.sub(lambda m, words=words: _sentence_case(m, m.expand(words)), text)
    return re.sub(r" {2,}", " ", text)


def _sentence_case(match: re.Match, words: str) -> str:
    before = match.string[: match.start()].rstrip(" ")
    starts_sentence = not before or before.endswith((".", "!", "?"))
    return words[0].upper() + words[1:] if starts_sentence and words[:1].isalpha() else words


def style_caption(text: str, symbols: str) -> str:
    """The caption in the recipe's symbol style (``unicode``: unchanged; ``words``: :func:`symbols_as_words`)."""
    if symbols not in SYMBOL_STYLES:
        raise ValueError(f"caption symbols {symbols!r}: expected one of {list(SYMBOL_STYLES)}")
    return symbols_as_words(text) if symbols == "words" else text
