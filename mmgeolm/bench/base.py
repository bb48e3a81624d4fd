"""What every benchmark provides: items read from its native files, prompts, answer extraction, metrics.

A benchmark is a class registered by name (:mod:`mmgeolm.bench.registry`) implementing
:class:`Benchmark`. Scoring is torch-free: this package imports neither torch nor LLaVA (generation goes
through :mod:`llava_patches.batch_generate`, called only by ``mmgeolm-bench generate``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mmgeolm_core.io import FormatError, read_records

MODES = ("official", "robust")
PROMPT_STYLES = ("official", "answer-line")
METHODS = ("rule", "judge", "none")


@dataclass
class Item:
    """One benchmark question.

    Attributes:
        id: the benchmark's own id (GeoQA ``question_id``, MathVista ``pid``, We-Math ``ID/key``,
            MM-Math ``file_name``, probe ``id``), as a string.
        image: the image path as the record gives it (relative to the image root), or None.
        question: the question text with its choices, as shown to the model.
        answer: the gold answer as scored (a letter, a choice text, a LaTeX solution, "yes"...).
        choices: the options in order (A, B, ...) for multiple choice, else empty.
        meta: the fields the benchmark's breakdowns group by (type, skills, key, difficulty...).
        record: the record as read, for prompts and the reference's output format.
        where: where the record is in its file (``line 3``), for error messages.
    """

    id: str
    image: str | None
    question: str
    answer: Any
    choices: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict, repr=False)
    where: str = ""


@dataclass(frozen=True)
class Extraction:
    """What was read from a response: ``value`` (None when nothing was), how (``rule``/``judge``/``none``)
    and which rule (``answer-line``, ``boxed``, ``choice-text``...) for the per-item results."""

    value: Any
    method: str
    rule: str = ""

    @classmethod
    def none(cls, rule: str = "") -> Extraction:
        return cls(None, "none", rule)


class Benchmark:
    """The interface of a registered benchmark (subclass it and register the subclass).

    Class attributes:
        name: the registry name.
        title: the name printed in reports ("MathVista testmini, geometry problem solving").
        id_key: the key of the native id in the benchmark's records (for the reference's output format).
        headline: the keys of ``scores.json`` that the paper's table reports (``accuracy``, ``S2``...).
        breakdowns: the keys of ``scores.json`` holding ``{group: {"accuracy", "correct", "total"}}`` tables.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    id_key: ClassVar[str] = "id"
    headline: ClassVar[tuple[str, ...]] = ("accuracy",)
    breakdowns: ClassVar[tuple[str, ...]] = ()

    def read(self, questions: Path, answers: Path | None = None) -> list[Item]:
        """The items of a question file in the benchmark's native format.

        Raises:
            mmgeolm_core.io.FormatError: a record breaks the format (naming file, line and key).
        """
        raise NotImplementedError

    def prompt(self, item: Item, style: str = "official") -> str:
        """The text asked with the image: the benchmark's own prompt, or ``answer-line`` (the question and
        its choices, then an instruction to end with a line ``Answer: X``, which rules read reliably)."""
        raise NotImplementedError

    def extract(self, item: Item, response: str, mode: str) -> Extraction:
        """The answer in ``response`` by rules (``official``: the official scorer's own; ``robust``: ours)."""
        raise NotImplementedError

    def judge_prompt(self, item: Item, response: str) -> str | None:
        """The question put to an LLM judge when the rules abstain (None: this benchmark uses no judge)."""
        return None

    def parse_judge(self, item: Item, reply: str) -> Any:
        """The judge's reply as an extracted value (None when it could not say)."""
        return reply.strip() or None

    def is_correct(self, item: Item, extracted: Any, mode: str) -> bool:
        """Whether an extracted value matches the gold answer (``extracted`` may be None)."""
        raise NotImplementedError

    def record_id(self, record: dict[str, Any]) -> str | None:
        """The item id of a record in the benchmark's own format (the reference's output: the item plus
        ``text``), or None when the record has no id."""
        value = record.get(self.id_key)
        return None if value is None else str(value)

    def metrics(self, items: Sequence[Item], correct: dict[str, bool], mode: str,
                extracted: dict[str, Any] | None = None) -> dict[str, Any]:
        """``accuracy`` plus the benchmark's official breakdowns, from per-item correctness (and the
        extracted values, for metrics that look at the answers themselves)."""
        raise NotImplementedError


def native_records(path: Path, required: Sequence[str], id_key: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The records of a benchmark file (a JSON list, JSON lines, or ``{id: record}`` when ``id_key`` is
    given and the one object has no such key), each checked to be an object with the ``required`` keys.

    Raises:
        FormatError: a record that is not an object or lacks a required key (naming file, record and key).
    """
    records = read_records(path)
    if id_key and len(records) == 1 and isinstance(records[0][1], dict) and id_key not in records[0][1]:
        records = [(f"key {k!r}", v) for k, v in records[0][1].items()]
    for where, record in records:
        if not isinstance(record, dict):
            raise FormatError(path, f"expected a JSON object, got {type(record).__name__}", where=where)
        for key in required:
            if key not in record:
                raise FormatError(path, "missing key", where=where, key=key)
    return records


def accuracy_by(items: Sequence[Item], correct: dict[str, bool], key: str) -> dict[str, dict[str, Any]]:
    """``{value: {"accuracy", "correct", "total"}}`` grouping ``items`` by ``item.meta[key]``
    (a list value counts the item in each of its groups; None is skipped), sorted by value."""
    groups: dict[str, list[bool]] = {}
    for item in items:
        values = item.meta.get(key)
        for value in values if isinstance(values, list) else [values]:
            if value is not None:
                groups.setdefault(str(value), []).append(correct[item.id])
    return {k: summary(v) for k, v in sorted(groups.items())}


def summary(flags: Sequence[bool]) -> dict[str, Any]:
    """``{"accuracy", "correct", "total"}`` of a list of booleans (accuracy None when empty)."""
    n = len(flags)
    return {"accuracy": sum(flags) / n if n else None, "correct": int(sum(flags)), "total": n}
