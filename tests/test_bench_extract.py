"""Shared answer extraction (mmgeolm.bench.extract): anchored letters only, vertex names never read as options."""
from __future__ import annotations

import math

import pytest

from mmgeolm.bench.extract import (
    boxed_contents,
    extract_choice,
    find_letter,
    parse_number,
    same_text,
    yes_no,
)

CHOICES = ["135°", "140°", "145°", "150°"]


@pytest.mark.parametrize(("response", "expected"), [
    ("Answer: C", "C"),
    ("Answer:C", "C"),
    ("<Thought process>: <<AB = BC, so ...>> <Answer>: <<B>>", "B"),
    ("So the final answer is \\boxed{D}.", "D"),
    ("Therefore, the correct option is B.", "B"),
    ("(C) 145°", "C"),
    ("B", "B"),
    ("答案：C", "C"),
    ("故选C", "C"),
    ("First I thought the answer is A. Checking again: Answer: D", "D"),  # the last stated answer wins
    ("The answer is (C) 145°.", "C"),
])
def test_anchored_letters_are_read(response: str, expected: str) -> None:
    assert find_letter(response, CHOICES).value == expected


@pytest.mark.parametrize("response", [
    "Connect BD. The required point is D.",     # a vertex, not an option
    "In triangle ABC, angle A is 40°, so angle C is 50°",
    "The answer is AB = 5.",                      # a segment starting with A
    "Answer: A triangle has three angles.",       # the article "A"
    "Points A, B, C and D lie on the circle.",
    "(B) 145°",                                   # letter and text disagree (145° is C): abstain
])
def test_vertex_letters_and_words_are_never_options(response: str) -> None:
    assert find_letter(response, CHOICES).value is None


@pytest.mark.parametrize(("response", "expected", "rule"), [
    ("The answer is 145°.", "C", "choice-text"),
    ("145°", "C", "choice-text"),
    ("∠ABC = 145 degrees", "C", "choice-text"),
    ("(C) 145°", "C", "letter-line"),
    ("So the angle is 150 degrees, which is D.", "D", "choice-text"),
    ("I cannot tell.", None, ""),
])
def test_extract_choice_falls_back_to_choice_texts(response: str, expected: str | None, rule: str) -> None:
    found = extract_choice(response, CHOICES)
    assert (found.value, found.rule) == (expected, rule)
    assert found.method == ("rule" if expected else "none")


@pytest.mark.parametrize(("text", "value"), [
    ("0.5", 0.5), ("\\frac{1}{2}", 0.5), ("\\dfrac{3}{4}", 0.75), ("1/2", 0.5), ("2\\sqrt{3}", 2 * math.sqrt(3)),
    ("3√2", 3 * math.sqrt(2)), ("4π", 4 * math.pi), ("50%", 0.5), ("8 cm", 8.0), ("145°", 145.0),
    ("30^\\circ", 30.0), ("$12$", 12.0), ("-3", -3.0), ("1,000", 1000.0), ("12厘米", 12.0),
    ("x + 1", None), ("", None), ("AB", None),
])
def test_parse_number(text: str, value: float | None) -> None:
    got = parse_number(text)
    assert (got is None and value is None) or math.isclose(got, value)


def test_same_text_compares_numbers_and_normalised_texts() -> None:
    assert same_text("0.5", "\\frac{1}{2}") and same_text("145°", "145") and same_text("Rhombus.", "rhombus")
    assert not same_text("14", "145") and not same_text("", "")


def test_boxed_contents_balances_braces() -> None:
    assert boxed_contents("so \\boxed{\\frac{1}{2}} and \\boxed{3}") == ["\\frac{1}{2}", "3"]
    assert boxed_contents("\\boxed{\\frac{1}{2}") == []


@pytest.mark.parametrize(("response", "expected"), [
    ("Yes.", "yes"), ("no, they are not", "no"), ("The answer is yes.", "yes"), ("是的", "yes"), ("不是", "no"),
    ("True", "yes"), ("Maybe", None), ("", None),
])
def test_yes_no(response: str, expected: str | None) -> None:
    assert yes_no(response).value == expected


def test_scoring_never_imports_torch_or_llava() -> None:
    import subprocess
    import sys

    code = ("import sys; import mmgeolm.bench.cli, mmgeolm.bench.score, mmgeolm.bench.report, mmgeolm.bench.paper; "
            "from mmgeolm.bench import list_benchmarks; list_benchmarks(); "
            "bad = [m for m in ('torch', 'llava', 'llava_patches', 'transformers') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
