"""MathVista golden tests: hand-written testmini-format records (geometry subset), official vs robust scoring."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmgeolm.bench.mathvista import build_query, edit_distance, official_normalise
from mmgeolm.bench.registry import get_benchmark
from mmgeolm.bench.score import score_items
from mmgeolm_core.io import FormatError

GPS = "geometry problem solving"


def _rec(pid, question, choices, answer, qtype="multi_choice", atype="text", precision=None, language="english",
         task=GPS, skills=("geometry reasoning",)):
    return {"pid": pid, "question": question, "image": f"images/{pid}.jpg", "choices": choices, "unit": None,
            "precision": precision, "answer": answer, "question_type": qtype, "answer_type": atype,
            "metadata": {"task": task, "skills": list(skills), "source": "Ours", "language": language,
                         "category": "math-targeted-vqa", "context": "geometry diagram", "grade": "high school"}}


RECORDS = {
    "1": _rec("1", "Angle PQR is an exterior angle of 35°. Find its supplement.", ["135°", "140°", "145°", "150°"], "145°"),
    "2": _rec("2", "Find the side of the square whose diagonal is 5√2.", None, "5", "free_form", "integer"),
    "3": _rec("3", "Find x to one decimal place.", None, "2.5", "free_form", "float", precision=1),
    "4": _rec("4", "如图，求∠BOC的度数。", ["30°", "45°", "60°", "90°"], "60°", language="chinese"),
    "5": _rec("5", "Which angle is the largest?", ["∠A", "∠B", "∠C"], "∠B"),
    "6": _rec("6", "How many bars are above 10?", None, "3", "free_form", "integer", task="figure question answering",
              skills=("statistical reasoning",)),
}

# pid -> (response, official correct, robust correct)
CASES = {
    "1a": ("1", "(C) 145°", False, True),      # official: no rule reads it -> "" -> nearest (shortest) choice 135°
    "1b": ("1", "145°", True, True),
    "1c": ("1", 'The answer is "C".', True, True),
    "1d": ("1", "The exterior angle is 35°, so the answer is 145°.", False, True),
    "2a": ("2", "5", True, True),
    "2b": ("2", "The side length is 5 cm.", False, True),
    "3a": ("3", "2.50", True, True),
    "3b": ("3", "x = 2.54", False, True),       # robust rounds to the precision, official needs a bare number
    "4a": ("4", "答案是C", False, True),
    "5a": ("5", "(B)", False, True),            # official without its GPT extractor: "" -> the first shortest choice
    "5b": ("5", "∠B", True, True),
}


@pytest.fixture
def testmini(tmp_path: Path) -> Path:
    path = tmp_path / "testmini.json"
    path.write_text(json.dumps(RECORDS, ensure_ascii=False))  # keyed by pid, as the release is
    return path


def test_only_geometry_problems_are_read(testmini: Path) -> None:
    items = get_benchmark("mathvista").read(testmini)
    assert [i.id for i in items] == ["1", "2", "3", "4", "5"]
    assert items[0].answer == "145°" and items[0].choices[2] == "145°"


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_cases(testmini: Path, case: str) -> None:
    bench = get_benchmark("mathvista")
    pid, response, official, robust = CASES[case]
    item = {i.id: i for i in bench.read(testmini)}[pid]
    for mode, expected in (("official", official), ("robust", robust)):
        found = bench.extract(item, response, mode)
        assert bench.is_correct(item, found.value, mode) is expected, (mode, found)


def test_official_normalisation_quirks(testmini: Path) -> None:
    item = {i.id: i for i in get_benchmark("mathvista").read(testmini)}["1"]
    assert official_normalise(None, item) == "135°"          # empty -> the nearest choice to "" (the first shortest)
    assert official_normalise("(d) whatever", item) == "150°"  # "(d)" -> D
    assert official_normalise("144", item) == "140°"           # edit distance, not value
    assert edit_distance("kitten", "sitting") == 3


def test_scores_by_language_and_prompt(testmini: Path) -> None:
    bench = get_benchmark("mathvista")
    items = bench.read(testmini)
    responses = {"1": "(C) 145°", "2": "5", "3": "2.5", "4": "答案是C", "5": "∠A"}
    robust = score_items(bench, items, responses, "robust").scores
    assert robust["correct"] == 4 and robust["by_language"]["chinese"] == {"accuracy": 1.0, "correct": 1, "total": 1}
    assert robust["by_skills"]["geometry reasoning"]["total"] == 5
    official = score_items(bench, items, responses, "official").scores
    assert official["correct"] == 2 and official["num_unparsed"] == 2
    prompt = bench.prompt(items[0])
    assert prompt.startswith("Hint: Please answer the question and provide the correct option letter")
    assert "(C) 145°" in prompt and prompt == build_query(RECORDS["1"])
    assert "Answer: X" in bench.prompt(items[0], "answer-line")


def test_bad_records_are_named(tmp_path: Path) -> None:
    bad = dict(RECORDS)
    bad["2"] = {k: v for k, v in RECORDS["2"].items() if k != "pid"}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(FormatError, match=r"bad.json: key '2': key 'pid': missing key"):
        get_benchmark("mathvista").read(path)
    path.write_text(json.dumps([RECORDS["6"]]))
    with pytest.raises(FormatError, match="no record has metadata.task == 'geometry problem solving'"):
        get_benchmark("mathvista").read(path)
