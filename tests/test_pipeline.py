"""The pipeline runner (`mmgeolm run`): stage order, DONE markers, resume, --from/--until, failures, recipes.

The stage runner is tested with trivial ``python -c`` commands; the CLI is run for real through the
data stage on the tiny data recipe. The whole demo at micro size is the slow test at the end.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from mmgeolm import cli
from mmgeolm.pipeline import STAGE_NAMES, build_stages
from mmgeolm.recipe import PipelineRecipe, check_stage_settings, load_recipe
from mmgeolm.run_layout import RunLayout
from mmgeolm.stages import DONE, LOG, Stage, StageError, is_done, missing_before, run_stages, select
from mmgeolm_core.config import ConfigError
from mmgeolm_core.resources import shipped_dir, shipped_names

SHIPPED = shipped_names("pipeline-recipe")
ABLATION_CPU = Path(__file__).resolve().parents[1] / "mmclip_plugin" / "configs" / "ablation-cpu.yaml"


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _appending(name: str, trace: Path, fail_flag: Path | None = None) -> Stage:
    """A stage that appends its name to ``trace``; fails (before appending) while ``fail_flag`` exists."""
    code = (
        "import pathlib, sys\n"
        f"flag = {str(fail_flag)!r} if {fail_flag is not None} else None\n"
        "if flag and pathlib.Path(flag).exists():\n"
        f"    print('boom: {name} cannot go on'); sys.exit(3)\n"
        f"open({str(trace)!r}, 'a').write({name!r} + '\\n')\n"
        f"print('{name} ran')\n"
    )
    return Stage(name, lambda folder: [_py(code)])


def _trace(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


# ----------------------------------------------------------------------------- the stage runner


def test_stages_run_in_order_and_write_done_and_log(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    stages = [_appending(n, trace) for n in ("a", "b", "c")]
    status = run_stages(tmp_path / "run", stages, echo=lambda _: None)
    assert _trace(trace) == ["a", "b", "c"]
    assert status == {"a": "done", "b": "done", "c": "done"}
    for name in ("a", "b", "c"):
        done = json.loads((tmp_path / "run" / name / DONE).read_text())
        assert done["stage"] == name and done["commands"][0][0] == sys.executable
        assert f"{name} ran" in (tmp_path / "run" / name / LOG).read_text()


def test_rerun_skips_finished_stages(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    stages = [_appending(n, trace) for n in ("a", "b")]
    run_stages(tmp_path / "run", stages, echo=lambda _: None)
    messages: list[str] = []
    status = run_stages(tmp_path / "run", stages, echo=messages.append)
    assert _trace(trace) == ["a", "b"]
    assert status == {"a": "skipped (done)", "b": "skipped (done)"}
    assert any("already done" in m for m in messages)


def test_failing_stage_stops_the_run_with_its_error_and_log(tmp_path: Path) -> None:
    trace, flag = tmp_path / "trace.txt", tmp_path / "fail"
    flag.touch()
    stages = [_appending("a", trace), _appending("b", trace, fail_flag=flag), _appending("c", trace)]
    with pytest.raises(StageError) as info:
        run_stages(tmp_path / "run", stages, echo=lambda _: None)
    message = str(info.value)
    assert "'b'" in message and "exit code 3" in message
    assert "boom: b cannot go on" in message
    assert str(tmp_path / "run" / "b" / LOG) in message
    assert _trace(trace) == ["a"]
    assert is_done(tmp_path / "run", stages[0]) and not is_done(tmp_path / "run", stages[1])


def test_failed_or_interrupted_stage_runs_again_then_the_rest(tmp_path: Path) -> None:
    trace, flag = tmp_path / "trace.txt", tmp_path / "fail"
    flag.touch()
    stages = [_appending("a", trace), _appending("b", trace, fail_flag=flag), _appending("c", trace)]
    with pytest.raises(StageError):
        run_stages(tmp_path / "run", stages, echo=lambda _: None)
    flag.unlink()
    status = run_stages(tmp_path / "run", stages, echo=lambda _: None)
    assert status == {"a": "skipped (done)", "b": "done", "c": "done"}
    assert _trace(trace) == ["a", "b", "c"]
    log = (tmp_path / "run" / "b" / LOG).read_text()
    assert "boom" in log and "b ran" in log  # the log keeps both attempts


def test_disabled_stage_is_off_and_not_marked_done(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    off = _appending("b", trace)
    off.enabled = False
    status = run_stages(tmp_path / "run", [_appending("a", trace), off], echo=lambda _: None)
    assert status == {"a": "done", "b": "off"}
    assert not is_done(tmp_path / "run", off)


def test_stage_sees_its_own_folder_and_env(tmp_path: Path) -> None:
    code = "import os, pathlib, sys; pathlib.Path(sys.argv[1], 'out.txt').write_text(os.environ['GREETING'])"
    stage = Stage("s", lambda folder: [[*_py(code), str(folder)]], env={"GREETING": "hello"})
    run_stages(tmp_path, [stage], echo=lambda _: None)
    assert (tmp_path / "s" / "out.txt").read_text() == "hello"


@pytest.mark.parametrize(
    ("start", "until", "expected"),
    [(None, None, ["a", "b", "c", "d"]), ("b", None, ["b", "c", "d"]), (None, "b", ["a", "b"]),
     ("b", "c", ["b", "c"]), ("c", "c", ["c"])],
)
def test_select_from_until(start: str | None, until: str | None, expected: list[str]) -> None:
    stages = [Stage(n, lambda folder: []) for n in "abcd"]
    assert [s.name for s in select(stages, start, until)] == expected


@pytest.mark.parametrize(
    ("start", "until", "needle"),
    [("x", None, "--from 'x' is not a stage"), (None, "y", "--until 'y' is not a stage"), ("c", "b", "comes after")],
)
def test_select_errors_name_the_flag_and_the_stages(start: str | None, until: str | None, needle: str) -> None:
    stages = [Stage(n, lambda folder: []) for n in "abcd"]
    with pytest.raises(ValueError, match=needle) as info:
        select(stages, start, until)
    assert "a, b, c, d" in str(info.value)


# ----------------------------------------------------------------------------- recipes


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipes_load_and_resolve_short_names(name: str) -> None:
    recipe = load_recipe(shipped_dir("pipeline-recipe") / f"{name}.yaml")
    assert Path(recipe.data.recipe).is_file() and Path(recipe.mmclip.config).is_file()
    for deepspeed in (recipe.llava.deepspeed, recipe.llava.stage1.deepspeed, recipe.llava.stage2.deepspeed):
        assert deepspeed is None or Path(deepspeed).is_file()
    stages = build_stages(recipe, Path("/tmp/never-created"))
    assert tuple(s.name for s in stages) == STAGE_NAMES


def test_demo_is_shipped() -> None:
    assert "demo-cpu" in SHIPPED


def test_eval_compares_the_trained_encoder_with_the_weights_its_training_saved() -> None:
    # issue 12: the starting model was named by re-parsing the MMCLIP YAML by hand, which dropped
    # arch_json / force_image_size; mmclip-train now saves output_dir/init and evaluation reads it
    (cmd,) = _commands("demo-cpu", "eval")
    checkpoints = cmd[cmd.index("--checkpoint") + 1: cmd.index("--data")]
    assert [Path(c).parts[-2:] for c in checkpoints] == [("mmclip", "final"), ("mmclip", "init")]


@pytest.mark.parametrize("kind, name", [("data-recipe", "full"), ("data-recipe", "demo"), ("mmclip-config", "tiny-cpu"),
                                        ("pipeline-recipe", "full-gpu"), ("zero-config", "zero2")])
def test_shipped_short_names_resolve_for_every_command(kind: str, name: str) -> None:
    # issue 12: `mmgeolm-data build full` failed although full-gpu.yaml tells users to run it
    from mmgeolm_core.resources import resolve_shipped

    assert resolve_shipped(kind, name).is_file()
    if kind == "data-recipe":
        from data_recipes.build.recipe import load_recipe as load_data_recipe

        assert load_data_recipe(name).name


def _commands(name: str, stage: str, **llava: str) -> list[list[str]]:
    run = Path("/tmp/never-created")
    recipe = load_recipe(shipped_dir("pipeline-recipe") / f"{name}.yaml")
    for key, value in llava.items():
        setattr(recipe.llava, key, value)
    (found,) = [s for s in build_stages(recipe, run) if s.name == stage]
    return [[str(part) for part in cmd] for cmd in found.commands(run / stage)]


def _flag(cmd: list[str], name: str) -> str:
    return cmd[len(cmd) - 1 - cmd[::-1].index(name) + 1]


@pytest.mark.parametrize("llava", [{}, {"llm": "tiny-qwen2", "version": "qwen_2"}], ids=["shipped", "tiny-qwen2"])
def test_the_demo_llm_and_its_template_reach_every_llava_command(llava: dict[str, str]) -> None:
    expected = {**yaml.safe_load((shipped_dir("pipeline-recipe") / "demo-cpu.yaml").read_text())["llava"], **llava}
    (_, tiny) = _commands("demo-cpu", "llava_data", **llava)
    assert tiny[2] == "llava_patches.tiny_llm" and _flag(tiny, "--model") == expected["llm"]
    (stage2,) = _commands("demo-cpu", "llava_stage2", **llava)
    assert _flag(stage2, "--version") == expected["version"] and _flag(stage2, "--use_cpu") == "True"
    assert _flag(stage2, "--model_name_or_path").endswith("llava_data/llm")
    (answers,) = _commands("demo-cpu", "answers", **llava)
    assert _flag(answers, "--conv-mode") == expected["version"]


def test_full_gpu_qwen_is_the_paper_mmgeolm_run() -> None:
    (stage1,) = _commands("full-gpu-qwen", "llava_stage1")
    (stage2,) = _commands("full-gpu-qwen", "llava_stage2")
    for cmd in (stage1, stage2):
        assert _flag(cmd, "--model_name_or_path") == "Qwen/Qwen2.5-7B-Instruct"
        assert Path(_flag(cmd, "--deepspeed")).name == "zero2.json" and _flag(cmd, "--bf16") == "True"
        assert "--unfreeze_mm_vision_tower" not in cmd and _flag(cmd, "--mm_use_im_patch_token") == "False"
    assert _flag(stage1, "--version") == "plain" and _flag(stage1, "--tune_mm_mlp_adapter") == "True"
    assert float(_flag(stage1, "--learning_rate")) == 1e-3
    assert _flag(stage2, "--version") == "qwen_2_5" and float(_flag(stage2, "--learning_rate")) == 2e-5


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("data", "needle"),
    [({"mmclip": {"confg": "tiny-cpu"}}, "key 'mmclip.confg': unknown key"),
     ({"colour": "blue"}, "key 'colour': unknown key"),
     ({"llava": {"stage1": {"max_step": 3}}}, "key 'llava.stage1.max_step': unknown key"),
     ({"data": {"recipe": "no-such-recipe"}}, "key 'data.recipe': 'no-such-recipe' is neither a file"),
     ({"data": {"workers": 0}}, "key 'data.workers': expected an integer >= 1"),
     ({"llava": "yes"}, "key 'llava': expected a mapping"),
     # issue 12: the weakest validation guarded the top entry point
     ({"eval": {"enabled": "false"}}, "key 'eval.enabled': expected true or false, got 'false'"),
     ({"llava": {"max_length": "long"}}, "key 'llava.max_length': expected an integer, got 'long'"),
     ({"questions": {"max_new_tokens": -5}}, "key 'questions.max_new_tokens': expected an integer >= 1, got -5"),
     # issue 19: NaN, and settings of later stages checked before the first stage runs
     ({"llava": {"stage1": {"learning_rate": float("nan")}}}, "key 'llava.stage1.learning_rate': expected a finite number"),
     ({"data": {"num": 0}}, "key 'data.num': expected an integer >= 1"),
     ({"mmclip": {"overrides": ["optim.lr=-1"]}}, "key 'optim.lr': expected a number > 0, got -1")],
)
def test_invalid_recipe_exits_2_naming_key_and_file(tmp_path: Path, data: dict, needle: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "bad.yaml", data)
    with pytest.raises(ConfigError, match=None):
        check_stage_settings(load_recipe(path))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert needle in err and str(path) in err
    assert not (tmp_path / "run").exists()


def test_bad_stage_name_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "demo-cpu", "--out", str(tmp_path / "run"), "--until", "training"]) == 2
    err = capsys.readouterr().err
    assert "--until 'training' is not a stage" in err and "llava_stage1" in err


def test_from_needs_the_earlier_stages_done(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert cli.main(["run", "demo-cpu", "--out", str(run), "--from", "eval"]) == 2
    err = capsys.readouterr().err
    assert "earlier stage(s) data, ablation have not finished" in err and "start from data" in err
    assert not (run / "eval").exists()


def test_missing_recipe_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "no-such-pipeline", "--out", str(tmp_path / "run")]) == 2
    assert "no-such-pipeline" in capsys.readouterr().err


def test_default_recipe_is_valid() -> None:
    assert PipelineRecipe().data.recipe == "demo"


# ----------------------------------------------------------------------------- the real CLI, data stage


def _tiny_pipeline(tmp_path: Path, **data: object) -> Path:
    return _write(tmp_path / "pipe.yaml", {"name": "t", "seed": 1,
                                            "data": {"recipe": "tiny", "num": 5, "workers": 1, **data}})


def test_run_builds_data_stage_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe, run = _tiny_pipeline(tmp_path), tmp_path / "run"
    assert cli.main(["run", str(recipe), "--out", str(run), "--until", "data"]) == 0
    samples = (RunLayout(run).dataset / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 5
    assert json.loads((run / "data" / DONE).read_text())["stage"] == "data"
    assert "--num 5" in (run / "data" / LOG).read_text()
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert saved["data"]["num"] == 5 and Path(saved["data"]["recipe"]).name == "tiny.yaml"
    capsys.readouterr()
    assert cli.main(["run", str(recipe), "--out", str(run), "--until", "data"]) == 0
    assert "data: already done" in capsys.readouterr().out
    assert not (run / "mmclip").exists()
    stages = build_stages(load_recipe(recipe), run)
    assert missing_before(run, stages, "mmclip") == []
    assert missing_before(run, stages, "eval") == ["mmclip"]


def test_failing_data_stage_exits_1_with_its_error_and_log(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    recipe, run = _tiny_pipeline(tmp_path), tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "data" / "dataset").write_text("a file where the data set's folder goes")
    assert cli.main(["run", str(recipe), "--out", str(run)]) == 1
    err = capsys.readouterr().err
    assert "stage 'data' failed" in err and str(run / "data" / "dataset") in err
    assert str(run / "data" / LOG) in err
    assert not (run / "data" / DONE).exists() and not (run / "mmclip").exists()


def test_bad_data_recipe_fails_before_any_stage_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = _write(tmp_path / "broken-data.yaml", {"name": "broken", "num": 3, "families": ["no_such_family"]})
    recipe, run = _tiny_pipeline(tmp_path, recipe=str(broken)), tmp_path / "run"
    assert cli.main(["run", str(recipe), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert str(recipe) in err and str(broken) in err and "no_such_family" in err and "key 'families'" in err
    assert not run.exists()


# ----------------------------------------------------------------------------- the whole demo, micro size


@pytest.mark.slow
def test_whole_demo_at_micro_size(tmp_path: Path) -> None:
    demo = yaml.safe_load((shipped_dir("pipeline-recipe") / "demo-cpu.yaml").read_text())
    data = yaml.safe_load((shipped_dir("pipeline-recipe") / "data" / "demo-cpu.yaml").read_text())
    demo["data"].update(recipe=str(_write(tmp_path / "data.yaml", data)), num=40, workers=1)
    demo["llava"]["stage1"] = {"max_steps": 2, "learning_rate": 1e-3, "batch_size": 2}
    demo["llava"]["stage2"] = {"max_steps": 2, "learning_rate": 1e-3, "batch_size": 2}
    demo["questions"] = {"num": 4, "max_new_tokens": 3}
    for key in ("geoqa", "mathvista", "wemath", "mmmath"):  # the shipped samples, from the recipe copied here
        demo["bench"][key] = str((shipped_dir("pipeline-recipe") / demo["bench"][key]).resolve())
    demo["bench"]["probe"] = 2
    demo["e2e"].update(probe=4, bootstrap=100)
    ablation = yaml.safe_load(ABLATION_CPU.read_text())
    ablation.update(base=str(ABLATION_CPU.parent / ablation["base"]))
    ablation["train"].update(steps=2, log_every=1)
    ablation["train"]["data"]["batch_size"] = 4
    ablation["pretrain"].update(steps=2, train={"data": {"batch_size": 4}})
    ablation["pretrain"]["data_recipe"].update(num=20)
    demo["ablation"].update(recipe=str(_write(tmp_path / "micro-ablation.yaml", ablation)))
    recipe, run = _write(tmp_path / "micro.yaml", demo), tmp_path / "run"
    assert cli.main(["run", str(recipe), "--out", str(run)]) == 0
    for stage in build_stages(load_recipe(recipe), run):
        assert is_done(run, stage) == stage.enabled, stage.name
    score = json.loads((run / "answers" / "score.json").read_text())
    assert score["all"]["n"] == len((run / "llava_data" / "questions.jsonl").read_text().splitlines())
    report = (run / "report" / "report.md").read_text()
    assert "Held-out geometry questions" in report and (run / "report" / "report.html").is_file()
    assert set(json.loads((run / "ablation" / "ablation.json").read_text())) == set(demo["ablation"]["arms"])
    assert "## Ablation: which negatives help" in report and "The paper's headline in miniature" in report
    summary = json.loads((run / "report" / "summary.json").read_text())
    e2e = json.loads((run / "e2e" / "e2e.json").read_text())
    assert summary["e2e"]["hard_negatives"] == e2e["rows"]["hard_negatives"]["paired"]["mean"]
    assert summary["e2e"]["seeds"] == 2 and summary["tower"]["chance"] > 0
    for name in ("geoqa", "mathvista", "wemath", "mmmath", "probe"):
        assert (run / "bench" / name / "scores.json").is_file(), name
