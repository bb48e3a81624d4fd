"""We-Math golden tests: a table whose IK / IG / CM / RM counts are known by construction, and the extraction quirk."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmgeolm.bench.registry import get_benchmark
from mmgeolm.bench.score import score_items
from mmgeolm.bench.wemath import official_extract, parse_options
from mmgeolm_core.io import FormatError

OPTION = "A. 12;B. 18;C. 24;D. 36;E. No correct answer"
# problem -> per part (1, 2, [3], multi): answered right?
DESIGN = {
    "2steps_1": {"1": True, "2": True, "multi": True},     # CM strict, CM loose
    "2steps_2": {"1": True, "2": False, "multi": True},    # RM strict, CM loose
    "2steps_3": {"1": False, "2": False, "multi": True},   # RM strict, RM loose
    "2steps_4": {"1": True, "2": True, "multi": False},    # IG
    "3steps_1": {"1": False, "2": True, "3": True, "multi": False},  # IK
    "3steps_2": {"1": True, "2": True, "3": True, "multi": True},    # CM strict, CM loose
}


def _records() -> list[dict]:
    out = []
    for pid, parts in DESIGN.items():
        steps = pid[0]
        for part in parts:
            out.append({"ID": pid, "split": "testmini", "knowledge concept": "Area of Rectangles" if part != "multi"
                        else "Perimeter", "question": f"A rectangle of problem {pid} part {part}: find the area.",
                        "option": OPTION, "answer": "B", "image_path": f"{steps}steps/image/{pid}-{part}.png",
                        "key": f"{steps}steps_{part}", "question number": len(out) + 1})
    return out


@pytest.fixture
def testmini(tmp_path: Path) -> Path:
    path = tmp_path / "testmini.json"
    path.write_text(json.dumps(_records()))
    return path


def _responses(bench, items) -> dict[str, str]:
    out = {}
    for item in items:
        right = DESIGN[item.meta["problem"]][item.meta["part"]]
        out[item.id] = f"<Thought process>: <<area = 3 x 6>> <Answer>: <<{'B' if right else 'C'}>>"
    return out


@pytest.mark.parametrize("mode", ["robust", "official"])
def test_four_dimensional_counts_known_by_construction(testmini: Path, mode: str) -> None:
    bench = get_benchmark("wemath")
    items = bench.read(testmini)
    assert len(items) == 20 and items[0].id == "2steps_1/2steps_1"
    s = score_items(bench, items, _responses(bench, items), mode).scores
    dims = s["four_dimensional"]
    assert dims["counts"] == {"IK": 1, "IG": 1, "CM_strict": 2, "CM_loose": 3, "RM_strict": 2, "RM_loose": 1}
    n = 6 if mode == "robust" else 525
    assert dims["num_problems"] == n
    assert s["score_strict"] == pytest.approx((n - 0.5 * 1 - 2 - 1) / n)
    assert s["score_loose"] == pytest.approx((n - 0.5 * 1 - 1 - 1) / n)
    assert dims["rates"]["IK"] == pytest.approx(1 / n) and dims["rates"]["CM_loose"] == pytest.approx(3 / n)
    assert dims["rates"]["RM_strict"] == pytest.approx(2 / 4) and dims["rates"]["RM_loose"] == pytest.approx(1 / 4)
    assert s["S1"] == pytest.approx(10 / 14) and s["S2"] == pytest.approx(3 / 4) and s["S3"] == pytest.approx(1 / 2)
    assert s["by_key"]["3steps_multi"] == {"accuracy": 0.5, "correct": 1, "total": 2}


@pytest.mark.parametrize(("response", "official", "robust"), [
    ("<Thought process>: <<...>> <Answer>: <<B>>", "B", "B"),
    ("A triangle has three sides, so the option is C", "A", None),   # official reads the first character
    ("Answer is C", None, "C"),                                       # official: "is C" -> "i"
    ("The figure shows ... <Answer>: <<D.>>", "D", "D"),
    ("Answer: 18", None, "B"),                                       # robust reads option B's text, 18
])
def test_extraction_official_vs_robust(testmini: Path, response: str, official: str | None, robust: str | None) -> None:
    bench = get_benchmark("wemath")
    item = bench.read(testmini)[0]
    assert official_extract(response) == official
    assert bench.extract(item, response, "official").value == official
    assert bench.extract(item, response, "robust").value == robust


def test_options_and_errors(testmini: Path, tmp_path: Path) -> None:
    assert parse_options(OPTION) == ["12", "18", "24", "36", "No correct answer"]
    assert parse_options("A. ①; ③; B. ②; ③") == ["①; ③", "②; ③"]
    records = _records()
    records[3]["key"] = "2steps_9"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(records))
    with pytest.raises(FormatError, match=r"bad.json: record 3: key 'key': unknown key '2steps_9'"):
        get_benchmark("wemath").read(bad)
    records = _records() + [_records()[0]]
    bad.write_text(json.dumps(records))
    with pytest.raises(FormatError, match="duplicate ID and key '2steps_1/2steps_1'"):
        get_benchmark("wemath").read(bad)


def test_reference_output_is_matched_by_id_and_key(testmini: Path, tmp_path: Path) -> None:
    from mmgeolm.bench.predictions import read_predictions

    bench = get_benchmark("wemath")
    items = bench.read(testmini)
    preds = tmp_path / "out.jsonl"
    preds.write_text("".join(json.dumps({**r, "text": "<Answer>: <<B>>"}) + "\n" for r in _records()))
    responses = read_predictions(preds, bench, {i.id for i in items})
    assert len(responses) == 20 and responses["3steps_2/3steps_multi"] == "<Answer>: <<B>>"
