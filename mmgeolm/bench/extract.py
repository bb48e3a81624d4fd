"""Answer extraction shared by the benchmarks (robust mode): anchored patterns only, then choice texts, then numbers.

The rule that matters most: a capital letter is an option only where the response says so. Vertex
names are A-E too, so "the last capital letter" or "is D" would read "the point is D" as option D.
A letter counts only inside an anchor (``\\boxed{B}``, ``Answer: B``, ``<Answer>: <<B>>``, ``(B)`` as
the whole last line, "the correct option is B", "选B", a line that is only ``B``) and only when what
follows it ends the answer (punctuation, end of line) or is that option's own text ("(B) 145°").
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence

from mmgeolm.bench.base import Extraction

LETTERS = "ABCDEFGH"
# "Answer", "answer is", "<Answer>: <<", "答案是", "final answer:", then an optional "option"/"choice"
_ANSWER = (r"(?:final\s+answer|answer|答案|故选|所以选|因此选)"
           r"[\s:：>*]*(?:is|was|would\s+be|should\s+be|为|是|应为|应选)?[\s:：]*"
           r"(?:option|choice|选项)?\s*[<(\[{（*\"'“]*\s*")
_SELECT = (r"(?:correct|right|best)\s+(?:option|choice|answer)\s+(?:is|would\s+be)\s*[(（]?\s*",
           r"(?:choose|select|pick)\s+(?:option\s+|choice\s+)?[(（]?\s*",
           r"\b选\s*")
_OPTION_IS = r"(?:option|choice)\s*[(（]?([{L}])[)）]?\s+is\s+(?:correct|right|selected|the\s+answer)"


def nfkc(text: str) -> str:
    """Unicode-normalised text (full-width letters and digits to ASCII, "（" to "(")."""
    return unicodedata.normalize("NFKC", text)


def _ends_answer(text: str, end: int, choice: str | None) -> bool:
    """Whether the letter ending at ``end`` stands alone: followed by nothing, punctuation, or its own choice text."""
    rest = text[end:]
    stripped = rest.lstrip(" \t")
    if not stripped or stripped[0] in "\n.,;:!?)]}>*\"'”）。，；：" or not (stripped[0].isalnum() or stripped[0] == "_"):
        return True
    return choice is not None and same_text(stripped.split("\n")[0][: len(choice) + 8].rstrip(" .。"), choice, prefix=True)


def find_letter(response: str, choices: Sequence[str]) -> Extraction:
    """An option letter stated by an anchor in ``response`` (see the module doc), or ``Extraction.none()``.

    The last anchored statement wins (a final answer comes after the reasoning).
    """
    text = nfkc(response)
    n = max(len(choices), 2)
    letters = LETTERS[:n]
    cls = f"[{letters}]"

    def choice(letter: str) -> str | None:
        i = letters.index(letter)
        return choices[i] if i < len(choices) else None

    boxed = [b.strip() for b in boxed_contents(text)]
    for b in reversed(boxed):
        m = re.fullmatch(rf"(?:\\text\{{)?\s*\(?({cls})\)?\s*\}}?\.?", b)
        if m:
            return Extraction(m.group(1), "rule", "boxed")
    candidates: list[tuple[int, str, str]] = []
    for rule, pattern in (("answer", _ANSWER), *(("select", p) for p in _SELECT)):
        for m in re.finditer(rf"{pattern}({cls})", text, flags=re.IGNORECASE if rule == "answer" else 0):
            letter = m.group(m.lastindex)
            if letter in letters and _ends_answer(text, m.end(), choice(letter)):
                candidates.append((m.start(), letter, rule))
    for m in re.finditer(_OPTION_IS.replace("{L}", letters), text, flags=re.IGNORECASE):
        candidates.append((m.start(), m.group(1).upper(), "select"))
    if candidates:
        _, letter, rule = max(candidates)
        return Extraction(letter, "rule", rule)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if lines:
        last = lines[-1]
        m = re.fullmatch(rf"[(\[（]?({cls})[)\]）]?[.。]?", last)
        if m:
            return Extraction(m.group(1), "rule", "letter-line")
        m = re.fullmatch(rf"[(\[（]({cls})[)\]）]\s*(.*?)[.。]?", last)
        if m and (not m.group(2) or same_text(m.group(2), choice(m.group(1)) or "")):
            return Extraction(m.group(1), "rule", "letter-line")
    return Extraction.none()


def answer_span(response: str) -> str:
    """Where a final answer is stated: after the last "answer" keyword, else the last sentence of the last
    non-empty line (sentences end at ". ", "。", "!" or "?", never at a decimal point)."""
    text = nfkc(response)
    matches = list(re.finditer(r"(?:answer|答案)\s*(?:is|:|：|为|是)?", text, flags=re.IGNORECASE))
    if matches:
        return text[matches[-1].end():].strip().split("\n")[0]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    sentences = [x for x in re.split(r"(?<=[.!?])\s+|。", lines[-1].strip()) if x.strip()]
    return sentences[-1] if sentences else lines[-1]


# --------------------------------------------------------------------------- numbers and texts

_UNITS = r"(?:cm\^?2|cm²|cm\^?3|cm³|cm|mm|km|m\^?2|m²|m|units?|degrees?|deg|度|°|厘米|米|平方厘米)"
_DEGREE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|°|º")


def clean_math(text: str) -> str:
    """LaTeX and unit noise removed: ``$``, ``\\left``, ``^\\circ``, ``\\text{cm}``, thousands commas."""
    s = nfkc(text)
    s = s.replace("$", "").replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "")
    s = re.sub(r"\\(?:text|mathrm|mbox|textbf|mathbf)\{([^{}]*)\}", r"\1", s)
    s = _DEGREE.sub("", s)
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)
    return s.strip()


def parse_number(text: str) -> float | None:
    """A number written in ``text`` as a whole: ``0.5``, ``1/2``, ``\\frac{1}{2}``, ``2\\sqrt{3}``, ``3√2``,
    ``4π``, ``50%``, with units or a degree sign after it; None for anything else."""
    s = clean_math(text).strip().rstrip(".。")
    s = re.sub(rf"\s*{_UNITS}\s*$", "", s, flags=re.IGNORECASE).strip()
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("−", "-").replace(" ", "")
    if not s:
        return None
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    percent = s.endswith("%")
    s = s.rstrip("%")
    value = _plain_number(s)
    return None if value is None else sign * value / (100.0 if percent else 1.0)


def _plain_number(s: str) -> float | None:
    num = r"\d+(?:\.\d+)?|\.\d+"
    if re.fullmatch(num, s):
        return float(s)
    m = re.fullmatch(r"\\frac\{(.+?)\}\{(.+?)\}", s) or re.fullmatch(rf"({num})/({num})", s)
    if m:
        a, b = _plain_number(m.group(1)), _plain_number(m.group(2))
        return a / b if a is not None and b else None
    m = re.fullmatch(rf"({num})?(?:\\sqrt\{{({num})\}}|√\{{?({num})\}}?)", s)
    if m:
        k = float(m.group(1)) if m.group(1) else 1.0
        return k * math.sqrt(float(m.group(2) or m.group(3)))
    m = re.fullmatch(rf"({num})?(?:\\pi|π)", s)
    if m:
        return (float(m.group(1)) if m.group(1) else 1.0) * math.pi
    return None


def numbers_in(text: str) -> list[float]:
    """Every number written in ``text``, in order (fractions and roots as values where written as such)."""
    s = clean_math(text).replace("\\dfrac", "\\frac")
    pattern = r"\\frac\{[^{}]+\}\{[^{}]+\}|\d*(?:\.\d+)?(?:\\sqrt\{[^{}]+\}|√\d+)|-?\d+(?:\.\d+)?(?:/\d+(?:\.\d+)?)?"
    out = []
    for m in re.finditer(pattern, s):
        value = parse_number(m.group(0))
        if value is not None:
            out.append(value)
    return out


def close(a: float, b: float, rel: float = 1e-4, abs_tol: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_tol)


def normalise_text(text: str) -> str:
    """Lower case, no spaces, degree signs, LaTeX noise or surrounding punctuation: "145 °" -> "145"."""
    s = clean_math(text).lower()
    s = re.sub(r"\s+", "", s)
    return s.strip(".,;:!?。，；：\"'“”()（）[]")


def same_text(a: str, b: str, prefix: bool = False) -> bool:
    """Whether two answer texts say the same: equal after :func:`normalise_text`, or equal numbers."""
    x, y = normalise_text(a), normalise_text(b)
    if not x or not y:
        return False
    if x == y or (prefix and x.startswith(y) and not x[len(y):len(y) + 1].isalnum()):
        return True
    p, q = parse_number(a), parse_number(b)
    return p is not None and q is not None and close(p, q)


def match_choice_text(span: str, choices: Sequence[str]) -> int | None:
    """The one choice whose text ``span`` states (whole span, or the only choice number in it), else None."""
    hits = [i for i, c in enumerate(choices) if same_text(span, c)]
    if len(hits) == 1:
        return hits[0]
    values = [parse_number(c) for c in choices]
    if all(v is not None for v in values) and len(set(values)) == len(values):
        found = {i for x in numbers_in(span) for i, v in enumerate(values) if close(x, v)}
        if len(found) == 1:
            return found.pop()
    texts = [normalise_text(c) for c in choices]
    span_n = normalise_text(span)
    found = [i for i, t in enumerate(texts) if t and len(t) > 1 and not any(ch.isdigit() for ch in t) and t in span_n]
    return found[0] if len(found) == 1 else None


def extract_choice(response: str, choices: Sequence[str]) -> Extraction:
    """Robust multiple-choice extraction: an anchored letter, else the answer span's choice text or number."""
    found = find_letter(response, choices)
    if found.value is not None:
        return found
    span = answer_span(response)
    i = match_choice_text(span, choices) if span else None
    if i is not None:
        return Extraction(LETTERS[i], "rule", "choice-text")
    return Extraction.none()


def boxed_contents(text: str) -> list[str]:
    """The contents of every ``\\boxed{...}`` (balanced braces), in order; an unclosed one is skipped."""
    out = []
    for m in re.finditer(r"\\boxed\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[m.end(): i - 1])
    return out


def yes_no(response: str) -> Extraction:
    """"yes"/"no" from a reply: its first word, a stated answer, or Chinese 是/否/对/不; None when unsure."""
    text = nfkc(response).strip()
    m = re.search(r"(?:answer|答案)\s*(?:is|:|：|为|是)?\s*[<(\[*\"']*\s*(yes|no)\b", text, flags=re.IGNORECASE)
    if m:
        return Extraction(m.group(1).lower(), "rule", "answer")
    m = re.match(r"[\s*\"'(\[]*(yes|no|true|false)\b", text, flags=re.IGNORECASE)
    if m:
        word = m.group(1).lower()
        return Extraction({"true": "yes", "false": "no"}.get(word, word), "rule", "first-word")
    m = re.match(r"(不是|不|否|没有|是|对|有)", text)
    if m:
        return Extraction("no" if m.group(1) in ("不是", "不", "否", "没有") else "yes", "rule", "first-word")
    return Extraction.none()
