"""Bad input never crashes and nothing is lost: ``mmgeolm-bench`` (score, generate, list).

Every row is one bad input tried as a new user would, run through the real ``main``: the exit status, the
one-line message (file, line, key, what was expected), no traceback, and nothing partial or lost. The
generate cases fail before a model is loaded; generation itself is tested in test_bench_generate.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_cases import Case, Workspace, absent, cases, read_only_dir, run_case, write
from mmclip_fixtures import write_png

from mmgeolm.bench.cli import main


def _geoqa(ws: Workspace, n: int = 3) -> Path:
    questions, answers = ws / "geoqa" / "test_questions.jsonl", ws / "geoqa" / "test_answers.jsonl"
    write(questions, "".join(json.dumps({"question_id": i, "image": f"test/{i}.png",
                                         "text": "Question: x?\nChoices:\nA:1\nB:2\nC:3\nD:4"}) + "\n" for i in range(n)))
    write(answers, "".join(json.dumps({"question_id": i, "text": "A"}) + "\n" for i in range(n)))
    for i in range(n):
        write_png(ws / "geoqa" / "test" / f"{i}.png", i)
    return questions


def _predictions(ws: Workspace, text: str) -> Path:
    return write(ws / "pred.jsonl", text)


def _score(ws: Workspace, predictions: Path, *extra: str, questions: Path | None = None) -> list[str]:
    return ["score", "geoqa", "--questions", str(questions or _geoqa(ws)), "--predictions", str(predictions),
            "--out", str(ws / "out"), *extra]


def _good(n: int = 3) -> str:
    return "".join(json.dumps({"id": str(i), "response": "Answer: A"}) + "\n" for i in range(n))


def _earlier_scores_kept(ws: Workspace) -> list[str]:
    assert main(_score(ws, _predictions(ws, _good()))) == 0
    ws.remember(ws / "out")
    return _score(ws, _predictions(ws, '{"id": "0", "response": "A"}\n{"id": "0", "response": "B"}\n'))


def _non_utf8_questions(ws: Workspace) -> list[str]:
    questions = _geoqa(ws)
    questions.write_bytes(b"\xff" + questions.read_bytes())
    return _score(ws, _predictions(ws, _good()), questions=questions)


SCORE_CASES = [
    Case("empty predictions file", lambda ws: _score(ws, _predictions(ws, "")), 2, [r"pred\.jsonl: no predictions"],
         absent("out")),
    Case("a line that is not JSON", lambda ws: _score(ws, _predictions(ws, '{"id": "0", "response": "A"}\n{bad\n')), 2,
         [r"pred\.jsonl: line 2: not valid JSON"], absent("out")),
    Case("a prediction for an unknown id", lambda ws: _score(ws, _predictions(ws, '{"id": "9", "response": "A"}\n')), 2,
         [r"pred\.jsonl: line 1: key 'id': prediction for unknown id '9'"], absent("out")),
    Case("a response that is not a string", lambda ws: _score(ws, _predictions(ws, '{"id": "0", "response": 5}\n')), 2,
         [r"line 1: key 'response': expected a string"], absent("out")),
    Case("a duplicate id keeps the earlier scores", _earlier_scores_kept, 2,
         [r"line 2: key 'id': second prediction for id '0'"], lambda ws: ws.unchanged(ws / "out")),
    Case("non-UTF-8 questions", _non_utf8_questions, 2, [r"test_questions\.jsonl: line 1: not UTF-8 text"], absent("out")),
    Case("unknown benchmark", lambda ws: ["score", "nope", "--questions", "q", "--predictions", "p", "--out", "o"], 2,
         ["unknown benchmark 'nope'", "geoqa"]),
    Case("judge URL without a model", lambda ws: _score(ws, _predictions(ws, _good()), "--judge-url", "http://x"), 2,
         ["--judge-url and --judge-model go together"], absent("out")),
    Case("--out is a file", lambda ws: _score(ws, _predictions(ws, _good()))[:-1] + [str(ws.remember(write(ws / "f", "x")))],
         2, [r"f: is a file"], lambda ws: ws.unchanged(ws / "f")),
]


@cases(SCORE_CASES)
def test_score(case: Case, ws: Workspace, capsys) -> None:
    run_case(main, "mmgeolm-bench score", case, ws, capsys)


def _generate(ws: Workspace, *extra: str, model: str | None = None, out: Path | None = None) -> list[str]:
    return ["generate", "geoqa", "--model-path", model or str(ws.root), "--questions", str(_geoqa(ws)),
            "--out", str(out or ws / "out"), *extra]


GENERATE_CASES = [
    Case("missing model directory", lambda ws: _generate(ws, model=str(ws / "nope")), 2,
         [r"--model-path .*nope: no such directory"], absent("out")),
    Case("missing image", lambda ws: _generate(ws, "--image-root", str(ws.dir("elsewhere"))), 2,
         [r"geoqa item 0 \(line 1\): image .* does not exist", "--image-root"], absent("out")),
    Case("--out is a file", lambda ws: _generate(ws, out=ws.remember(write(ws / "f", "x"))), 2,
         [r"--out .*f: is a file; expected a directory"], lambda ws: ws.unchanged(ws / "f")),
    Case("--out in a read-only directory", lambda ws: _generate(ws, out=read_only_dir(ws.root) / "o"), 2,
         ["cannot write in"]),
    Case("--batch-size 0", lambda ws: _generate(ws, "--batch-size", "0"), 2, ["--batch-size and --max-new-tokens must be"],
         absent("out")),
]


@cases(GENERATE_CASES)
def test_generate(case: Case, ws: Workspace, capsys) -> None:
    run_case(main, "mmgeolm-bench generate", case, ws, capsys)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path)


def test_unknown_subcommand_exits_2(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["nope"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
