"""``mmmath``: MM-Math, open-ended LaTeX answers; accuracy overall and by difficulty, grade and knowledge.

Records (a JSON list, JSON lines, or a dict keyed by index as ``eval.py`` reads them): ``question,
file_name, solution`` (LaTeX with ``\\boxed{}``), ``year`` (grade and term, "八年级上学期"),
``difficult`` (容易 / 普通 / 困难) and ``knowledge``. The item id is ``file_name``.

``official`` reproduces ``eval.py`` as its author meant it: both the solution and the response must
contain ``\\boxed{``, then :class:`~mmgeolm.bench.mathnorm.LatexJudge` with precision 1e-2. (The
published script reads ``args.ground_solution`` / ``args.model_solution`` while its parser defines
``--ground_soluation`` / ``--model_soluation``, inside a bare ``try``: run as published it compares two
empty strings and scores every item 0. We read the fields it meant.) ``robust``: a response without
``\\boxed{}`` is read from its stated answer ("Answer: 12") or its last ``$...$``, and the judge's unit
and percentage quirks are fixed.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmgeolm.bench.base import Benchmark, Extraction, Item, accuracy_by, native_records, summary
from mmgeolm.bench.extract import answer_span, boxed_contents, nfkc
from mmgeolm.bench.mathnorm import LatexJudge
from mmgeolm.bench.registry import register_benchmark
from mmgeolm_core.io import FormatError

REQUIRED = ("question", "file_name", "solution", "year", "difficult", "knowledge")
DIFFICULTY = {"容易": "easy", "普通": "medium", "困难": "hard"}
GRADES = {"七": "seven", "八": "eight", "九": "nine"}
# eval.py counts an item in an area when the area's name is a substring of ``knowledge``
AREAS = {"Transformations of Shapes": "trans", "Properties of Shapes": "shape", "Functions": "func"}
PRECISION = 1e-2
PROMPT = "{question}\nSolve the problem step by step and write the final answer in \\boxed{{}}."


@register_benchmark("mmmath")
class MMMath(Benchmark):
    title = "MM-Math (open-ended, \\boxed{} answers)"
    id_key = "file_name"
    breakdowns = ("by_difficulty", "by_grade", "by_knowledge")

    def read(self, questions: Path, answers: Path | None = None) -> list[Item]:
        records = native_records(questions, REQUIRED, id_key="file_name")  # also eval.py's {index: record}
        items, seen = [], {}
        for where, r in records:
            if not isinstance(r["solution"], str) or "\\boxed{" not in r["solution"]:
                raise FormatError(questions, "expected a LaTeX solution with \\boxed{...}", where=where, key="solution")
            fid = str(r["file_name"])
            if fid in seen:
                raise FormatError(questions, f"duplicate file_name {fid!r} (first at {seen[fid]})", where=where,
                                  key="file_name")
            seen[fid] = where
            year = str(r["year"])
            knowledge = r["knowledge"] if isinstance(r["knowledge"], str) else " ".join(map(str, r["knowledge"]))
            meta = {"difficulty": DIFFICULTY.get(str(r["difficult"]), str(r["difficult"])),
                    "grade": next((v for k, v in GRADES.items() if year.startswith(k)), year),
                    "knowledge": [name for area, name in AREAS.items() if area in knowledge] or None}
            items.append(Item(fid, fid, r["question"], r["solution"], [], meta, r, where))
        return items

    def prompt(self, item: Item, style: str = "official") -> str:
        if style == "official":
            return PROMPT.format(question=item.question)
        return f"{item.question}\nSolve the problem step by step, then finish with a line 'Answer: ...'."

    def extract(self, item: Item, response: str, mode: str) -> Extraction:
        if "\\boxed{" in response:
            found = boxed_contents(response)
            return Extraction(response, "rule", "boxed") if found else Extraction.none("unclosed-boxed")
        if mode == "official":
            return Extraction.none("no-boxed")
        text = nfkc(response)
        if re.search(r"(?:answer|答案)", text, flags=re.IGNORECASE):
            span = answer_span(text).strip().rstrip("。.")
            if span:
                return Extraction(f"\\boxed{{{span}}}", "rule", "answer")
        dollars = re.findall(r"\$(.+?)\$", text.strip().split("\n")[-1])
        if dollars:
            return Extraction(f"\\boxed{{{dollars[-1]}}}", "rule", "last-dollar")
        return Extraction.none()

    def judge_prompt(self, item: Item, response: str) -> str | None:
        return (f"Problem:\n{item.question}\n\nSolution attempt:\n{response}\n\nWhat final answer does the attempt "
                "give? Reply with the answer in LaTeX inside \\boxed{}, or NONE.")

    def parse_judge(self, item: Item, reply: str) -> Any:
        return reply if "\\boxed{" in reply else None

    def is_correct(self, item: Item, extracted: Any, mode: str) -> bool:
        if extracted is None:
            return False
        return LatexJudge(PRECISION, robust=mode == "robust").equal(item.answer, str(extracted))

    def metrics(self, items: Sequence[Item], correct: dict[str, bool], mode: str,
                extracted: dict[str, Any] | None = None) -> dict[str, Any]:
        overall = summary([correct[i.id] for i in items])
        accuracy = overall["accuracy"]
        if mode == "official" and items:
            accuracy = overall["correct"] / (len(items) + 0.0001)  # eval.py's denominator
        return {"accuracy": accuracy, "correct": overall["correct"],
                "by_difficulty": accuracy_by(items, correct, "difficulty"),
                "by_grade": accuracy_by(items, correct, "grade"),
                "by_knowledge": accuracy_by(items, correct, "knowledge")}
