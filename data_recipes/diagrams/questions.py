"""Held-out geometry questions whose answers follow from a diagram's facts, scored by exact match.

Two kinds of question come out of a data set built by the engine (and :func:`paired_questions` pairs
them for the perception probe, :mod:`data_recipes.diagrams.probe`):

* **value questions** read a fact's value off the diagram: the class of a shape, a marked length,
  an annotated angle, a radius ("What is the length of AB?" -> "8");
* **yes/no questions** ask about a relation. A positive diagram answers "yes"; its image negative
  that removed exactly that fact answers "no" to the same question, so the two answers are balanced
  and a model can only score by looking at the picture.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np

from data_recipes.diagrams.facts import SIGNATURES, Fact, parse_fact


@dataclass(frozen=True)
class Question:
    """One question about one image (paths as in the data set, relative to its directory)."""

    sample_id: str
    image: str
    question: str
    answer: str
    kind: str  # "value" or "yes_no"
    fact: str

    def to_dict(self) -> dict:
        return asdict(self)


def value_question(f: Fact) -> tuple[str, str] | None:
    """``(question, answer)`` reading a valued fact off the diagram, or None for facts without a template."""
    if f.value is None:
        return None
    a = f.args
    templates = {
        "shape": f"What kind of figure is {a[0]}? Answer with one word.",
        "length": f"What is the length of {a[0]}? Answer with a number.",
        "angle": f"What is the measure of angle {a[0]} in degrees? Answer with a number.",
        "radius": f"What is the radius of circle {a[0]}? Answer with a number.",
    }
    return (templates[f.name], f.value) if f.name in templates else None


def yes_no_question(f: Fact) -> str | None:
    """The yes/no question asking whether relation ``f`` holds, or None for facts without a template."""
    a = f.args
    templates = {
        "parallel": lambda: f"Is {a[0]} parallel to {a[1]}?",
        "perpendicular": lambda: f"Is {a[0]} perpendicular to {a[1]}?",
        "equal_length": lambda: f"Is {a[0]} equal in length to {a[1]}?",
        "midpoint": lambda: f"Is {a[0]} the midpoint of {a[1]}?",
        "on_circle": lambda: f"Does point {a[0]} lie on circle {a[1]}?",
        "tangent": lambda: f"Is line {a[0]} tangent to circle {a[1]}?",
        "altitude": lambda: f"Is {a[0]} an altitude of triangle {a[1]}?",
        "median": lambda: f"Is {a[0]} a median of triangle {a[1]}?",
        "bisector": lambda: f"Does {a[0]} bisect angle {a[1]}?",
        "isosceles": lambda: f"Is triangle {a[0]} isosceles?",
        "right_triangle": lambda: f"Is angle {a[0]} a right angle?",
        "intersection": lambda: f"Do {a[1]} and {a[2]} intersect at point {a[0]}?",
        "diameter": lambda: f"Is {a[0]} a diameter of circle {a[1]}?",
        "incircle": lambda: f"Is circle {a[0]} inscribed in triangle {a[1]}?",
        "circumcircle": lambda: f"Does circle {a[0]} pass through every vertex of {a[1]}?",
        "similar": lambda: f"Is triangle {a[0]} similar to triangle {a[1]}?",
        "congruent": lambda: f"Is triangle {a[0]} congruent to triangle {a[1]}?",
    }
    if f.name not in templates or f.value is not None:
        return None
    return templates[f.name]() + " Answer yes or no."


def questions_for_sample(sample: dict) -> Iterator[Question]:
    """All questions of one ``samples.jsonl`` record.

    On the positive image: a value question per valued fact and a "yes" question per relation. On each
    image negative: a "no" question per relation it removed, and a value question for each value it
    changed (same fact, new value, e.g. ``length(AB)=8`` -> ``length(AB)=6``), so the same question
    has different answers on two nearly identical pictures.
    """
    sid, image = sample["id"], sample["image"]
    for fact_text in sample.get("facts", []):
        f = parse_fact(fact_text)
        vq = value_question(f)
        if vq:
            yield Question(sid, image, vq[0], vq[1], "value", fact_text)
        yn = yes_no_question(f)
        if yn:
            yield Question(sid, image, yn, "yes", "yes_no", fact_text)
    for neg in sample.get("negatives", []):
        removed = [parse_fact(t) for t in neg.get("removed", [])]
        for fact_text, f in zip(neg.get("removed", []), removed):
            yn = yes_no_question(f)
            if yn:
                yield Question(sid, neg["image"], yn, "no", "yes_no", fact_text)
        changed = {(f.name, f.args) for f in removed if f.value is not None}
        for fact_text in neg.get("added", []):
            f = parse_fact(fact_text)
            vq = value_question(f) if (f.name, f.args) in changed else None
            if vq:
                yield Question(sid, neg["image"], vq[0], vq[1], "value", fact_text)


def make_questions(samples: Iterable[dict], num: int, seed: int = 0) -> list[Question]:
    """Up to ``num`` questions, balanced between yes, no and value answers, at most one per image.

    Deterministic for a given seed and sample order.
    """
    rng = np.random.default_rng(seed)
    pools: dict[str, list[Question]] = {"yes": [], "no": [], "value": []}
    for sample in samples:
        by_image: dict[str, list[Question]] = {}
        for q in questions_for_sample(sample):
            by_image.setdefault(q.image, []).append(q)
        for qs in by_image.values():
            q = qs[int(rng.integers(len(qs)))]
            pools["value" if q.kind == "value" else q.answer].append(q)
    for pool in pools.values():
        rng.shuffle(pool)
    picked: list[Question] = []
    while len(picked) < num and any(pools.values()):
        for key in ("yes", "no", "value"):
            if pools[key] and len(picked) < num:
                picked.append(pools[key].pop())
    return picked


def askable_relations() -> dict[str, str]:
    """Every fact name with a question template -> its kind (``yes_no`` or ``value``)."""
    out = {}
    for name, (forms, _) in SIGNATURES.items():
        args = ("AB",) * len(forms)
        if yes_no_question(Fact(name, args)):
            out[name] = "yes_no"
        elif value_question(Fact(name, args, "1")):
            out[name] = "value"
    return out


# Relations that a small model can ground in the picture without reading letters: a marked right angle,
# parallel arrows, a line touching a circle, equal ticks at a midpoint, a point on a circle.
GROUNDABLE_RELATIONS = ("parallel", "perpendicular", "tangent", "midpoint", "on_circle")


@dataclass(frozen=True)
class PairedQuestion:
    """One question asked on a positive diagram and on its image hard negative, whose answers differ.

    Attributes:
        question: the text asked on both images.
        kind: ``"yes_no"`` or ``"value"``.
        relation: the fact's relation (``parallel``, ``length``, ...).
        fact: the canonical fact asked about, as it holds in the image answering "yes" (for value
            questions: as it holds in the positive).
        positive_answer: the answer on the positive diagram.
        negative_answer: the answer on the negative.
        needs_letters: True when only a reader of the vertex letters can answer both members right: the
            relation is still present elsewhere in the image that answers "no" (so "is there any right
            angle?" does not tell), or the image has several values of this kind (which one is AB?).
    """

    question: str
    kind: str
    relation: str
    fact: str
    positive_answer: str
    negative_answer: str
    needs_letters: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _letters(facts: Iterable[str]) -> set[str]:
    return {c for text in facts for arg in parse_fact(text).args for c in arg}


def paired_questions(positive_facts: list[str], negative_facts: list[str], removed: list[str],
                     added: list[str]) -> list[PairedQuestion]:
    """The questions whose answer differs between a positive diagram and one image negative of it.

    A relation the negative removed is asked with "yes" on the positive and "no" on the negative; a
    relation it added (between points the positive already names, e.g. after a label swap) is asked with
    "no" then "yes"; a value it changed (``length(AB)=8`` -> ``=6``, ``shape(ABCD)=square`` -> ``=rhombus``)
    is asked on both with the two values. Facts without a question template are skipped.

    Args:
        positive_facts: the positive's canonical facts.
        negative_facts: the negative's canonical facts.
        removed: facts of the positive that the negative no longer shows (the engine verified it).
        added: facts that hold in the negative only.
    """
    names_in = {"positive": {parse_fact(f).name for f in positive_facts},
                "negative": {parse_fact(f).name for f in negative_facts}}
    out: list[PairedQuestion] = []
    added_values = {(f.name, f.args): f.value for f in map(parse_fact, added) if f.value is not None}
    for text in removed:
        f = parse_fact(text)
        question = yes_no_question(f)
        if question:
            out.append(PairedQuestion(question, "yes_no", f.name, text, "yes", "no",
                                      f.name in names_in["negative"]))
        new_value = added_values.get((f.name, f.args))
        asked = value_question(f)
        if asked and new_value is not None and new_value != f.value:
            several = sum(parse_fact(g).name == f.name for g in positive_facts) > 1
            out.append(PairedQuestion(asked[0], "value", f.name, text, f.value, new_value, several))
    known = _letters(positive_facts)
    for text in added:
        f = parse_fact(text)
        question = yes_no_question(f)
        if question and text not in positive_facts and {c for a in f.args for c in a} <= known:
            out.append(PairedQuestion(question, "yes_no", f.name, text, "no", "yes",
                                      f.name in names_in["positive"]))
    return out


def normalise_answer(text: str) -> str:
    """Lower case, first line, no surrounding punctuation or trailing units/degree signs."""
    text = text.strip().splitlines()[0] if text.strip() else ""
    text = text.lower().strip().strip(".!?,;:\"'")
    text = re.sub(r"\s*(°|degrees?|cm|units?)$", "", text)
    return text.strip()


def exact_match(prediction: str, answer: str) -> bool:
    """Exact match after :func:`normalise_answer`; a yes/no answer may open a longer reply."""
    p, a = normalise_answer(prediction), normalise_answer(answer)
    if a in ("yes", "no"):
        return p == a or p.split(" ", 1)[0].strip(",.") == a
    return p == a
