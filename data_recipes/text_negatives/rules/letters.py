"""Vertex-letter edits: rename one object, or swap two point labels.

The reference's constraints hold by construction and are checked again by the engine: a letter edit
changes at least two letters; it only uses letters already in the caption's labels; and it never
renames an object to another name of the same object (AB -> BA, ABCD -> BCDA or DCBA, ∠ABC -> ∠CBA,
△ABC -> △BCA). A rename is also rejected when the new object is already named in the same sentence
("AB ∥ CD" -> "CD ∥ CD" says nothing).
"""
from __future__ import annotations

import re

import numpy as np

from .grammar import Label, find_labels, label_letters, segment_index, sentence_spans
from .registry import Edit, Span, register_rule

MAX_RENAMES_PER_LABEL = 4
MAX_TRIES_PER_LABEL = 40
MAX_NAME_LENGTH = 6  # longer upper-case runs are words ("NOTE"), not vertex names

_ANGLE_BEFORE = re.compile(r"(?:∠|\\angle\s*|\bangles?\s+)$", re.IGNORECASE)
# Text between two point labels that makes swapping them say the same thing ("A and B", "∠A = ∠B").
_SYMMETRIC_BETWEEN = re.compile(
    r"^(?:\s|,|=|and|or|points?|∠|\\angle|angles?|∥|⊥|≅|∼|~|\\parallel|\\perp|\\cong|\\sim|\\|\$)*$",
    re.IGNORECASE,
)


def object_kind(caption: str, label: Label) -> str:
    """What a label names: "point", "segment", "angle", "triangle" or "polygon"."""
    n = len(label.text)
    if n == 1:
        return "point"
    if n == 2:
        return "segment"
    if n == 3:
        return "angle" if _ANGLE_BEFORE.search(caption[max(0, label.start - 8):label.start]) else "triangle"
    return "polygon"


def object_key(kind: str, name: str) -> object:
    """A key equal for every name of the same object (AB and BA, ∠ABC and ∠CBA, ABCD and CDAB)."""
    if kind in ("segment", "triangle"):
        return (kind, frozenset(name))
    if kind == "angle":
        return (kind, name[1], frozenset((name[0], name[2])))
    if kind == "polygon":
        names = [name[i:] + name[:i] for i in range(len(name))]
        names += [n[::-1] for n in names]
        return (kind, min(names))
    return (kind, name)


def same_object(kind: str, old: str, new: str) -> bool:
    """Whether ``old`` and ``new`` name the same object of this kind."""
    return len(old) == len(new) and object_key(kind, old) == object_key(kind, new)


def letters_changed(old: str, new: str) -> int:
    """How many letter positions differ between two names of equal length."""
    return sum(a != b for a, b in zip(old, new))


def _structured_candidates(kind: str, name: str) -> list[str]:
    """Renames worth trying first: move an angle's vertex, swap two neighbours of a polygon."""
    if kind == "angle":
        return [name[1] + name[0] + name[2], name[0] + name[2] + name[1]]
    if kind == "polygon":
        return [name[:i] + name[i + 1] + name[i] + name[i + 2:] for i in range(len(name) - 1)]
    return []


def _sentence_keys(caption: str, labels: list[Label], sentences: list[tuple[int, int]]) -> list[set]:
    keys: list[set] = [set() for _ in sentences]
    for label in labels:
        kind = object_kind(caption, label)
        keys[segment_index(sentences, label.start)].add(object_key(kind, label.text))
    return keys


@register_rule("letter_rename", "letter", "rename one segment/angle/triangle/polygon with other caption letters")
def propose_renames(caption: str, rng: np.random.Generator) -> list[Edit]:
    labels = find_labels(caption)
    letters = sorted(label_letters(caption))
    sentences = sentence_spans(caption)
    keys = _sentence_keys(caption, labels, sentences)
    edits = []
    for label in labels:
        name = label.text
        if not 2 <= len(name) <= MAX_NAME_LENGTH or len(set(name)) != len(name):
            continue
        kind = object_kind(caption, label)
        taken = keys[segment_index(sentences, label.start)]
        found: list[str] = []
        candidates = _structured_candidates(kind, name)
        if len(letters) >= len(name):
            # MAX_TRIES_PER_LABEL random names of distinct caption letters, drawn in one call.
            picks = rng.random((MAX_TRIES_PER_LABEL, len(letters))).argsort(axis=1)[:, :len(name)]
            candidates += ["".join(letters[i] for i in row) for row in picks.tolist()]
        for new in candidates:
            if len(found) >= MAX_RENAMES_PER_LABEL:
                break
            if (new in found or letters_changed(name, new) < 2 or same_object(kind, name, new)
                    or object_key(kind, new) in taken):
                continue
            found.append(new)
        edits.extend(
            Edit("letter_rename", (Span(label.start, label.end, new),), letters_changed(name, new)) for new in found
        )
    return edits


@register_rule("letter_swap", "letter", "swap two point labels of one sentence (C on circle O -> O on circle C)")
def propose_swaps(caption: str, rng: np.random.Generator) -> list[Edit]:
    points = [label for label in find_labels(caption) if len(label.text) == 1]
    sentences = sentence_spans(caption)
    edits = []
    for i, a in enumerate(points):
        for b in points[i + 1:]:
            if a.text == b.text or segment_index(sentences, a.start) != segment_index(sentences, b.start):
                continue
            if _SYMMETRIC_BETWEEN.match(caption[a.end:b.start]):
                continue
            spans = (Span(a.start, a.end, b.text), Span(b.start, b.end, a.text))
            edits.append(Edit("letter_swap", spans, 2))
    return edits
