"""The run report (mmgeolm.report): built from the files each stage writes, numbers taken from them."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from mmgeolm.report import build_report, main, majority_baseline, pick_answers, training_history
from mmgeolm.report_html import markdown_to_html


def _png(path: Path, colour: str = "white") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path)


def _json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _eval_result(t2i: float, i2t: float) -> dict:
    return {"t2i_hard_acc": t2i, "i2t_hard_acc": i2t, "retrieval": {"t2i_r1": 0.25, "i2t_r1": 0.125},
            "chance": {"t2i_hard_acc": 0.2, "i2t_hard_acc": 1 / 6, "r1": 0.05}, "counts": {"samples": 20},
            "per_type": {}, "per_kind": {}}


def fake_run(root: Path, llava: bool = True) -> Path:
    """A run directory with the files each stage writes (contents made up, formats real)."""
    data = root / "data" / "dataset"
    _json(data / "manifest.json", {"counts": {"accepted": 37, "negatives": 131, "by_split": {"train": 33, "val": 4},
                                              "by_family": {"square": 20, "kite": 17},
                                              "by_perturbation": {"label_swap": 100, "number_change": 31}},
                                   "text_negatives": {"counts": {"rule": 55, "retrieval": 66}}})
    _png(data / "contact_sheet.png")
    for i in range(6):
        _png(data / "images" / f"{i:06d}.png", "gray")
    _json(root / "data" / "DONE.json", {"stage": "data", "seconds": 41.0, "cpu_seconds": 70.0})
    metrics = [{"step": s, "loss": 6.0 - s / 10, "in_batch": 3.0, "image_negatives": 1.0, "text_negatives": 2.0,
                "t2i_hard_acc": 0.2 + s / 100, "i2t_hard_acc": 0.1} for s in (10, 20, 30)]
    (root / "mmclip").mkdir(parents=True)
    (root / "mmclip" / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    _json(root / "mmclip" / "DONE.json", {"stage": "mmclip", "seconds": 200.0, "cpu_seconds": 390.0})
    _json(root / "eval" / "eval.json", {"final": _eval_result(0.4375, 0.3125), "none:tiny": _eval_result(0.1875, 0.25)})
    _png(root / "eval" / "eval.png")
    if not llava:
        return root
    for stage, losses in (("llava_stage1", [7.0, 6.0, 5.5]), ("llava_stage2", [5.0, 4.0, 3.0, 2.5])):
        log = [{"step": i + 1, "loss": v} for i, v in enumerate(losses)] + [{"step": len(losses), "train_runtime": 1.0}]
        _json(root / stage / "model" / "trainer_state.json", {"log_history": log})
    answers = [
        {"image": "images/000000.png", "question": "Is AB parallel to CD? Answer yes or no.", "answer": "yes",
         "prediction": "yes", "correct": True, "kind": "yes_no"},
        {"image": "images/000001.png", "question": "Is AB parallel to CD? Answer yes or no.", "answer": "no",
         "prediction": "yes", "correct": False, "kind": "yes_no"},
        {"image": "images/000002.png", "question": "What is the length of AB? Answer with a number.", "answer": "8",
         "prediction": "6", "correct": False, "kind": "value"},
    ]
    (root / "answers").mkdir(parents=True)
    (root / "answers" / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
    _json(root / "answers" / "score.json", {"all": {"accuracy": 1 / 3, "n": 3}, "yes_no": {"accuracy": 0.5, "n": 2},
                                            "value": {"accuracy": 0.0, "n": 1}})
    return root


def _images(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


def test_report_has_every_section_with_the_run_numbers(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run")
    text = build_report(run).read_text()
    for heading in ("## Data", "## MMCLIP training", "## MMCLIP evaluation", "## LLaVA training",
                    "## Held-out geometry questions", "## Stage times"):
        assert heading in text
    assert "| 37 | 131 | 33 / 4 | 2 | 2 |" in text  # from the manifest
    assert "43.8%" in text and "18.8%" in text and "20.0%" in text  # trained, starting weights, chance
    assert "Held-out questions, exact match: 33.3%" in text
    assert "| value | 1 | 0.0% |" in text
    assert "a blind guess" in text and "scores 66.7%" in text  # yes_no: 1 of 2, value: 1 of 1
    assert "| mmclip | 200 s | 390 s |" in text and "| total | 241 s |" in text
    assert "## Ablation" not in text


def test_report_images_exist_relative_to_the_report(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run")
    path = build_report(run)
    sources = _images(path.read_text())
    assert {"mmclip_training.png", "llava_loss.png", "answers.png"} <= set(sources)
    assert len(sources) == 5
    for src in sources:
        with Image.open(path.parent / src) as image:
            assert image.size[0] > 30
    html = (path.parent / "report.html").read_text()
    assert re.findall(r'<img alt="[^"]*" src="([^"]+)"', html) == sources
    separators = [line for line in path.read_text().splitlines() if line.startswith("|---")]
    assert html.count("<table>") == len(separators) >= 4


def test_partial_run_gets_a_partial_report(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run", llava=False)
    text = build_report(run).read_text()
    assert "## MMCLIP evaluation" in text
    assert "## LLaVA training" not in text and "## Held-out geometry questions" not in text
    assert not (run / "report" / "answers.png").exists()


def test_ablation_table_is_included(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run", llava=False)
    (run / "ablation").mkdir()
    (run / "ablation" / "ablation.md").write_text("# Ablation: cpu\n\n| arm | acc |\n| --- | ---: |\n| image | 31.0% |\n")
    (run / "ablation" / "ablation.json").write_text(json.dumps({"in_batch": {"t2i_hard_acc": 0.25},
                                                                "image": {"t2i_hard_acc": 0.31}}))
    _png(run / "ablation" / "ablation.png")
    text = build_report(run).read_text()
    assert "## Ablation" in text and "| image | 31.0% |" in text and "../ablation/ablation.png" in text
    assert "\n### Ablation: cpu\n" in text and "\n# Ablation" not in text  # nested under the report's section
    assert "image hard negatives +6.0 points" in text.split("## Data")[0]  # in the headline


def test_empty_run_still_writes_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 0
    assert (tmp_path / "report" / "report.md").read_text().startswith("# MMGeoLM run report")
    assert "report written" in capsys.readouterr().out


def test_pick_answers_mixes_right_and_wrong() -> None:
    answers = [{"correct": i % 4 == 0, "i": i} for i in range(20)]
    picked = pick_answers(answers, 8)
    assert len(picked) == 8
    assert sum(a["correct"] for a in picked) == 4
    assert [a["i"] for a in picked] == sorted(a["i"] for a in picked)
    assert len(pick_answers(answers[:3], 8)) == 3


def test_markdown_to_html_escapes_and_renders() -> None:
    page = markdown_to_html("# T <x>\n\n- **bold** item\n\n| a | b |\n|---|---|\n| 1 | <2> |\n\n![p](x.png)\n", "t")
    assert "<h1>T &lt;x&gt;</h1>" in page and "<li><strong>bold</strong> item</li>" in page
    assert "<td>&lt;2&gt;</td>" in page and '<img alt="p" src="x.png">' in page
    assert "---" not in page


def test_training_history_keeps_the_last_line_of_each_step() -> None:
    first = [{"step": s, "loss": 9.0} for s in (10, 20, 30)]
    again = [{"step": s, "loss": 1.0} for s in (10, 20, 30, 40)]
    history = training_history([*first, *again, {"step": 50, "note": "no loss"}])
    assert [h["step"] for h in history] == [10, 20, 30, 40]
    assert all(h["loss"] == 1.0 for h in history)


def test_majority_baseline_per_kind() -> None:
    answers = [{"kind": "yes_no", "answer": a} for a in ("yes", "no", "no", "no")]
    answers += [{"kind": "value", "answer": a} for a in ("8", "8", "5", "3")]
    assert majority_baseline(answers) == (3 + 2) / 8
    assert majority_baseline([]) is None
