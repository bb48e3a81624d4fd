"""``wemath``: We-Math testmini, options A-E, S1 / S2 / S3 and the four-dimensional metrics.

Records (a JSON list or JSON lines): ``ID, split, knowledge concept, question, option ("A. ...;B. ...;
...;E. No correct answer"), answer, image_path, key, ...``. A problem's ``ID`` ("2steps_7") is shared by
its one-step sub-problems (``key`` ``2steps_1``, ``2steps_2``) and the composite problem
(``2steps_multi``), so an item's id here is ``ID/key`` ("2steps_7/2steps_multi"); the reference's
output (the record plus ``text``) is matched by both fields.

Metrics, as ``evaluation/four_dimensional_metrics.py`` and ``accuracy.py`` define them, per problem of
n sub-problems: IK (some sub-problem wrong, composite wrong), IG (all right, composite wrong), CM
(strict: all right and composite right; loose: any right and composite right), RM (strict: some wrong,
composite right; loose: all wrong, composite right); rates IK/IG/CM over the problem count, RM over
CM + RM; score = (N - 0.5 IG - RM - IK) / N, strict and loose. S1 = accuracy on the sub-problems,
S2 / S3 = accuracy on the 2- / 3-step composite problems.

``official``: the text after the last "Answer", stripped of ``>``, ``<``, ``:``, ``.``, first character if
A-H, so a reply without "Answer" is read from its first character ("A triangle..." -> A); N is the
testmini's 525 problems whatever the file holds. ``robust``: anchored letters (``<Answer>: <<B>>``) or
the option text, never a first character; N is the number of problems present.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmgeolm.bench.base import Benchmark, Extraction, Item, accuracy_by, native_records, summary
from mmgeolm.bench.extract import extract_choice
from mmgeolm.bench.registry import register_benchmark
from mmgeolm_core.io import FormatError, read_json

KEYS = ("2steps_1", "2steps_2", "2steps_multi", "3steps_1", "3steps_2", "3steps_3", "3steps_multi")
REQUIRED = ("ID", "question", "option", "answer", "image_path", "key")
OFFICIAL_PROBLEMS = 525  # four_dimensional_metrics.py divides by the testmini's problem count, hard-coded
NODES_FILE = "knowledge_structure_nodes.json"
PROMPT = ("Now, we require you to solve a multiple-choice math question. Please briefly describe your thought "
          "process and provide the final answer(option).\nQuestion: {question}\nOption: {option}\nRegarding the "
          "format, please answer following the template below, and be sure to include two <> symbols:\n"
          "<Thought process>: <<your thought process>> <Answer>: <<your option>>")


def parse_options(option: str) -> list[str]:
    """``"A. 3;B. 4; E. No correct answer"`` -> ``["3", "4", "No correct answer"]`` (in letter order)."""
    parts = re.split(r"(?:^|;)\s*([A-H])\s*[.．]\s*", option)
    found = {parts[i]: parts[i + 1].strip().rstrip(";").strip() for i in range(1, len(parts) - 1, 2)}
    return [found[c] for c in "ABCDEFGH" if c in found]


def official_extract(response: str) -> str | None:
    """``four_dimensional_metrics.load_and_process_data``'s rule (quirk included, see the module doc)."""
    text = re.sub(r"[><:.]", "", response.split("Answer")[-1].strip()).strip()
    return text[0] if text and text[0] in "ABCDEFGH" else None


def four_dimensional(groups: dict[str, dict[str, bool]], steps_of: dict[str, int], problems: int) -> dict[str, Any]:
    """IK / IG / CM / RM counts, rates and the strict and loose scores from per-problem correctness.

    Args:
        groups: problem ID -> {"1": bool, "2": bool, ["3": bool,] "multi": bool}.
        steps_of: problem ID -> 2 or 3.
        problems: the denominator N (the official scorer's 525, or the problems present).
    """
    counts = dict.fromkeys(("IK", "IG", "CM_strict", "CM_loose", "RM_strict", "RM_loose"), 0)
    for pid, parts in groups.items():
        subs = [parts.get(str(i), False) for i in range(1, steps_of[pid] + 1)]
        multi = parts.get("multi", False)
        if multi:
            counts["CM_strict" if all(subs) else "RM_strict"] += 1
            counts["CM_loose" if any(subs) else "RM_loose"] += 1
        else:
            counts["IG" if all(subs) else "IK"] += 1
    rate = {k: (counts[k] / problems if problems else None) for k in ("IK", "IG", "CM_strict", "CM_loose")}
    for kind in ("strict", "loose"):
        denom = counts[f"CM_{kind}"] + counts[f"RM_{kind}"]
        rate[f"RM_{kind}"] = counts[f"RM_{kind}"] / denom if denom else None
    scores = {kind: ((problems - 0.5 * counts["IG"] - counts[f"RM_{kind}"] - counts["IK"]) / problems if problems
                     else None) for kind in ("strict", "loose")}
    return {"counts": counts, "rates": rate, "score_strict": scores["strict"], "score_loose": scores["loose"],
            "num_problems": problems}


@register_benchmark("wemath")
class WeMath(Benchmark):
    title = "We-Math testmini (S1 / S2 / S3, four-dimensional metrics)"
    id_key = "ID"
    headline = ("S2", "S3", "S1", "accuracy", "score_strict", "score_loose")
    breakdowns = ("by_key", "by_domain", "by_knowledge_concept")

    def read(self, questions: Path, answers: Path | None = None) -> list[Item]:
        domains = self._domains(questions.parent / NODES_FILE)
        items, seen = [], {}
        for where, r in native_records(questions, REQUIRED):
            if r["key"] not in KEYS:
                raise FormatError(questions, f"unknown key {r['key']!r}; expected one of {list(KEYS)}", where=where,
                                  key="key")
            if not str(r["ID"]).startswith(r["key"].split("_")[0]):
                raise FormatError(questions, f"ID {r['ID']!r} does not belong to key {r['key']!r}", where=where, key="ID")
            item_id = f"{r['ID']}/{r['key']}"
            if item_id in seen:
                raise FormatError(questions, f"duplicate ID and key {item_id!r} (first at {seen[item_id]})", where=where,
                                  key="key")
            seen[item_id] = where
            options = parse_options(str(r["option"]))
            if len(options) < 2:
                raise FormatError(questions, f"expected options 'A. ...;B. ...', got {r['option']!r:.60}", where=where,
                                  key="option")
            concept = r.get("knowledge concept")
            meta = {"problem": str(r["ID"]), "key": r["key"], "steps": int(r["key"][0]),
                    "part": r["key"].split("_")[1], "knowledge_concept": concept, "domain": domains.get(concept)}
            items.append(Item(item_id, r["image_path"], r["question"], str(r["answer"]).strip(), options, meta, r, where))
        return items

    @staticmethod
    def _domains(path: Path) -> dict[str, str]:
        """knowledge concept -> its second-level domain, from ``knowledge_structure_nodes.json`` when present."""
        if not path.is_file():
            return {}
        return {str(n["full node"]).split("_")[-1]: n.get("root2") for n in read_json(path)
                if isinstance(n, dict) and "full node" in n}

    def record_id(self, record: dict[str, Any]) -> str | None:
        if "ID" in record and "key" in record:
            return f"{record['ID']}/{record['key']}"
        return None

    def prompt(self, item: Item, style: str = "official") -> str:
        if style == "official":
            return PROMPT.format(question=item.question, option=item.record["option"])
        return (f"{item.question}\nOptions: {item.record['option']}\nReason step by step, then finish with a line "
                "'Answer: X' where X is the option letter.")

    def extract(self, item: Item, response: str, mode: str) -> Extraction:
        if mode == "official":
            letter = official_extract(response)
            return Extraction(letter, "rule", "we-math") if letter else Extraction.none()
        return extract_choice(response, item.choices)

    def is_correct(self, item: Item, extracted: Any, mode: str) -> bool:
        return extracted == item.answer

    def metrics(self, items: Sequence[Item], correct: dict[str, bool], mode: str,
                extracted: dict[str, Any] | None = None) -> dict[str, Any]:
        groups: dict[str, dict[str, bool]] = {}
        steps_of: dict[str, int] = {}
        for item in items:
            groups.setdefault(item.meta["problem"], {})[item.meta["part"]] = correct[item.id]
            steps_of[item.meta["problem"]] = item.meta["steps"]
        if mode == "official":
            # the official merge starts from step 1: a problem without its first sub-problem is not counted
            groups = {p: g for p, g in groups.items() if "1" in g}
        problems = OFFICIAL_PROBLEMS if mode == "official" else len(groups)
        subs = [i for i in items if i.meta["part"] != "multi" and i.meta["problem"] in groups]
        out: dict[str, Any] = {
            "accuracy": summary([correct[i.id] for i in items])["accuracy"],
            "S1": summary([correct[i.id] for i in subs])["accuracy"],
            "S2": summary([correct[i.id] for i in items if i.meta["key"] == "2steps_multi"])["accuracy"],
            "S3": summary([correct[i.id] for i in items if i.meta["key"] == "3steps_multi"])["accuracy"],
        }
        dims = four_dimensional(groups, steps_of, problems)
        out.update(score_strict=dims["score_strict"], score_loose=dims["score_loose"], four_dimensional=dims,
                   by_key=accuracy_by(items, correct, "key"),
                   by_domain=accuracy_by(subs, correct, "domain"),
                   by_knowledge_concept=accuracy_by(subs, correct, "knowledge_concept"))
        return out
