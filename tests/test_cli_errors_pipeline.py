"""Bad input never crashes and nothing is lost: ``mmgeolm run`` and ``python -m mmgeolm.report``.

Every row is one bad input tried as a new user would, run through the real ``main``: the exit status, the
one-line message (file, key, what was expected), no traceback, and nothing partial or lost.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cli_cases import Case, Workspace, absent, cases, interrupt_when, read_only_dir, run_case, write

from mmgeolm import cli
from mmgeolm.report import main as report_main
from mmgeolm.stages import DONE, LOG


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path)


def _recipe(ws: Workspace, **sections: object) -> Path:
    data = {"name": "t", "seed": 1, "data": {"recipe": "tiny", "num": 3, "workers": 1}, **sections}
    return write(ws / "pipe.yaml", yaml.safe_dump(data))


def _run(ws: Workspace, recipe: Path | str, *extra: str, out: Path | None = None) -> list[str]:
    return ["run", str(recipe), "--out", str(out or ws / "run"), *extra]


def _finished_data_stage(ws: Workspace) -> list[str]:
    assert cli.main(_run(ws, _recipe(ws), "--until", "data")) == 0
    ws.remember(ws / "run" / "data")
    return _run(ws, _recipe(ws, data={"recipe": "tiny", "num": 4, "workers": 1}), "--until", "data")


PIPELINE_CASES = [
    Case("empty recipe", lambda ws: _run(ws, write(ws / "pipe.yaml", "")), 2, [r"pipe\.yaml", "empty"], absent("run")),
    Case("duplicate YAML keys", lambda ws: _run(ws, write(ws / "pipe.yaml", "name: a\nname: b\n")), 2,
         [r"pipe\.yaml", "duplicate key 'name'"], absent("run")),
    Case("data.num of the data stage checked before any stage",
         lambda ws: _run(ws, _recipe(ws, data={"recipe": "tiny", "num": 0})), 2, ["key 'data.num'"], absent("run")),
    Case("malformed mmclip.overrides checked before any stage",
         lambda ws: _run(ws, _recipe(ws, mmclip={"overrides": ["optim.lr=[1,"]})), 2,
         [r"override 'optim.lr=\[1,'", "not valid YAML"], absent("run")),
    Case("NaN learning rate of a later stage", lambda ws: _run(ws, _recipe(ws, mmclip={"overrides": ["optim.lr=.nan"]})),
         2, ["key 'optim.lr'"], absent("run")),
    Case("--out is a file", lambda ws: _run(ws, _recipe(ws), out=ws.remember(write(ws / "run", "x"))), 2,
         [r"--out .*run: is a file; expected a directory"], lambda ws: ws.unchanged(ws / "run")),
    Case("--out in a read-only directory", lambda ws: _run(ws, _recipe(ws), out=read_only_dir(ws.root) / "run"), 2,
         ["cannot write in"]),
    Case("a finished stage whose settings changed is not silently reused", _finished_data_stage, 2,
         ["finished stage", r"data \(--num 3 -> --num 4\)", "Delete those stage folders"],
         lambda ws: ws.unchanged(ws / "run" / "data")),
]


@cases(PIPELINE_CASES)
def test_mmgeolm_run(case: Case, ws: Workspace, capsys) -> None:
    run_case(cli.main, "mmgeolm", case, ws, capsys)


def test_mmgeolm_run_ctrl_c_stops_the_stage_cleanly_and_resumes(ws: Workspace, capsys) -> None:
    """Ctrl-C is handed on to the running stage's command, which stops cleanly; the re-run resumes its work."""
    recipe = _recipe(ws, data={"recipe": "tiny", "num": 40, "workers": 1})
    parts = ws / "run" / "data" / "dataset" / ".parts"
    with interrupt_when(lambda: parts.is_dir() and len(list(parts.glob("*.json"))) >= 3):
        code = cli.main(_run(ws, recipe, "--until", "data"))
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("mmgeolm: interrupted: stage 'data' stopped")
    log = (ws / "run" / "data" / LOG).read_text()
    assert "mmgeolm-data build: interrupted:" in log and "[mmgeolm] interrupted (Ctrl-C)" in log
    assert not (ws / "run" / "data" / DONE).exists()
    kept = len(list(parts.glob("*.json"))) - 1
    assert kept >= 2
    assert cli.main(_run(ws, recipe, "--until", "data")) == 0
    info = json.loads((ws / "run" / "data" / "dataset" / "build_info.json").read_text())
    assert info["resumed_from"] == kept and (ws / "run" / "data" / DONE).is_file()


# ----------------------------------------------------------------------------- the report


def _a_run(ws: Workspace) -> Path:
    run = ws / "run"
    write(run / "recipe.yaml", "name: t\n")
    write(run / "data" / LOG, "")
    return run


def _broken_eval(ws: Workspace) -> list[str]:
    run = _a_run(ws)
    write(run / "eval" / "eval.json", '{"t2i_hard_acc": 0.5,\n "i2t')
    return [str(run)]


def _torn_metrics(ws: Workspace) -> list[str]:
    run = _a_run(ws)
    lines = [json.dumps({"step": s, "epoch": 0, "loss": 1.0 / s, "in_batch": 1.0 / s, "lr": 1e-3, "t2i_hard_acc": 0.5})
             for s in (1, 2)]
    write(run / "mmclip" / "metrics.jsonl", "\n".join(lines) + '\n{"step": 3, "lo')
    return [str(run)]


def _broken_recipe(ws: Workspace) -> list[str]:
    run = _a_run(ws)
    write(run / "recipe.yaml", "a: [1,\n")
    return [str(run)]


REPORT_CASES = [
    Case("no such run directory", lambda ws: [str(ws / "nope")], 2, [r"nope: no such run directory"], absent("nope")),
    Case("the run directory is a file", lambda ws: [str(ws.remember(write(ws / "run", "x")))], 2,
         ["is a file; expected the run directory"], lambda ws: ws.unchanged(ws / "run")),
    Case("a folder that is not a run", lambda ws: [str(ws.remember(write(ws / "home" / "thesis.tex", "x").parent))], 2,
         ["not a pipeline run directory"], lambda ws: ws.unchanged(ws / "home")),
    Case("a broken stage JSON is named with its line", _broken_eval, 2, [r"eval\.json: line 2: not valid JSON"]),
    Case("a torn metrics line is skipped with a warning", _torn_metrics, 0,
         [r"skipped: .*metrics\.jsonl: line 3: not valid JSON", "report written"]),
    Case("a broken recipe.yaml", _broken_recipe, 2, [r"recipe\.yaml", "not valid YAML"]),
]


@cases(REPORT_CASES)
def test_report(case: Case, ws: Workspace, capsys) -> None:
    run_case(report_main, "python -m mmgeolm.report", case, ws, capsys)
