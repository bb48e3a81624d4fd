"""The rule engine: choose edits among the rules' proposals, apply them, check the result.

Single edits come first (the hardest negatives differ from the positive in one place), taken
round-robin over the rules that apply so that K negatives use as many rules as possible. When single
edits run out, pairs of edits are combined, always from different clauses (different sentences when
the caption has several), so that several edits are spread over the caption. Every negative is checked
by :func:`check_negative`; a caption that yields fewer than asked gets a reason, never a duplicate.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .grammar import clause_spans, fix_article, label_letters, segment_index, sentence_spans
from .registry import Edit, get_rule, list_rules

MAX_PAIR_TRIES = 200


@dataclass(frozen=True)
class RuleNegative:
    """A rule-based negative caption and the rules whose edits made it (one name per edit)."""

    caption: str
    rules: tuple[str, ...]
    edits: tuple[Edit, ...]


def propose_edits(caption: str, rng: np.random.Generator, rules: Sequence[str] | None = None) -> list[Edit]:
    """Every edit the rules (all registered ones by default) propose for ``caption``, in rule order."""
    edits = []
    for name in rules if rules is not None else list_rules():
        edits.extend(e for e in get_rule(name).propose(caption, rng) if e.changes(caption))
    return edits


def apply_edits(caption: str, edits: Sequence[Edit]) -> str:
    """Apply non-overlapping edits and make each article before an edited span agree with it."""
    spans = sorted((s for e in edits for s in e.spans), key=lambda s: s.start, reverse=True)
    text = caption
    for span in spans:
        # Right to left: fixing the article before this span never moves a span still to apply.
        text = text[:span.start] + span.text + text[span.end:]
        text = fix_article(text, span.start)
    return text


def check_negative(positive: str, negative: str, edits: Sequence[Edit]) -> list[str]:
    """The validity constraints a rule negative breaks (empty when it is valid)."""
    problems = []
    if " ".join(negative.split()) == " ".join(positive.split()):
        problems.append("the negative does not differ from the positive")
    new_letters = label_letters(negative) - label_letters(positive)
    if new_letters:
        problems.append(f"introduces letters absent from the caption: {sorted(new_letters)}")
    for edit in edits:
        if get_rule(edit.rule).family == "letter" and edit.letters_changed < 2:
            problems.append(f"letter edit '{edit.rule}' changes {edit.letters_changed} letter(s), expected >= 2")
    if len(edits) > 1:
        clauses = clause_spans(positive)
        where = [_clauses_of(clauses, e) for e in edits]
        if any(a & b for i, a in enumerate(where) for b in where[i + 1:]):
            problems.append("several edits fall in the same clause; they must be spread over the caption")
    for i, a in enumerate(edits):
        if any(a.overlaps(b) for b in edits[i + 1:]):
            problems.append("edits overlap")
    return problems


def _clauses_of(clauses: list[tuple[int, int]], edit: Edit) -> set[int]:
    return {segment_index(clauses, s.start) for s in edit.spans}


def _round_robin(edits: list[Edit], rng: np.random.Generator) -> list[Edit]:
    """Edits reordered so consecutive ones come from different rules, each rule's own order shuffled."""
    by_rule: dict[str, list[Edit]] = {}
    for edit in edits:
        by_rule.setdefault(edit.rule, []).append(edit)
    queues = []
    for name in sorted(by_rule):
        group = by_rule[name]
        queues.append([group[i] for i in rng.permutation(len(group))])
    queues = [queues[i] for i in rng.permutation(len(queues))]
    ordered = []
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))
    return ordered


def _spread_pairs(positive: str, singles: list[Edit], rng: np.random.Generator) -> list[tuple[Edit, Edit]]:
    """Random pairs of edits in different clauses, pairs across sentences first."""
    clauses, sentences = clause_spans(positive), sentence_spans(positive)
    pairs = []
    n = len(singles)
    for _ in range(min(MAX_PAIR_TRIES, n * (n - 1) // 2)):
        i, j = sorted(rng.choice(n, size=2, replace=False)) if n >= 2 else (0, 0)
        a, b = singles[i], singles[j]
        if a.overlaps(b) or _clauses_of(clauses, a) & _clauses_of(clauses, b):
            continue
        pairs.append((a, b) if a.start < b.start else (b, a))
    pairs.sort(key=lambda p: segment_index(sentences, p[0].start) == segment_index(sentences, p[1].start))
    return pairs


def generate_rule_negatives(
    caption: str,
    num: int,
    rng: np.random.Generator,
    rules: Sequence[str] | None = None,
    max_edits: int = 2,
) -> tuple[list[RuleNegative], str | None]:
    """Up to ``num`` distinct valid rule negatives of ``caption``.

    Args:
        caption: the positive caption (any text).
        num: how many negatives to make.
        rng: the only source of randomness.
        rules: rule names to use (default: all registered).
        max_edits: 1 for single edits only, 2 to also combine two edits when single ones run out.

    Returns:
        (negatives, reason): ``reason`` says why fewer than ``num`` were made, else None.
    """
    if num < 0 or max_edits not in (1, 2):
        raise ValueError(f"expected num >= 0 and max_edits in (1, 2), got num={num}, max_edits={max_edits}")
    seen = {" ".join(caption.split())}
    negatives: list[RuleNegative] = []

    def offer(edits: tuple[Edit, ...]) -> None:
        text = apply_edits(caption, edits)
        key = " ".join(text.split())
        if key in seen or check_negative(caption, text, edits):
            return
        seen.add(key)
        negatives.append(RuleNegative(text, tuple(e.rule for e in edits), edits))

    singles = _round_robin(propose_edits(caption, rng, rules), rng)
    for edit in singles:
        if len(negatives) >= num:
            break
        offer((edit,))
    if len(negatives) < num and max_edits == 2:
        valid = [e for e in singles if not check_negative(caption, apply_edits(caption, (e,)), (e,))]
        for pair in _spread_pairs(caption, valid, rng):
            if len(negatives) >= num:
                break
            offer(pair)
    if len(negatives) >= num:
        return negatives[:num], None
    if not singles:
        return negatives, "no caption rule applies to this caption"
    used = sorted({e.rule for e in singles})
    return negatives, f"only {len(negatives)} distinct valid rule negatives possible (rules that apply: {used})"
