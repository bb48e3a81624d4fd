"""Caption edits and the rule registry.

A rule reads a caption and proposes every edit it can make (each a set of character spans to
replace); the engine (``engine.py``) chooses among the proposals, applies them and checks the result.
Rules are registered by name with :func:`register_rule`, listed with :func:`list_rules` and fetched
with :func:`get_rule`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mmgeolm_core.registry import Registry

FAMILIES = ("concept", "letter", "number", "relation")


@dataclass(frozen=True)
class Span:
    """Replace ``caption[start:end]`` by ``text``."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Edit:
    """One edit proposed by a rule: one or more non-overlapping spans, applied together.

    ``letters_changed`` counts the label letters a letter edit changes (0 for other edits); a letter
    edit is valid only when it changes at least two.
    """

    rule: str
    spans: tuple[Span, ...]
    letters_changed: int = 0

    def __post_init__(self) -> None:
        if not self.spans:
            raise ValueError(f"edit of rule '{self.rule}' has no spans")
        ordered = sorted(self.spans, key=lambda s: s.start)
        for a, b in zip(ordered, ordered[1:]):
            if a.end > b.start:
                raise ValueError(f"edit of rule '{self.rule}' has overlapping spans {a} and {b}")

    @property
    def start(self) -> int:
        return min(s.start for s in self.spans)

    @property
    def end(self) -> int:
        return max(s.end for s in self.spans)

    def overlaps(self, other: Edit) -> bool:
        return any(a.start < b.end and b.start < a.end for a in self.spans for b in other.spans)

    def changes(self, caption: str) -> bool:
        return any(caption[s.start:s.end] != s.text for s in self.spans)


RuleFn = Callable[[str, np.random.Generator], list[Edit]]


@dataclass(frozen=True)
class Rule:
    """A registered caption rule: ``propose(caption, rng)`` returns the edits it can make."""

    name: str
    family: str
    propose: RuleFn
    description: str = ""


_RULES: Registry[Rule] = Registry("caption rule")


def register_rule(name: str, family: str, description: str = "") -> Callable[[RuleFn], RuleFn]:
    """Decorator registering ``fn(caption, rng) -> list[Edit]`` as the rule ``name``.

    Raises:
        ValueError: the name is taken or the family is unknown.
    """
    if family not in FAMILIES:
        raise ValueError(f"rule '{name}': unknown family '{family}'; expected one of {list(FAMILIES)}")

    def decorator(fn: RuleFn) -> RuleFn:
        _RULES.register(name, Rule(name, family, fn, description or (fn.__doc__ or "").strip().split("\n")[0]))
        return fn

    return decorator


def list_rules(family: str | None = None) -> list[str]:
    """Names of the registered rules (of one family when given), sorted."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown rule family '{family}'; expected one of {list(FAMILIES)}")
    return [n for n in _RULES.names() if family is None or _RULES.get(n).family == family]


def get_rule(name: str) -> Rule:
    """The rule registered as ``name``; an unknown name raises listing the known ones."""
    return _RULES.get(name)
