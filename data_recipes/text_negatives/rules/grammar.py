"""Reading free geometry captions: vertex labels, sentence segments, articles and letter case.

Captions come from our engine and from LLMs, so the helpers accept arbitrary text: unicode geometry
symbols (∠ △ ° ⊥ ∥), LaTeX-ish commands (``\\angle ABC``) and sentences that are not about geometry
at all. Nothing here raises on odd input; a helper that finds nothing returns an empty result.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# An upper-case run standing alone (a vertex label such as A, AB, ABC, ABCD). Not part of a longer
# word ("In", "ABCs"), a number ("A1" is a label with an index, left alone) or a LaTeX command.
LABEL_RE = re.compile(r"(?<![A-Za-z0-9_\\'′])[A-Z]+(?![A-Za-z0-9_'′])")

# A lone "A" or "I" followed by a lower-case word is the article or the pronoun ("A circle", "I think"),
# unless that word is one a point label is commonly followed by ("A is the midpoint", "A and B").
LABEL_FOLLOWERS = frozenset(
    "is lies lie and are or to on in at of from by for than into onto with as be was has have moves coincides "
    "meets intersects respectively".split()
)
_NEXT_WORD_RE = re.compile(r"\s+([a-z]+)")

# Sentence ends, and the finer clause boundaries used to spread several edits over a caption.
_SENTENCE_END_RE = re.compile(r"(?<=[.!?。])\s+|\n+")
_CLAUSE_END_RE = re.compile(r"[,;:，；]\s*|\s+and\s+")

VOWEL_SOUND_LETTERS = frozenset("AEFHILMNORSX")
# Words that start with a vowel letter but a consonant sound, and the reverse.
_CONSONANT_SOUND_PREFIXES = ("uni", "use", "usu", "one", "once", "eu", "ur")
_VOWEL_SOUND_PREFIXES = ("hour", "honest", "honor", "honour", "heir")


@dataclass(frozen=True)
class Label:
    """One vertex label in a caption: its text and character span."""

    text: str
    start: int
    end: int


def _is_word_not_label(text: str, match: re.Match) -> bool:
    if match.group() not in ("A", "I"):
        return False
    follower = _NEXT_WORD_RE.match(text, match.end())
    return bool(follower) and follower.group(1) not in LABEL_FOLLOWERS


def find_labels(text: str) -> list[Label]:
    """All vertex labels (upper-case runs) of ``text``, in order, leaving out the article "A"."""
    return [
        Label(m.group(), m.start(), m.end())
        for m in LABEL_RE.finditer(text)
        if not _is_word_not_label(text, m)
    ]


def label_letters(text: str) -> frozenset[str]:
    """The set of letters used in the vertex labels of ``text``."""
    return frozenset("".join(label.text for label in find_labels(text)))


def _segments(text: str, boundary: re.Pattern) -> list[tuple[int, int]]:
    bounds, start = [], 0
    for m in boundary.finditer(text):
        if m.start() > start:
            bounds.append((start, m.start()))
        start = m.end()
    if start < len(text):
        bounds.append((start, len(text)))
    return bounds or [(0, len(text))]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of ``text``."""
    return _segments(text, _SENTENCE_END_RE)


def clause_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each clause (sentence pieces split at , ; : and "and")."""
    out = []
    for s, e in sentence_spans(text):
        out.extend((s + a, s + b) for a, b in _segments(text[s:e], _CLAUSE_END_RE))
    return out


def segment_index(spans: list[tuple[int, int]], position: int) -> int:
    """Index of the span containing ``position`` (the last span starting at or before it)."""
    index = 0
    for i, (start, _) in enumerate(spans):
        if start <= position:
            index = i
    return index


def article_for(word: str) -> str:
    """ "a" or "an" for the word that follows the article (a number, a label or an English word)."""
    if not word:
        return "a"
    if word[0].isdigit():
        digits = re.match(r"\d+", word).group()
        spoken_vowel = digits.startswith("8") or (digits[:2] in ("11", "18") and len(digits) % 3 == 2)
        return "an" if spoken_vowel else "a"
    if re.fullmatch(r"[A-Z]+", word) and len(word) <= 4:
        return "an" if word[0] in VOWEL_SOUND_LETTERS else "a"
    lower = word.lower()
    if lower.startswith(_VOWEL_SOUND_PREFIXES):
        return "an"
    if lower.startswith(_CONSONANT_SOUND_PREFIXES):
        return "a"
    return "an" if lower[0] in "aeiou" else "a"


def match_case(template: str, word: str) -> str:
    """``word`` in the letter case of ``template`` (lower, Capitalised or UPPER)."""
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


_ARTICLE_BEFORE_RE = re.compile(r"(?<![A-Za-z0-9])(a|an|A|An)(\s+)$")
_FIRST_WORD_RE = re.compile(r"\s*([A-Za-z0-9]+)")


def fix_article(text: str, position: int) -> str:
    """Make an article that ends just before ``position`` agree with the word starting there."""
    before = _ARTICLE_BEFORE_RE.search(text[max(0, position - 8):position])
    word = _FIRST_WORD_RE.match(text, position)
    if not before or not word:
        return text
    # A lone "A" before a word is the article only when it is not a vertex label.
    article = before.group(1)
    new = match_case(article, article_for(word.group(1)))
    if article == "A" and new == "A":
        return text
    start = position - len(before.group(0))
    return text[:start] + new + before.group(2) + text[position:]
