"""Held-out questions from a diagram's facts (data_recipes.diagrams.questions), on samples built by the real engine."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from data_recipes.cli import main as data_main
from data_recipes.diagrams.facts import parse_fact
from data_recipes.diagrams.questions import (
    exact_match,
    make_questions,
    normalise_answer,
    questions_for_sample,
)
from data_recipes.formats.dataset import read_samples

TINY = Path(__file__).resolve().parents[1] / "data_recipes" / "recipes" / "tiny.yaml"


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("tiny-data") / "data"
    assert data_main(["build", str(TINY), "--out", str(out), "--num", "12", "--workers", "1"]) == 0
    return read_samples(out)


def test_every_question_is_about_an_image_of_its_sample(samples: list[dict]) -> None:
    for s in samples:
        images = {s["image"], *(n["image"] for n in s["negatives"])}
        for q in questions_for_sample(s):
            assert q.sample_id == s["id"] and q.image in images
            assert q.question and q.answer and q.kind in ("value", "yes_no")


def test_positive_questions_follow_from_its_facts(samples: list[dict]) -> None:
    for s in samples:
        for q in questions_for_sample(s):
            if q.image != s["image"]:
                continue
            assert q.fact in s["facts"]
            f = parse_fact(q.fact)
            if q.kind == "value":
                assert q.answer == f.value and all(arg in q.question for arg in f.args)
            else:
                assert q.answer == "yes" and f.value is None


def test_no_questions_come_from_negatives_that_removed_the_asked_fact(samples: list[dict]) -> None:
    nos = 0
    for s in samples:
        by_image = {n["image"]: n for n in s["negatives"]}
        yes_questions = {q.question for q in questions_for_sample(s) if q.answer == "yes"}
        for q in questions_for_sample(s):
            if q.answer != "no":
                continue
            nos += 1
            negative = by_image[q.image]
            assert q.fact in negative["removed"] and q.fact not in negative["facts"]
            assert q.fact in s["facts"] and q.question in yes_questions  # same question, other picture
    assert nos > 0


def test_value_questions_on_negatives_ask_a_changed_value(samples: list[dict]) -> None:
    changed = 0
    for s in samples:
        by_image = {n["image"]: n for n in s["negatives"]}
        positive_answers = {q.question: q.answer for q in questions_for_sample(s)
                            if q.image == s["image"] and q.kind == "value"}
        for q in questions_for_sample(s):
            if q.kind == "value" and q.image != s["image"]:
                changed += 1
                assert q.fact in by_image[q.image]["added"] and q.fact in by_image[q.image]["facts"]
                if q.question in positive_answers:
                    assert positive_answers[q.question] != q.answer
    assert changed > 0  # number_change negatives exist in every tiny build


def test_make_questions_balances_answers_one_per_image(samples: list[dict]) -> None:
    questions = make_questions(samples, num=30, seed=3)
    assert len({q.image for q in questions}) == len(questions) == 30
    small = Counter("value" if q.kind == "value" else q.answer for q in make_questions(samples, num=9, seed=3))
    assert small == {"yes": 3, "no": 3, "value": 3}


def test_make_questions_is_deterministic_per_seed(samples: list[dict]) -> None:
    assert make_questions(samples, 20, seed=1) == make_questions(samples, 20, seed=1)
    assert make_questions(samples, 20, seed=1) != make_questions(samples, 20, seed=2)


@pytest.mark.parametrize("num", [1, 5])
def test_make_questions_respects_num(samples: list[dict], num: int) -> None:
    assert len(make_questions(samples, num, seed=0)) == num


@pytest.mark.parametrize(
    ("prediction", "answer", "expected"),
    [("Yes", "yes", True), ("yes.", "yes", True), ("Yes, it is.", "yes", True), ("no", "yes", False),
     ("Not sure", "no", False), ("  8\nmore text", "8", True), ("8 cm", "8", True), ("40°", "40", True),
     ("40 degrees", "40", True), ("48", "8", False), ("", "8", False), ("Square.", "square", True),
     ("rectangle", "square", False), ("yesno", "yes", False)],
)
def test_exact_match(prediction: str, answer: str, expected: bool) -> None:
    assert exact_match(prediction, answer) is expected


def test_normalise_answer() -> None:
    assert normalise_answer("  \"Rhombus\"!  ") == "rhombus"
    assert normalise_answer("") == ""


def test_answer_scoring_overall_per_kind_and_per_answer() -> None:
    from llava_patches.answer_questions import score

    results = [{"kind": "yes_no", "answer": "yes", "correct": True}, {"kind": "yes_no", "answer": "no", "correct": False},
               {"kind": "value", "answer": "8", "correct": True}, {"kind": "value", "answer": "5", "correct": True}]
    summary = score(results)
    assert summary["all"] == {"accuracy": 0.75, "n": 4}
    assert summary["yes_no"] == {"accuracy": 0.5, "n": 2} and summary["value"] == {"accuracy": 1.0, "n": 2}
    assert summary["answer=no"] == {"accuracy": 0.0, "n": 1}


def test_question_file_errors_name_file_line_and_key(tmp_path: Path) -> None:
    from llava_patches.answer_questions import read_questions

    path = tmp_path / "questions.jsonl"
    path.write_text('{"image": "a.png", "question": "Q?", "answer": "yes"}\n\n{"image": "b.png", "question": 3}\n')
    with pytest.raises(ValueError, match=r"questions.jsonl: line 3: key 'question': expected a string"):
        read_questions(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1: not valid JSON"):
        read_questions(path)
