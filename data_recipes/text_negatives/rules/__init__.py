"""Rule-based caption negatives: a registry of caption-editing rules and the engine that applies them.

Importing the package registers the built-in rules (concept and relation swaps, vertex-letter edits,
numeric edits). Use :func:`generate_rule_negatives` for a caption, :func:`list_rules` /
:func:`get_rule` to inspect the registry and :func:`register_rule` to add a rule.
"""
from . import concepts, letters, numbers  # noqa: F401  (registers the built-in rules)
from .engine import RuleNegative, apply_edits, check_negative, generate_rule_negatives, propose_edits
from .grammar import article_for, find_labels, label_letters
from .letters import letters_changed, object_key, object_kind, same_object
from .registry import FAMILIES, Edit, Rule, Span, get_rule, list_rules, register_rule

__all__ = [
    "FAMILIES", "Edit", "Rule", "RuleNegative", "Span", "apply_edits", "article_for", "check_negative",
    "find_labels", "generate_rule_negatives", "get_rule", "label_letters", "letters_changed", "list_rules",
    "object_key", "object_kind", "propose_edits", "register_rule", "same_object",
]
