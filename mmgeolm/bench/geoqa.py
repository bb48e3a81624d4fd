"""``geoqa``: GeoQA test, 4-way multiple choice, accuracy (+ Angle / Length / Other where the record says).

Two native formats:

- G-LLaVA's LMM format (which the MMGeoLM scripts follow): ``test_questions.jsonl`` lines
  ``{"question_id", "image", "text"}`` (``text`` is the whole prompt, choices as ``A:40°`` lines) and
  ``test_answers.jsonl`` lines ``{"question_id", "text": "A"}`` beside it (or ``--answers``);
- a JSON list converted from the original pickles: ``{"id", "choices": [4 texts], "label": 0-3, ...}``
  with the question in ``question`` / ``English problem`` / ``subject``, the image in ``image`` (else
  ``<id>.png``) and the problem type in ``type`` (``angle``, ``length``, ``other``).

Extraction: ``official`` reproduces G-LLaVA's ``geo_acc_calculate.py`` cascade (``Answer:X``, "the
correct answer is option X", "option X is selected", "the answer is option X", "the answer is (X)",
then ``is X`` in the second-to-last "."-sentence), with its quirks: that last rule reads vertex names
("... the point is D.") and words ("This Angle" contains "is A") as options, and splitting on "."
breaks decimals. ``robust`` uses :func:`mmgeolm.bench.extract.extract_choice`.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmgeolm.bench.base import Benchmark, Extraction, Item, accuracy_by, summary
from mmgeolm.bench.extract import LETTERS, extract_choice
from mmgeolm.bench.registry import register_benchmark
from mmgeolm_core.io import FormatError, iter_jsonl, read_records

ANSWERS_FILE = "test_answers.jsonl"
TYPES = ("angle", "length", "other")
# G-LLaVA's instruction, the first line of every LMM-format prompt.
INSTRUCTION = ("First perform reasoning, then finally select the answer from the choices in the following format: "
               "Answer: xxx.")
_OFFICIAL_PATTERNS = (r"Answer:([A-D])", r"the correct answer is option ([A-D])", r"option ([A-D]) is selected",
                      r"the answer is option ([A-D])", r"the answer is \(([A-D])\)")


def official_extract(response: str) -> str | None:
    """G-LLaVA's extraction, reimplemented rule for rule (quirks included, see the module doc)."""
    for pattern in _OFFICIAL_PATTERNS:
        m = re.search(pattern, response)
        if m:
            return m.group(1)
    sentences = response.split(".")
    if len(sentences) < 2:
        return None
    m = re.search(r"is ([A-D])", sentences[-2].strip())
    return m.group(1) if m else None


def parse_choices(text: str) -> list[str]:
    """The ``A:...`` lines after ``Choices:`` in an LMM-format prompt."""
    part = text.split("Choices:", 1)[1] if "Choices:" in text else text
    found = dict(re.findall(r"^\s*([A-D])\s*[:：.]\s*(.*?)\s*$", part, flags=re.MULTILINE))
    return [found[c] for c in "ABCD" if c in found]


def _question_of(text: str) -> str:
    m = re.search(r"Question:\s*(.*?)(?:\nChoices:|$)", text, flags=re.DOTALL)
    return m.group(1).strip() if m else text.strip()


@register_benchmark("geoqa")
class GeoQA(Benchmark):
    title = "GeoQA test (4-way multiple choice)"
    id_key = "question_id"
    breakdowns = ("by_type",)

    def read(self, questions: Path, answers: Path | None = None) -> list[Item]:
        records = read_records(questions)
        if records and isinstance(records[0][1], dict) and "question_id" in records[0][1]:
            return self._read_lmm(questions, records, answers or questions.parent / ANSWERS_FILE)
        return [self._pickle_record(questions, where, r) for where, r in records]

    def _read_lmm(self, path: Path, records: list, answers_path: Path) -> list[Item]:
        if not answers_path.is_file():
            raise FormatError(answers_path, f"GeoQA answers not found (expected {ANSWERS_FILE} beside {path.name}, "
                                            "or --answers FILE)")
        gold: dict[str, str] = {}
        for lineno, r in iter_jsonl(answers_path):
            if not isinstance(r, dict) or "question_id" not in r:
                raise FormatError(answers_path, "missing key", where=f"line {lineno}", key="question_id")
            if r.get("text") not in tuple("ABCD"):
                raise FormatError(answers_path, f"expected one of A, B, C, D, got {r.get('text')!r}",
                                  where=f"line {lineno}", key="text")
            gold[str(r["question_id"])] = r["text"]
        items, seen = [], set()
        for where, r in records:
            for key in ("question_id", "text"):
                if not isinstance(r, dict) or key not in r:
                    raise FormatError(path, "missing key", where=where, key=key)
            qid = str(r["question_id"])
            if qid in seen:
                raise FormatError(path, f"duplicate question_id {qid!r}", where=where, key="question_id")
            seen.add(qid)
            if qid not in gold:
                raise FormatError(answers_path, f"no answer for question_id {qid!r} of {path.name} {where}",
                                  key="question_id")
            choices = parse_choices(r["text"])
            if len(choices) != 4:
                raise FormatError(path, f"expected choices A-D after 'Choices:', found {len(choices)}", where=where,
                                  key="text")
            kind = r.get("type")
            items.append(Item(qid, r.get("image"), _question_of(r["text"]), gold[qid], choices,
                              {"type": kind if kind in TYPES else None}, r, where))
        return items

    def _pickle_record(self, path: Path, where: str, r: Any) -> Item:
        if not isinstance(r, dict):
            raise FormatError(path, f"expected a JSON object, got {type(r).__name__}", where=where)
        for key in ("id", "choices", "label"):
            if key not in r:
                raise FormatError(path, "missing key", where=where, key=key)
        if not (isinstance(r["choices"], list) and len(r["choices"]) == 4):
            raise FormatError(path, "expected a list of 4 choices", where=where, key="choices")
        if r["label"] not in (0, 1, 2, 3):
            raise FormatError(path, f"expected 0-3, got {r['label']!r}", where=where, key="label")
        kind = r.get("type", r.get("subject"))
        question = next((r[k] for k in ("question", "English problem") if isinstance(r.get(k), str)),
                        r.get("subject") if kind not in TYPES else None)
        if not isinstance(question, str):
            raise FormatError(path, "no question text (expected 'question', 'English problem' or 'subject')",
                              where=where, key="question")
        image = r.get("image") if isinstance(r.get("image"), str) else f"{r['id']}.png"
        return Item(str(r["id"]), image, question, "ABCD"[r["label"]], [str(c) for c in r["choices"]],
                    {"type": kind if kind in TYPES else None}, r, where)

    def record_id(self, record: dict[str, Any]) -> str | None:
        value = record.get("question_id", record.get("id"))
        return None if value is None else str(value)

    def prompt(self, item: Item, style: str = "official") -> str:
        choices = "\n".join(f"{c}:{t}" for c, t in zip("ABCD", item.choices))
        if style == "official":
            if "text" in item.record:
                return item.record["text"]
            return f"\n{INSTRUCTION}\nQuestion:{item.question}\nChoices:\n{choices}"
        return (f"{item.question}\nChoices:\n{choices}\nReason step by step, then finish with a line "
                "'Answer: X' where X is A, B, C or D.")

    def extract(self, item: Item, response: str, mode: str) -> Extraction:
        if mode == "official":
            letter = official_extract(response)
            return Extraction(letter, "rule", "g-llava") if letter else Extraction.none()
        return extract_choice(response, item.choices)

    def judge_prompt(self, item: Item, response: str) -> str | None:
        options = "\n".join(f"{c}. {t}" for c, t in zip(LETTERS, item.choices))
        return (f"Question: {item.question}\nOptions:\n{options}\n\nResponse:\n{response}\n\n"
                "Which option letter does the response give as its final answer? Reply with the letter only.")

    def parse_judge(self, item: Item, reply: str) -> Any:
        m = re.fullmatch(r"\s*\(?([A-D])\)?\.?\s*", reply)
        return m.group(1) if m else None

    def is_correct(self, item: Item, extracted: Any, mode: str) -> bool:
        return extracted == item.answer

    def metrics(self, items: Sequence[Item], correct: dict[str, bool], mode: str,
                extracted: dict[str, Any] | None = None) -> dict[str, Any]:
        overall = summary([correct[i.id] for i in items])
        return {"accuracy": overall["accuracy"], "correct": overall["correct"],
                "by_type": accuracy_by(items, correct, "type")}
