"""The e2e stage (mmgeolm.e2e) and report/summary.json: commands, scoring of paired runs, the contract's keys.

Everything is read from files the stages write (probe.jsonl, results.jsonl, ablation.json, e2e.json), made
up here with known answers.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mmgeolm import e2e
from mmgeolm.recipe import load_recipe
from mmgeolm.report import build_report
from mmgeolm.report_e2e import write_summary
from mmgeolm.run_layout import RunLayout
from mmgeolm_core.config import ConfigError
from mmgeolm_core.resources import shipped_dir

ROWS = {"original": "no_finetune", "in_batch": "in_batch", "hard_negatives": "all_hard_batches"}


def _png(path: Path, value: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path)
    return path.name


def _jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _dataset(root: Path, train_values: list[int]) -> Path:
    """A data set whose train split holds pictures of the given grey values (one positive each)."""
    records = []
    for i, value in enumerate(train_values):
        image = f"images/{i:06d}.png"
        _png(root / image, value)
        records.append({"id": f"d-{i}", "index": i, "family": "square", "seed": None, "facts": [], "image": image,
                        "script": None, "caption": f"caption {i}", "split": "train", "negatives": [],
                        "text_negatives": []})
    _jsonl(root / "samples.jsonl", records)
    return root


def _probe(folder: Path, n: int) -> list[str]:
    """``n`` pairs; pair i's pictures have grey values 2i + 1 (positive) and 2i + 2 (negative)."""
    records = []
    for i in range(n):
        pair = f"probe-{i:05d}"
        relation = "parallel" if i % 2 else "on_circle"
        for member, answer, value in (("positive", "yes", 2 * i + 1), ("negative", "no", 2 * i + 2)):
            image = f"images/{pair}_{member[:3]}.png"
            _png(folder / image, value)
            records.append({"id": f"{pair}-{member[:3]}", "pair": pair, "member": member, "image": image,
                            "question": "Is AB parallel to CD? Answer yes or no.", "answer": answer, "kind": "yes_no",
                            "relation": relation, "fact": "parallel(AB,CD)", "perturbation": "parallel_break",
                            "needs_letters": False, "family": "trapezoid", "detail": ""})
    _jsonl(folder / "probe.jsonl", records)
    return [f"probe-{i:05d}" for i in range(n)]


def _results(folder: Path, right: dict[str, tuple[bool, bool]]) -> None:
    """``results.jsonl`` as ``mmgeolm-bench score`` writes it: pair -> (positive right, negative right)."""
    records = []
    for pair, (pos, neg) in right.items():
        records.append({"id": f"{pair}-pos", "extracted": "yes" if pos else "no", "answer": "yes", "correct": pos})
        records.append({"id": f"{pair}-neg", "extracted": "no" if neg else "yes", "answer": "no", "correct": neg})
    _jsonl(folder / "results.jsonl", records)


@pytest.fixture()
def e2e_run(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """10 probe pairs (pair 9's positive picture is also in train), three rows x two seeds of results."""
    data = _dataset(tmp_path / "data", [200, 19])  # 19 = pair 9's positive
    folder = tmp_path / "e2e"
    pairs = _probe(folder / "probe", 10)
    # rows right on (seed 0, seed 1) pairs out of the 9 kept; in_batch always answers "yes" (blind-like)
    plan = {"original": (2, 1), "in_batch": (0, 0), "hard_negatives": (5, 4)}
    for row, counts in plan.items():
        for seed, k in zip((0, 1), counts):
            right = {p: (True, i < k) for i, p in enumerate(pairs)}
            right[pairs[9]] = (True, True)  # left out: must not count
            _results(folder / row / f"seed_{seed}" / "probe", right)
    return folder, data, pairs


def test_summarize_counts_pairs_leaves_out_seen_pictures_and_bounds_the_intervals(e2e_run) -> None:
    folder, data, _ = e2e_run
    result = e2e.summarize(folder, data, ROWS, [0, 1], bootstrap=500)
    assert result["pairs"] == 9 and result["left_out_pairs_seen_in_train"] == 1
    assert result["blind_guess"] == 0.0 and result["metric"] == "paired yes/no accuracy"
    hard = result["rows"]["hard_negatives"]["paired"]
    assert hard["per_seed"] == {"0": pytest.approx(5 / 9), "1": pytest.approx(4 / 9)}
    assert hard["mean"] == pytest.approx(0.5) and hard["ci95"][0] <= 0.5 <= hard["ci95"][1]
    assert result["rows"]["in_batch"]["paired"]["mean"] == 0.0 == result["rows"]["in_batch"]["paired"]["ci95"][1]
    assert result["rows"]["in_batch"]["same_answer_rate"] == {"0": 1.0, "1": 1.0}
    assert result["rows"]["original"]["member"]["mean"] == pytest.approx((9 + 2 + 9 + 1) / 36)
    diff = result["differences"]["hard_negatives - in_batch"]
    assert diff["mean"] == pytest.approx(0.5) and diff["ci95"][0] > 0 and diff["share_of_draws_above_0"] == 1.0
    by_relation = result["rows"]["hard_negatives"]["by_relation"]
    assert {k: v["n_pairs"] for k, v in by_relation.items()} == {"on_circle": 5, "parallel": 4}
    assert result["by_relation_pairs"] == {"on_circle": 5, "parallel": 4}
    again = e2e.summarize(folder, data, ROWS, [0, 1], bootstrap=500)
    assert again == result  # seeded bootstrap: same files, same intervals


def test_blind_guess_is_the_share_of_pairs_whose_answers_agree() -> None:
    pairs = {"a": {"positive": {"answer": "yes"}, "negative": {"answer": "no"}},
             "b": {"positive": {"answer": "8"}, "negative": {"answer": "8 "}}}
    assert e2e.blind_guess(pairs) == 0.5


def test_summarize_needs_every_run(e2e_run) -> None:
    folder, data, _ = e2e_run
    with pytest.raises(FileNotFoundError):
        e2e.summarize(folder, data, ROWS, [0, 1, 2], bootstrap=200)


def test_main_writes_e2e_json(e2e_run, capsys: pytest.CaptureFixture[str]) -> None:
    folder, data, _ = e2e_run
    rows = [f"{k}={v}" for k, v in ROWS.items()]
    assert e2e.main(["summarize", "--e2e", str(folder), "--data", str(data), "--row", *rows, "--seeds", "0", "1",
                     "--bootstrap", "200"]) == 0
    written = json.loads((folder / "e2e.json").read_text())
    assert written["rows"]["hard_negatives"]["paired"]["mean"] == pytest.approx(0.5)
    assert "hard_negatives" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the stage's commands
def _demo(tmp_path: Path, **changes: dict) -> Path:
    demo = yaml.safe_load((shipped_dir("pipeline-recipe") / "demo-cpu.yaml").read_text())
    demo["data"]["recipe"] = str(shipped_dir("pipeline-recipe") / "data" / "demo-cpu.yaml")
    demo["ablation"]["recipe"] = "ablation-cpu"
    for key in ("geoqa", "mathvista", "wemath", "mmmath"):
        demo["bench"][key] = None
    for section, values in changes.items():
        demo[section].update(values)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(demo))
    return path


def test_commands_train_each_row_and_seed_with_its_tower_and_reuse_the_main_chain(tmp_path: Path) -> None:
    recipe = load_recipe(_demo(tmp_path))
    run = RunLayout(tmp_path / "run")
    (run.ablation / "pretrain" / "train" / "final").mkdir(parents=True)
    (run.llava_model(2)).mkdir(parents=True)
    (run.llava_model(2) / "trainer_state.json").write_text("{}")
    cmds = e2e.e2e_commands(recipe, run)
    assert cmds[0][1] == "probe-set" and "--letter-free" in cmds[0] and cmds[0][cmds[0].index("--num") + 1] == "150"
    assert cmds[0][cmds[0].index("--seed") + 1] == "1"  # the demo reports on probe seed 1
    assert cmds[1][2:4] == ["mmgeolm.e2e", "run-plan"] and cmds[1][-2:] == ["--jobs", "3"]
    assert cmds[2][2:4] == ["mmgeolm.e2e", "summarize"]
    chains = json.loads((run.e2e / e2e.PLAN_FILE).read_text())
    assert [c["name"] for c in chains] == [f"{row}/seed_{s}" for row in ROWS for s in (0, 1)]
    trains = [c for chain in chains for c in chain["commands"] if "--vision_tower" in c]
    towers = {(c[c.index("--vision_tower") + 1], c[c.index("--seed") + 1], c[c.index("--version") + 1]) for c in trains}
    start = f"mmclip:{run.ablation / 'pretrain' / 'train' / 'final'}"
    assert (start, "0", "plain") in towers and (start, "1", recipe.llava.version) in towers
    assert (f"mmclip:{run.ablation_encoder('in_batch', 1)}", "1", "plain") in towers
    hard0 = f"mmclip:{run.ablation_encoder('all_hard_batches', 0)}"
    assert not any(t[0] == hard0 for t in towers)  # the main chain trained it already
    assert len(trains) == 2 * 5  # stages 1 and 2 of the five other runs
    reused = chains[4]["commands"]  # hard_negatives, seed 0: answer with the main chain's model
    assert len(reused) == 2 and reused[0][reused[0].index("--model-path") + 1] == str(run.llava_model(2))
    stage2 = next(c for c in trains if c[c.index("--version") + 1] != "plain" and "seed_1" in c[c.index("--output_dir") + 1])
    projector = stage2[stage2.index("--pretrain_mm_mlp_adapter") + 1]
    assert projector.startswith(str(Path(stage2[stage2.index("--output_dir") + 1]).parent))  # its own stage 1
    # a finished run is not run again
    for row in ROWS:
        for seed in (0, 1):
            _jsonl(run.e2e_run(row, seed) / "probe" / "results.jsonl", [])
    run.e2e_probe.mkdir(parents=True, exist_ok=True)
    (run.e2e_probe / "probe.jsonl").write_text("")
    assert [c[3] for c in e2e.e2e_commands(recipe, run)] == ["summarize"]


def test_run_plan_runs_every_chain_in_order_and_reports_failures(tmp_path: Path) -> None:
    import sys

    from mmgeolm_core.errors import JobError

    def echo(text: str) -> list[str]:
        return [sys.executable, "-c", f"import os; print({text!r}, os.environ['OMP_NUM_THREADS'])"]

    chains = [{"name": f"c{i}", "log": str(tmp_path / f"c{i}.log"), "commands": [echo(f"{i}a"), echo(f"{i}b")]}
              for i in range(3)]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(chains))
    assert e2e.main(["run-plan", str(plan), "--jobs", "2"]) == 0
    for i in range(3):
        lines = [line for line in (tmp_path / f"c{i}.log").read_text().splitlines() if line and line[0] != "$"]
        assert lines == [f"{i}a 1", f"{i}b 1"]
    chains[1]["commands"] = [[sys.executable, "-c", "raise SystemExit(3)"], echo("never")]
    plan.write_text(json.dumps(chains))
    with pytest.raises(JobError, match="1 of 3 end-to-end runs failed:\nc1: exit code 3"):
        e2e.run_plan(plan, jobs=2)
    assert "never" not in (tmp_path / "c1.log").read_text()


@pytest.mark.parametrize(("changes", "needle"), [
    ({"ablation": {"enabled": False}}, "key 'ablation.enabled'"),
    ({"e2e": {"seeds": [0, 5]}}, "key 'e2e.seeds': seeds [5] are not among the ablation's seeds"),
    ({"e2e": {"in_batch": "rule"}}, "key 'e2e.in_batch': arm 'rule' is not among the ablation's arms"),
    ({"llava": {"tower": "mmclip"}}, "key 'llava.tower': llava.tower is 'mmclip' but the mmclip stage is off"),
    ({"llava": {"tower": "ablation:"}}, "key 'llava.tower'"),
])
def test_bad_e2e_settings_fail_before_any_stage(tmp_path: Path, changes: dict, needle: str) -> None:
    from mmgeolm.recipe import check_stage_settings

    with pytest.raises(ConfigError) as err:
        check_stage_settings(load_recipe(_demo(tmp_path, **changes)))
    assert needle in str(err.value)


# ----------------------------------------------------------------------------- summary.json
def _arm(t2i: float, paired: float) -> dict:
    hits = {"t2i_hard": [1] * round(10 * t2i) + [0] * (10 - round(10 * t2i)), "t2i_paired": [1, 0, 0, 1]}
    return {"t2i_hard_acc": t2i, "t2i_paired_acc": paired, "split": "val",
            "chance": {"t2i_hard_acc": 0.3, "t2i_paired_acc": 0.25},
            "per_seed": {"0": {"hits": hits}, "1": {"hits": hits}}}


def test_encoder_interval_bootstraps_the_samples_of_every_seed() -> None:
    from mmgeolm.report_e2e import encoder_interval

    lo, hi = encoder_interval(_arm(0.6, 0.5), "t2i_hard")
    assert 0.2 < lo < 0.6 < hi <= 1.0
    assert encoder_interval({"per_seed": {"0": {}}}, "t2i_hard") is None  # an evaluation without hits


def test_summary_has_the_contract_keys_with_the_run_numbers(e2e_run, tmp_path: Path) -> None:
    folder, data, _ = e2e_run
    run = RunLayout(folder.parent)
    run.recipe.write_text(yaml.safe_dump({"llava": {"tower": "ablation:all_hard_batches"}}))
    run.ablation.mkdir(parents=True)
    (run.ablation / "ablation.json").write_text(json.dumps(
        {"no_finetune": _arm(0.5, 0.2), "in_batch": _arm(0.55, 0.22), "all_hard_batches": _arm(0.62, 0.4)}))
    assert e2e.main(["summarize", "--e2e", str(folder), "--data", str(data), "--row", *[f"{k}={v}" for k, v in ROWS.items()],
                     "--seeds", "0", "1", "--bootstrap", "200"]) == 0
    build_report(run.root)
    summary = json.loads(run.summary.read_text())
    assert set(summary) == {"tower", "e2e"}
    assert summary["tower"] == {"val_t2i_hard": 0.62, "chance": 0.3}
    assert set(summary["e2e"]) == {"original", "in_batch", "hard_negatives", "blind_guess", "metric", "seeds"}
    assert summary["e2e"]["metric"] == "paired yes/no accuracy" and summary["e2e"]["seeds"] == 2
    assert summary["e2e"]["hard_negatives"] == pytest.approx(0.5) and summary["e2e"]["in_batch"] == 0.0
    assert summary["e2e"]["original"] == pytest.approx(3 / 18)
    assert all(0 <= summary["e2e"][k] <= 1 for k in ("original", "in_batch", "hard_negatives", "blind_guess"))
    report = (run.report / "report.md").read_text()
    assert "The paper's headline in miniature" in report and "| 69.2 | **50.0 [" in report
    assert "| 62.0 [" in report and "on val (chance 30.0%)" in report and "[95% interval" in report
    assert "`hard_negatives - in_batch`: +50.0 points" in report


def test_no_summary_without_its_files(tmp_path: Path) -> None:
    assert write_summary(tmp_path) is None and not RunLayout(tmp_path).summary.exists()


def test_summarize_command_line_errors_name_the_argument_and_the_file(tmp_path: Path, capsys) -> None:
    from mmgeolm.e2e import main

    with pytest.raises(SystemExit) as exit_info:
        main(["summarize", "--e2e", str(tmp_path), "--data", str(tmp_path), "--row", "original", "--seeds", "0"])
    assert exit_info.value.code == 2 and "expected ROW=ARM" in capsys.readouterr().err
    assert main(["summarize", "--e2e", str(tmp_path), "--data", str(tmp_path), "--row", "original=no_finetune",
                 "--seeds", "0"]) == 2
    assert f"{tmp_path / 'probe' / 'probe.jsonl'}: No such file" in capsys.readouterr().err
