"""GeoQA golden tests: hand-written records in G-LLaVA's LMM format and in the JSON-list format, official vs robust."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmgeolm.bench.cli import main as bench_main
from mmgeolm.bench.geoqa import INSTRUCTION, official_extract
from mmgeolm.bench.registry import get_benchmark
from mmgeolm.bench.score import score_items
from mmgeolm_core.io import FormatError

# (question, choices, gold) written for these tests
QUESTIONS = [
    ("In circle O, chord PQ subtends a central angle of 80°. Find the inscribed angle on PQ.", ["20°", "30°", "40°", "80°"], "C"),
    ("Lines l and m are parallel and a transversal makes a 65° angle with l. Find the alternate angle.", ["25°", "65°", "115°", "130°"], "B"),
    ("A ladder of length 2.5 reaches a wall; its foot is 1.5 from the wall. How high does it reach?", ["1", "1.5", "2", "2.5"], "C"),
    ("Triangle DEF has DE = DF and angle D = 40°. Find angle E.", ["40°", "50°", "60°", "70°"], "D"),
    ("Rectangle WXYZ has WX = 6 and XY = 8. Find the diagonal WY.", ["7", "10", "12", "14"], "B"),
    ("In kite KLMN the diagonals meet at P. Find angle KPL.", ["45°", "60°", "90°", "120°"], "C"),
]

# id -> (response, official extraction, robust extraction)
RESPONSES = {
    "0": ("The inscribed angle is half the central angle: 40°.\nAnswer:C", "C", "C"),
    "1": ("Alternate angles are equal. Connect BD. The required point is D.", "D", None),   # a vertex read as D
    "2": ("The height is 2.0, so the correct option is C", None, "C"),                     # "." splits 2.0
    "3": ("Angle E is (180 - 40) / 2. This Angle is 70°.", "A", "D"),                     # "This Angle" -> "is A"
    "4": ("(B) 10", None, "B"),
    "5": ("对角线互相垂直，答案是C", None, "C"),                                              # Chinese
}


def _write_lmm(root: Path) -> Path:
    questions, answers = root / "test_questions.jsonl", root / "test_answers.jsonl"
    with questions.open("w") as q, answers.open("w") as a:
        for i, (text, choices, gold) in enumerate(QUESTIONS):
            listed = "\n".join(f"{c}:{t}" for c, t in zip("ABCD", choices))
            q.write(json.dumps({"question_id": i, "image": f"test/{i}.png",
                                "text": f"\n{INSTRUCTION}\nQuestion:{text}\nChoices:\n{listed}"}) + "\n")
            a.write(json.dumps({"question_id": i, "text": gold}) + "\n")
    return questions


@pytest.mark.parametrize("qid", sorted(RESPONSES))
def test_official_and_robust_extraction(tmp_path: Path, qid: str) -> None:
    bench = get_benchmark("geoqa")
    item = {i.id: i for i in bench.read(_write_lmm(tmp_path))}[qid]
    response, official, robust = RESPONSES[qid]
    assert official_extract(response) == official
    assert bench.extract(item, response, "official").value == official
    assert bench.extract(item, response, "robust").value == robust


def test_scores_official_vs_robust_and_a_missing_prediction(tmp_path: Path) -> None:
    bench = get_benchmark("geoqa")
    items = bench.read(_write_lmm(tmp_path))
    responses = {k: v[0] for k, v in RESPONSES.items() if k != "5"}
    official = score_items(bench, items, responses, "official").scores
    robust = score_items(bench, items, responses, "robust").scores
    # official: 0 right, 1 (vertex D, gold B) wrong, 3 (A, gold D) wrong -> 1 of 6
    assert official["correct"] == 1 and official["accuracy"] == pytest.approx(1 / 6)
    assert official["num_unparsed"] == 2 and official["missing_ids"] == ["5"]
    # robust: 0, 2, 3, 4 right; 1 abstains
    assert robust["correct"] == 4 and robust["num_unparsed"] == 1 and robust["num_missing"] == 1


def test_json_list_format_with_types_and_the_answers_file_errors(tmp_path: Path) -> None:
    records = [{"id": 7, "question": QUESTIONS[0][0], "choices": QUESTIONS[0][1], "label": 2, "type": "angle"},
               {"id": 8, "English problem": QUESTIONS[2][0], "choices": QUESTIONS[2][1], "label": 2, "type": "length"},
               {"id": 9, "subject": "other", "question": QUESTIONS[4][0], "choices": QUESTIONS[4][1], "label": 1}]
    path = tmp_path / "geoqa_test.json"
    path.write_text(json.dumps(records))
    bench = get_benchmark("geoqa")
    items = bench.read(path)
    assert [(i.id, i.answer, i.meta["type"], i.image) for i in items] == [
        ("7", "C", "angle", "7.png"), ("8", "C", "length", "8.png"), ("9", "B", "other", "9.png")]
    scores = score_items(bench, items, {"7": "Answer: C", "8": "Answer: A", "9": "Answer: B"}).scores
    assert scores["by_type"] == {"angle": {"accuracy": 1.0, "correct": 1, "total": 1},
                                 "length": {"accuracy": 0.0, "correct": 0, "total": 1},
                                 "other": {"accuracy": 1.0, "correct": 1, "total": 1}}
    assert "Question:" in bench.prompt(items[0]) and "A:20°" in bench.prompt(items[0])
    records[1]["label"] = 4
    path.write_text(json.dumps(records))
    with pytest.raises(FormatError, match=r"geoqa_test.json: record 1: key 'label': expected 0-3, got 4"):
        bench.read(path)
    lmm = _write_lmm(tmp_path / "x" if (tmp_path / "x").mkdir() is None else tmp_path)
    (lmm.parent / "test_answers.jsonl").unlink()
    with pytest.raises(FormatError, match="GeoQA answers not found"):
        bench.read(lmm)


def test_cli_scores_the_reference_output_format(tmp_path: Path) -> None:
    questions = _write_lmm(tmp_path)
    # the reference writes the item plus "text" (G-LLaVA: question_id, prompt, text)
    preds = tmp_path / "merged.jsonl"
    preds.write_text("".join(json.dumps({"question_id": int(k), "prompt": "...", "text": v[0]}) + "\n"
                             for k, v in RESPONSES.items()))
    out = tmp_path / "scored"
    assert bench_main(["score", "geoqa", "--questions", str(questions), "--predictions", str(preds), "--out", str(out),
                       "--mode", "official", "-q"]) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert scores["num_items"] == 6 and scores["correct"] == 1 and scores["mode"] == "official"
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert results[1] == {"id": "1", "extracted": "D", "answer": "B", "correct": False, "method": "rule",
                          "rule": "g-llava", "missing": False}
