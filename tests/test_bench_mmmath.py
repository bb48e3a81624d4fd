"""MM-Math golden tests: hand-written LaTeX solutions and responses, official vs robust, breakdowns."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmgeolm.bench.mathnorm import LatexJudge
from mmgeolm.bench.registry import get_benchmark
from mmgeolm.bench.score import score_items
from mmgeolm_core.io import FormatError

pytest.importorskip("sympy")

# gold, response, official, robust
CASES = [
    (r"\boxed{\frac{1}{2}}", r"so the ratio is \boxed{0.5}", True, True),
    (r"\boxed{30^\circ}", r"\boxed{30}", True, True),
    (r"\boxed{2\sqrt{3}}", r"\boxed{\sqrt{12}}", True, True),
    (r"\boxed{3, 5}", r"x_1 = \boxed{5}, x_2 = \boxed{3}", True, True),        # unordered lists
    (r"\boxed{\pm 2}", r"\boxed{2, -2}", True, True),
    (r"\boxed{1<x<3}", r"\boxed{(1, 3)}", True, True),
    (r"\boxed{6}", r"the side is \boxed{6cm}", True, True),
    (r"\boxed{6}", r"the side is \boxed{6 m}", False, True),                 # official drops "m" only at the very end
    (r"\boxed{12}", r"Answer: 12", False, True),                              # no \boxed{}: official gives 0
    (r"\boxed{0.5}", r"\boxed{50}", True, False),                             # official: gold x100 also counts
    (r"\boxed{y=2x+1}", r"\boxed{2x+1}", True, True),
    (r"\boxed{相似}", r"两三角形\boxed{相似}", True, True),                     # Chinese answer kept whole
    (r"\boxed{2\pi}", r"\boxed{6.283}", True, True),
    (r"\boxed{12}", r"\boxed{13}", False, False),
    (r"\boxed{8}", r"\boxed{8", False, False),                                # unclosed brace
]


def _records() -> list[dict]:
    out = []
    for i, (gold, *_rest) in enumerate(CASES):
        out.append({"question": f"Problem {i}: as shown, find the value.", "file_name": f"{i}.png",
                    "solution": f"By the figure, ... {gold}", "year": ("七年级上学期", "八年级下学期", "九年级上学期")[i % 3],
                    "difficult": ("容易", "普通", "困难")[i % 3],
                    "knowledge": ("Properties of Shapes", "Transformations of Shapes; Functions")[i % 2]})
    return out


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "mmmath.json"
    path.write_text(json.dumps(_records(), ensure_ascii=False))
    return path


@pytest.mark.parametrize("i", range(len(CASES)))
def test_golden_cases(data: Path, i: int) -> None:
    bench = get_benchmark("mmmath")
    item = bench.read(data)[i]
    _, response, official, robust = CASES[i]
    for mode, expected in (("official", official), ("robust", robust)):
        found = bench.extract(item, response, mode)
        assert bench.is_correct(item, found.value, mode) is expected, (mode, found)


def test_scores_and_breakdowns(data: Path) -> None:
    bench = get_benchmark("mmmath")
    items = bench.read(data)
    responses = {item.id: CASES[i][1] for i, item in enumerate(items)}
    official = score_items(bench, items, responses, "official").scores
    robust = score_items(bench, items, responses, "robust").scores
    n = len(CASES)
    assert official["correct"] == sum(c[2] for c in CASES)
    assert official["accuracy"] == pytest.approx(official["correct"] / (n + 0.0001))  # eval.py's denominator
    assert robust["correct"] == sum(c[3] for c in CASES) and robust["accuracy"] == robust["correct"] / n
    assert set(robust["by_difficulty"]) == {"easy", "medium", "hard"}
    assert set(robust["by_grade"]) == {"seven", "eight", "nine"}
    assert robust["by_knowledge"]["shape"]["total"] == (n + 1) // 2 and robust["by_knowledge"]["func"]["total"] == n // 2
    assert official["num_unparsed"] == 2 and robust["num_unparsed"] == 1  # no \boxed{} / the unclosed brace


def test_judge_precision_and_bad_records(tmp_path: Path) -> None:
    assert LatexJudge(precision=1e-2).equal(r"\boxed{3.14}", r"\boxed{3.1416}")
    assert not LatexJudge(precision=1e-4).equal(r"\boxed{3.14}", r"\boxed{3.1416}")
    records = _records()
    records[2]["solution"] = "no boxed answer"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(records))
    with pytest.raises(FormatError, match=r"bad.json: record 2: key 'solution': expected a LaTeX solution"):
        get_benchmark("mmmath").read(path)
