"""``probe``: our paired perception probe (``mmgeolm-data probe-set``), scored by pairs.

Every question is asked on a positive diagram and on its image hard negative, whose answers differ
("yes"/"no", or "8"/"6"). The headline ``accuracy`` is the **paired** accuracy: a pair counts only when
both members are right. An answerer that ignores the image answers both members alike and so scores 0
on every pair; guessing yes/no at random scores 0.25 on yes/no pairs.

- ``official``: the project's held-out exact match (``data_recipes.diagrams.questions.exact_match``:
  the first line, lower-cased, a yes/no answer may open a longer reply).
- ``robust``: an anchored answer ("Answer: no", "The answer is 8 cm") or the reply's first word or
  number, numbers compared as numbers ("8.0" = "8"), Chinese 是/否 read.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data_recipes.diagrams.questions import exact_match
from data_recipes.formats.probe import read_probe
from mmgeolm.bench.base import Benchmark, Extraction, Item, summary
from mmgeolm.bench.extract import answer_span, nfkc, numbers_in, same_text, yes_no
from mmgeolm.bench.registry import register_benchmark

CHANCE_YES_NO_PAIRED = 0.25  # two independent fair coin flips both right


@register_benchmark("probe")
class Probe(Benchmark):
    title = "Perception probe (paired positive / hard negative)"
    id_key = "id"
    headline = ("accuracy", "member_accuracy")
    breakdowns = ("paired_by_kind", "paired_by_perturbation", "paired_by_relation", "paired_by_needs_letters",
                  "member_by_answer")

    def read(self, questions: Path, answers: Path | None = None) -> list[Item]:
        items = []
        for r in read_probe(questions):
            meta = {"pair": r.pair, "member": r.member, "kind": r.kind, "relation": r.relation,
                    "perturbation": r.perturbation, "needs_letters": r.needs_letters, "family": r.family}
            items.append(Item(r.id, r.image, r.question, r.answer, meta=meta, record=r.to_dict(), where=r.id))
        return items

    def prompt(self, item: Item, style: str = "official") -> str:
        if style == "official":
            return item.question
        return f"{item.question}\nGive the answer alone on the first line."

    def extract(self, item: Item, response: str, mode: str) -> Extraction:
        if mode == "official":
            first = response.strip().splitlines()[0] if response.strip() else ""
            return Extraction(first, "rule", "first-line") if first else Extraction.none("first-line")
        if item.meta["kind"] == "yes_no":
            return yes_no(response)
        text = nfkc(response).strip()
        if re.search(r"(?:answer|答案)", text, flags=re.IGNORECASE):
            span = answer_span(text)
        else:
            span = text.splitlines()[0] if text else ""
        numbers = numbers_in(span)
        if numbers:
            value = numbers[0]
            return Extraction(str(int(value)) if value == int(value) else f"{value:g}", "rule", "number")
        span = span.strip().strip(".!?,;:\"'。").strip()
        return Extraction(span, "rule", "text") if span else Extraction.none()

    def is_correct(self, item: Item, extracted: Any, mode: str) -> bool:
        if extracted is None:
            return False
        if mode == "official":
            return exact_match(str(extracted), item.answer)
        if same_text(str(extracted), item.answer):
            return True
        # a word answer ("regular_octagon") closing a phrase: "It is a regular octagon"
        words = re.findall(r"[a-z]+", str(extracted).lower())
        target = item.answer.lower().replace("_", " ").split()
        return item.meta["kind"] == "value" and not item.answer[:1].isdigit() and words[-len(target):] == target

    def metrics(self, items: Sequence[Item], correct: dict[str, bool], mode: str,
                extracted: dict[str, Any] | None = None) -> dict[str, Any]:
        return probe_metrics(items, correct, extracted or {})


def _pairs(items: Sequence[Item]) -> dict[str, dict[str, Item]]:
    pairs: dict[str, dict[str, Item]] = {}
    for item in items:
        pairs.setdefault(item.meta["pair"], {})[item.meta["member"]] = item
    return pairs


def probe_metrics(items: Sequence[Item], correct: dict[str, bool], extracted: dict[str, Any]) -> dict[str, Any]:
    """Paired and per-question accuracies, by kind, relation, perturbation type and ``needs_letters``.

    Also: how often the two members got the *same* answer (``same_answer_rate``, what a blind answerer
    does every time), the share of "yes" among yes/no answers (``yes_rate``, a bias check) and the
    baselines (``blind``: 0 by construction; ``chance_yes_no``: 0.25).
    """
    pairs = _pairs(items)
    both = {p: correct[m["positive"].id] and correct[m["negative"].id] for p, m in pairs.items()}

    def grouped(key: str) -> dict[str, dict[str, Any]]:
        groups: dict[str, list[bool]] = {}
        for p, members in pairs.items():
            groups.setdefault(str(members["positive"].meta[key]).lower(), []).append(both[p])
        return {k: summary(v) for k, v in sorted(groups.items())}

    same = [extracted.get(m["positive"].id) is not None
            and str(extracted.get(m["positive"].id)).strip().lower() == str(extracted.get(m["negative"].id)).strip().lower()
            for m in pairs.values()]
    yes_no_answers = [str(extracted[i.id]).strip().lower() for i in items
                      if i.meta["kind"] == "yes_no" and extracted.get(i.id) is not None]
    yes_rate = (sum(a.startswith("yes") for a in yes_no_answers) / len(yes_no_answers)) if yes_no_answers else None
    paired = summary(list(both.values()))
    return {
        "accuracy": paired["accuracy"],
        "member_accuracy": summary([correct[i.id] for i in items])["accuracy"],
        "num_pairs": len(pairs),
        "paired": paired,
        "paired_by_kind": grouped("kind"),
        "paired_by_perturbation": grouped("perturbation"),
        "paired_by_relation": grouped("relation"),
        "paired_by_needs_letters": grouped("needs_letters"),
        "member_by_answer": {a: summary([correct[i.id] for i in items if i.answer == a])
                             for a in ("yes", "no") if any(i.answer == a for i in items)},
        "same_answer_rate": sum(same) / len(same) if same else None,
        "yes_rate": yes_rate,
        "baselines": {"blind": 0.0, "chance_yes_no": CHANCE_YES_NO_PAIRED},
    }


def score_responses(probe_path: str | Path, responses: dict[str, str], mode: str = "robust") -> dict[str, Any]:
    """Score probe answers in one call (for code that generates on its own, e.g. a demo's comparison).

    Args:
        probe_path: a probe folder or its ``probe.jsonl``.
        responses: record id -> the model's reply (a missing id counts as wrong).
        mode: ``robust`` or ``official``.

    Returns:
        :func:`probe_metrics`' dictionary (``accuracy`` is the paired accuracy).
    """
    bench = Probe()
    items = bench.read(Path(probe_path))
    extracted, correct = {}, {}
    for item in items:
        response = responses.get(item.id)
        value = None if response is None else bench.extract(item, response, mode).value
        extracted[item.id] = value
        correct[item.id] = bench.is_correct(item, value, mode)
    return probe_metrics(items, correct, extracted)
