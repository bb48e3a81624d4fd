"""``mathvista``: MathVista testmini, geometry problem solving (``metadata.task``), 208 items in the release.

Records (a JSON list, a dict keyed by ``pid`` as ``testmini.json`` is, or JSON lines): ``pid, question,
image, choices, unit, precision, answer, question_type, answer_type, metadata`` (and ``query``, the
official prompt, when present). Only the geometry problems are read. For multiple choice the gold
answer is the choice **text** ("145°").

``official`` follows ``evaluation/extract_answer.py`` + ``calculate_score.py``: the response is the
answer if it is a choice or casts to the answer type; else the quick rule ``The answer is "X".``; else
the GPT extractor (our judge, if given); then normalisation: ``(X)`` -> X, a letter -> that choice,
anything else -> the choice nearest by edit distance (so an empty extraction becomes the *shortest*
choice: the official scorer never leaves a multiple-choice item unanswered); integers ``int(float(x))``,
floats rounded to ``precision``; exact string equality with ``answer``.
``robust``: anchored letters, then choice texts and numbers (:mod:`mmgeolm.bench.extract`); nothing
read stays unanswered (wrong), never the nearest choice.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmgeolm.bench.base import Benchmark, Extraction, Item, accuracy_by, native_records, summary
from mmgeolm.bench.extract import LETTERS, answer_span, extract_choice, find_letter, numbers_in, parse_number
from mmgeolm.bench.registry import register_benchmark
from mmgeolm_core.io import FormatError

TASK = "geometry problem solving"
REQUIRED = ("pid", "question", "choices", "answer", "question_type", "answer_type", "metadata")
BREAKDOWN_KEYS = ("question_type", "answer_type", "language", "source", "category", "context", "grade", "skills")


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def official_normalise(extraction: Any, item: Item) -> str | None:
    """``calculate_score.normalize_extracted_answer`` (without ``--ignore_empty_extractions``)."""
    r = item.record
    if r["question_type"] == "multi_choice":
        text = "" if extraction is None else str(extraction).strip()
        letter = re.findall(r"\(([a-zA-Z])\)", text)
        if letter:
            text = letter[0].upper()
        letters = [chr(ord("A") + i) for i in range(len(item.choices))]
        if text in letters:
            return item.choices[letters.index(text)]
        distances = [edit_distance(text, c) for c in item.choices]
        return item.choices[distances.index(min(distances))]
    try:
        if r["answer_type"] == "integer":
            return str(int(float(extraction)))
        if r["answer_type"] == "float":
            return str(round(float(extraction), int(r["precision"])))
        if r["answer_type"] == "list":
            return str(extraction)
    except (TypeError, ValueError):
        return None
    return None


def build_query(record: dict[str, Any]) -> str:
    """MathVista's zero-shot prompt (hint, question, unit, choices) for records without ``query``."""
    qtype, atype, precision = record["question_type"], record["answer_type"], record.get("precision")
    if qtype == "multi_choice":
        hint = "Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end."
    elif atype == "integer":
        hint = "Please answer the question requiring an integer answer and provide the final value, e.g., 1, 2, 3, at the end."
    elif atype == "float" and precision == 1:
        hint = ("Please answer the question requiring a floating-point number with one decimal place and provide "
                "the final value, e.g., 1.2, 1.3, 1.4, at the end.")
    elif atype == "float":
        hint = ("Please answer the question requiring a floating-point number with two decimal places and provide "
                "the final value, e.g., 1.23, 1.34, 1.45, at the end.")
    else:
        hint = ("Please answer the question requiring a Python list as an answer and provide the final list, "
                "e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.")
    question = f"Question: {record['question']}" + (f" (Unit: {record['unit']})" if record.get("unit") else "")
    lines = [f"Hint: {hint}", question]
    if record.get("choices"):
        lines.append("Choices:\n" + "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(record["choices"])))
    return "\n".join(lines)


@register_benchmark("mathvista")
class MathVista(Benchmark):
    title = "MathVista testmini, geometry problem solving"
    id_key = "pid"
    breakdowns = ("by_skills", "by_source", "by_language", "by_question_type", "by_grade", "by_context")

    def read(self, questions: Path, answers: Path | None = None) -> list[Item]:
        records = native_records(questions, REQUIRED, id_key="pid")  # also testmini.json: {pid: record}
        items, seen = [], set()
        for where, r in records:
            if not isinstance(r["metadata"], dict) or "task" not in r["metadata"]:
                raise FormatError(questions, "expected an object with 'task'", where=where, key="metadata")
            if r["question_type"] not in ("multi_choice", "free_form"):
                raise FormatError(questions, f"expected multi_choice or free_form, got {r['question_type']!r}",
                                  where=where, key="question_type")
            if r["question_type"] == "multi_choice" and not (isinstance(r["choices"], list) and r["choices"]):
                raise FormatError(questions, "a multi_choice record needs a list of choices", where=where, key="choices")
            if r["metadata"]["task"] != TASK:
                continue
            pid = str(r["pid"])
            if pid in seen:
                raise FormatError(questions, f"duplicate pid {pid!r}", where=where, key="pid")
            seen.add(pid)
            meta = {k: r["metadata"].get(k) for k in BREAKDOWN_KEYS if k in r["metadata"]}
            meta.update(question_type=r["question_type"], answer_type=r["answer_type"])
            items.append(Item(pid, r.get("image"), r["question"], str(r["answer"]), list(r["choices"] or []),
                              meta, r, where))
        if not items and records:
            raise FormatError(questions, f"no record has metadata.task == {TASK!r}", key="metadata.task")
        return items

    def prompt(self, item: Item, style: str = "official") -> str:
        if style == "official":
            return item.record.get("query") or build_query(item.record)
        query = build_query(item.record).split("\n", 1)[1]
        final = "the letter of the correct choice" if item.choices else "the final value only"
        return f"{query}\nReason step by step, then finish with a line 'Answer: X' where X is {final}."

    def extract(self, item: Item, response: str, mode: str) -> Extraction:
        if mode == "official":
            return self._official_extract(item, response)
        if item.choices:
            found = extract_choice(response, item.choices)
            if found.value is None:
                return found
            return Extraction(item.choices[LETTERS.index(found.value)], found.method, found.rule)
        # after a stated answer its first number; otherwise the last number of the last line
        values = numbers_in(answer_span(response))
        if not values:
            return Extraction.none()
        anchored = re.search(r"answer|答案", response, flags=re.IGNORECASE)
        return Extraction(values[0] if anchored else values[-1], "rule", "number")

    def _official_extract(self, item: Item, response: str) -> Extraction:
        r = item.record
        if response == "":
            return Extraction.none("empty")
        if r["question_type"] == "multi_choice" and response in item.choices:
            return Extraction(response, "rule", "choice")
        try:
            if r["answer_type"] == "integer":
                return Extraction(str(int(response)), "rule", "cast")
            if r["answer_type"] == "float":
                return Extraction(str(float(response)), "rule", "cast")
        except ValueError:
            pass
        m = re.search(r'The answer is "(.*)"\.', response)
        if m:
            return Extraction(m.group(1), "rule", "quick")
        return Extraction.none()

    def judge_prompt(self, item: Item, response: str) -> str | None:
        query = build_query(item.record).split("\n", 1)[1]
        what = "the letter of the chosen option" if item.choices else "the final value (a number, or a list)"
        return f"{query}\n\nModel response:\n{response}\n\nWhat is the response's final answer? Reply with {what} only."

    def parse_judge(self, item: Item, reply: str) -> Any:
        text = reply.strip().strip(".")
        if not text or text.upper() == "NONE":
            return None
        if item.choices:
            found = find_letter(text, item.choices)
            if found.value is not None and LETTERS.index(found.value) < len(item.choices):
                return item.choices[LETTERS.index(found.value)]
            return text if text in item.choices else None
        return text

    def is_correct(self, item: Item, extracted: Any, mode: str) -> bool:
        if mode == "official":
            return official_normalise(extracted, item) == item.answer
        if extracted is None:
            return False
        if item.choices:
            return str(extracted) == item.answer
        value = extracted if isinstance(extracted, float) else parse_number(str(extracted))
        gold = parse_number(item.answer)
        if value is None or gold is None:
            return str(extracted).strip() == item.answer.strip()
        if item.record["answer_type"] == "float":
            digits = int(item.record.get("precision") or 2)
            return round(value, digits) == round(gold, digits)
        return round(value) == gold if item.record["answer_type"] == "integer" else value == gold

    def metrics(self, items: Sequence[Item], correct: dict[str, bool], mode: str,
                extracted: dict[str, Any] | None = None) -> dict[str, Any]:
        overall = summary([correct[i.id] for i in items])
        out: dict[str, Any] = {"accuracy": overall["accuracy"], "correct": overall["correct"]}
        for key in ("skills", "source", "language", "question_type", "answer_type", "category", "grade", "context"):
            out[f"by_{key}"] = accuracy_by(items, correct, key)
        return out
