"""Equality of open LaTeX answers, as MM-Math's ``eval.py`` (``AutoScoringJudge``) decides it.

Pipeline for a gold solution and a response: take every ``\\boxed{}`` (joined by commas; without one,
the ``$...$`` of the last line, else the whole text), replace units and symbols (``^\\circ``, ``\\left``,
``厘米``, full-width punctuation...), drop Chinese characters unless the answer is only Chinese, turn
``a<x<b`` into an interval, split on top-level commas, expand ``\\pm``, then pair the parts in any order,
each pair equal when: identical; both intervals with equal ends; numbers within the precision (default
1e-2, the gold also taken ×100 and ÷100); ``sympy`` equal after ``parse_latex`` (numbers to the
precision, symbolic differences below 1e-3); or equations proportional.

``robust=True`` fixes two quirks of the published rules: "cm" and a final "m" are removed only as
units (the official code deletes "cm" anywhere and any trailing "m": ``\\sqrt{m}`` breaks), and the ×100
/ ÷100 equivalence applies only when a side has a "%" (officially 0.5 equals 50).
Needs ``sympy`` and ``antlr4-python3-runtime==4.11`` (``pip install mmgeolm[bench]``).
"""
from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

from mmgeolm.bench.extract import boxed_contents

_SYMBOLS = {"\\left": "", "\\right": "", "厘米": "", "，": ",", "$": "", "（": "(", "）": ")", "\\infty": "oo",
            "\\colon ": ":", "＋": "+", "\\, ": "", "\\,": "", "^\\circ": "", "^{\\circ}": ""}
_OFFICIAL_UNITS = ("\\text{cm}^2", "\\text{cm}", "\\,cm", "\\text{ cm}", "cm", "\\text{分米}^2", "cm^{2}",
                   "60 \\text{ cm}^2", "\\ \\text{m}", "\\text{米}")
_STRIP = "\n,.:;^_=+`!@#%^&*~，。"
_CHINESE = r"[\u4e00-\u9fff]+"


def _sympy() -> Any:
    try:
        import sympy
        from sympy.parsing.latex import parse_latex

        parse_latex("1")  # fails here when the antlr4 runtime is missing or of another version
    except ImportError as exc:
        raise ImportError("scoring MM-Math needs sympy and antlr4-python3-runtime==4.11: "
                          "pip install 'mmgeolm[bench]'") from exc
    return sympy, parse_latex


@lru_cache(maxsize=4096)
def _parse(text: str) -> Any:
    return _sympy()[1](text)


def boxed_answer(text: str) -> str:
    """Every ``\\boxed{}`` joined by commas; else the last line's ``$...$``; else the text (eval.py's rule).

    Raises:
        ValueError: a ``\\boxed{`` whose braces never close.
    """
    if text.count("\\boxed{") > len(boxed_contents(text)):
        raise ValueError("mismatched braces in \\boxed{}")
    found = boxed_contents(text)
    if found:
        return "".join(f"{b}," for b in found)
    last = text.strip().split("\n")[-1]
    dollars = re.findall(r"\$(.*?)\$", last)
    return "".join(f"{d}," for d in dollars) if dollars else text


def clean(expr: str, robust: bool = False) -> str:
    """eval.py's ``sepcial_symbol_replace`` (units and symbols), or its robust variant."""
    if robust:
        expr = expr.strip(_STRIP)
        expr = re.sub(r"\\(?:text|mathrm)\{\s*(?:cm|m|dm|mm|km|米|分米|厘米)\s*\}(?:\^\{?[23]\}?)?", "", expr)
        expr = re.sub(r"(?<=[\d}\s])(?:cm|mm|dm|km|m)(?:\^\{?[23]\}?|²|³)?\s*$", "", expr.strip())
    else:
        for unit in _OFFICIAL_UNITS:
            expr = expr.replace(unit, "")
        expr = re.sub(r"(.+)m$", r"\1", expr.strip())
    if "\\in " in expr:
        expr = expr.split("\\in ")[1]
    for symbol, replacement in _SYMBOLS.items():
        expr = expr.replace(symbol, replacement)
    expr = re.sub(r"(\\sin|\\cos|\\tan)(\d+)", r"\1((\2/180)\\pi)", expr)
    expr = expr.strip(_STRIP)
    return re.sub(r"\\(?:mathrm|mathbf)\{~?([^}]*)\}", r"\1", expr)


def split_top_level(expr: str) -> list[str]:
    """Split on commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(expr):
        depth += (ch in "([") - (ch in ")]")
        if ch == "," and depth == 0:
            parts.append(expr[start:i].strip())
            start = i + 1
    if start < len(expr):
        parts.append(expr[start:].strip())
    return parts


def _expand_pm(parts: list[str]) -> list[str]:
    out = []
    for p in parts:
        out += [p.replace("\\pm", "+"), p.replace("\\pm", "-")] if "\\pm" in p else [p]
    return out


class LatexJudge:
    """MM-Math's answer equality (see the module doc).

    Args:
        precision: the numeric tolerance (eval.py's ``--precision``, default 1e-2).
        robust: fix the unit and percentage quirks.
    """

    def __init__(self, precision: float = 1e-2, robust: bool = False):
        self.precision, self.robust = precision, robust

    def equal(self, gold: str, prediction: str) -> bool:
        """Whether ``prediction`` gives the gold answer (parse failures count as not equal, as in eval.py)."""
        try:
            a, b = clean(boxed_answer(gold), self.robust), clean(boxed_answer(prediction), self.robust)
        except ValueError:
            return False
        if a == b:
            return True
        a, b = (x if re.fullmatch(_CHINESE, x) else re.sub(_CHINESE, "", x) for x in (a, b))
        a, b = (f"({x.split('<')[0]}, {x.split('<')[-1]})" if x.count("<") == 2 else x for x in (a, b))
        left, right = _expand_pm(split_top_level(a)), _expand_pm(split_top_level(b))
        if len(left) != len(right):
            return False
        while left:  # pair every gold part with some predicted part, in any order
            item = left[0]
            match = next((other for other in right if self._part_equal(item, other)), None)
            if match is None:
                return False
            left.remove(item)
            right.remove(match)
        return True

    def _part_equal(self, a: str, b: str) -> bool:
        if a == b and a != "":
            return True
        if _is_interval(a) and _is_interval(b):
            try:
                return self._interval_equal(a, b)
            except Exception:  # noqa: BLE001 (eval.py: any failure of this check means "not equal")
                return False
        for check in (self._numbers_equal, self._expressions_equal, self._equations_equal):
            try:
                if check(a, b):
                    return True
            except Exception:  # noqa: BLE001 (sympy raises many types on unparsable LaTeX)
                continue
        return False

    def _numbers_equal(self, a: str, b: str) -> bool:
        gold, pred = float(a), float(b)
        scaled = (gold / 100, gold, gold * 100) if (not self.robust or "%" in a + b) else (gold,)
        return any(abs(g - pred) <= self.precision * 1.01 for g in scaled)

    def _expressions_equal(self, a: str, b: str) -> bool:
        if "=" in a and "=" in b:
            return False
        sympy = _sympy()[0]
        x = sympy.sympify(_parse((a.split("=")[1] if "=" in a else a).strip()))
        y = sympy.sympify(_parse((b.split("=")[1] if "=" in b else b).strip()))
        if x == y:
            return True
        pi = _parse("\\pi")  # parse_latex reads \pi as a Symbol named pi, not sympy.pi
        x, y = x.subs(pi, math.pi), y.subs(pi, math.pi)
        if x.has(sympy.Symbol) != y.has(sympy.Symbol):
            return False
        if not x.has(sympy.Symbol):
            if not (_computable(x, sympy) and _computable(y, sympy)):
                return False
            return abs(x.evalf() - y.evalf()) <= self.precision * 1.01
        return abs(sympy.simplify(x - y).evalf()) < 1e-3

    def _equations_equal(self, a: str, b: str) -> bool:
        sympy = _sympy()[0]

        def side_difference(eq: str) -> Any:
            lhs, rhs = eq.split("=")
            return sympy.simplify(_parse(lhs) - _parse(rhs))

        x, y = side_difference(a), side_difference(b)
        r1, r2 = sympy.simplify(x / y), sympy.simplify(y / x)
        return bool((r1.is_Integer and r1 != 0) or (r2.is_Integer and r2 != 0))

    def _interval_equal(self, a: str, b: str) -> bool:
        if a == b:
            return True
        parts_a, parts_b = a.split("\\cup"), b.split("\\cup")
        if len(parts_a) != len(parts_b):
            return False
        for x, y in zip(parts_a, parts_b):
            if x[0] != y[0] or x[-1] != y[-1]:
                return False
            for u, v in zip(x.strip("[]()").split(","), y.strip("[]()").split(",")):
                if not self._expressions_equal(u, v):
                    return False
        return True


def _is_interval(expr: str) -> bool:
    return expr.startswith(("(", "[")) and expr.endswith((")", "]"))


def _computable(expr: Any, sympy: Any) -> bool:
    """eval.py's guard against huge powers (an exponent above 1000 is not evaluated)."""
    if isinstance(expr, sympy.Pow):
        base, exponent = expr.as_base_exp()
        return bool(base.is_number and exponent.is_number and abs(exponent.evalf()) <= 1000)
    return True
