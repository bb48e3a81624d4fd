"""Bad input never crashes and nothing is lost: ``python -m llava_patches.{train,train_mem,predict,answer_questions,tiny_llm}``.

Every row is one bad input tried as a new user would, run through the real ``main`` in-process: the exit
status, the one-line message (file, record, key, what was expected), no traceback. Every case here is
refused before a model is loaded (upstream would fail only after loading the LLM, or hours into the run);
the training itself is tested in test_llava_e2e.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_cases import Case, Workspace, absent, cases, run_case, write
from llava_fixtures import build_diagram_dataset, build_mmclip_checkpoint, build_tiny_llama, train_args

from llava_patches import answer_questions, predict, tiny_llm, train, train_mem
from mmclip_plugin.model import MMCLIP_CONFIG, WEIGHTS_FILE


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llava-errors")
    data, images = build_diagram_dataset(root / "data", n=4)
    return {"llm": build_tiny_llama(root / "llm"), "data": data, "images": images,
            "mmclip": build_mmclip_checkpoint(root / "mmclip")}


@pytest.fixture
def ws(tmp_path, shared) -> Workspace:
    return Workspace(tmp_path, shared)


def _train(ws: Workspace, *replace: str, data: Path | None = None, mmclip: Path | None = None,
           output: Path | None = None) -> list[str]:
    """Upstream's arguments for one stage-1 step, with ``replace`` (flag, value, ...) replacing or adding flags."""
    argv = train_args(ws.shared["llm"], data or ws.shared["data"], ws.shared["images"], mmclip or ws.shared["mmclip"],
                      output or ws / "out", steps=1, learning_rate=1e-3) + ["--version", "plain"]
    for flag, value in zip(replace[::2], replace[1::2]):
        if flag in argv:
            if value is None:
                del argv[argv.index(flag): argv.index(flag) + 2]
            else:
                argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


def _data(ws: Workspace, edit) -> Path:
    records = json.loads(ws.shared["data"].read_text())
    edit(records)
    return write(ws / "data.json", json.dumps(records))


def _tower(ws: Workspace, damage) -> Path:
    ckpt = ws.copy("mmclip")
    damage(ckpt)
    return ckpt


def _misspell(ckpt: Path) -> None:
    config = json.loads((ckpt / MMCLIP_CONFIG).read_text())
    config["model"]["lock_txt"] = config["model"].pop("lock_text")
    (ckpt / MMCLIP_CONFIG).write_text(json.dumps(config))


def _truncate(ckpt: Path) -> None:
    data = (ckpt / WEIGHTS_FILE).read_bytes()
    (ckpt / WEIGHTS_FILE).write_bytes(data[: len(data) // 3])


TRAIN_CASES = [
    Case("unknown --version", lambda ws: _train(ws, "--version", "qwen2"), 2,
         ["--version 'qwen2' is not a conversation template", "qwen_2"]),
    Case("missing --model_name_or_path", lambda ws: _train(ws, "--model_name_or_path", str(ws / "llm")), 2,
         [r"--model_name_or_path .*llm: no such directory"]),
    Case("missing --data_path", lambda ws: _train(ws, "--data_path", str(ws / "nope.json")), 2, [r"nope\.json"]),
    Case("empty training JSON", lambda ws: _train(ws, "--data_path", str(write(ws / "d.json", "[]"))), 2,
         [r"d\.json: no records"]),
    Case("conversations 'oops'", lambda ws: _train(ws, "--data_path", str(_data(ws, lambda r: r[1].update(conversations="oops")))),
         2, [r"data\.json: record 1 \(id sample-1\): key 'conversations': expected a non-empty list of turns"]),
    Case("an image that does not exist", lambda ws: _train(ws, "--data_path", str(_data(ws, lambda r: r[2].update(image="gone.png")))),
         2, [r"record 2 \(id sample-2\): key 'image': image .*gone\.png does not exist"]),
    Case("images without --image_folder", lambda ws: _train(ws, "--image_folder", None), 2,
         ["its records have images; give --image_folder"]),
    Case("tower checkpoint with a misspelt key", lambda ws: _train(ws, "--vision_tower", f"mmclip:{_tower(ws, _misspell)}"), 2,
         [rf"{MMCLIP_CONFIG}: key 'model.lock_txt': unknown key"]),
    Case("tower checkpoint with truncated weights", lambda ws: _train(ws, "--vision_tower", f"mmclip:{_tower(ws, _truncate)}"),
         2, [rf"{WEIGHTS_FILE}: not a complete safetensors file"]),
    Case("missing projector file", lambda ws: _train(ws, "--pretrain_mm_mlp_adapter", str(ws / "mm_projector.bin")), 2,
         [r"--pretrain_mm_mlp_adapter .*mm_projector\.bin: no such file"]),
    Case("--output_dir is a file", lambda ws: _train(ws, output=ws.remember(write(ws / "out", "x"))), 2,
         [r"--output_dir .*out: is a file; expected a directory"], lambda ws: ws.unchanged(ws / "out")),
    Case("a tower learning rate for a frozen tower", lambda ws: _train(ws, "--mm_vision_tower_lr", "1e-5"), 2,
         ["--mm_vision_tower_lr 1e-05 given without --unfreeze_mm_vision_tower True"]),
]


@cases(TRAIN_CASES)
def test_train(case: Case, ws: Workspace, capsys) -> None:
    run_case(train.main, "python -m llava_patches.train", case, ws, capsys)
    assert not (ws / "out").is_dir() or not any((ws / "out").iterdir()), "a refused run wrote into --output_dir"


def test_train_mem_takes_the_same_path(ws: Workspace, capsys) -> None:
    case = Case("unknown --version", lambda ws: _train(ws, "--version", "qwen2"), 2, ["is not a conversation template"])
    run_case(train_mem.main, "python -m llava_patches.train_mem", case, ws, capsys)


def _predict(ws: Workspace, image: Path, *extra: str, model: Path | None = None) -> list[str]:
    return ["--model-path", str(model or ws.shared["llm"]), "--image", str(image), "--query", "What is shown?",
            "--device", "cpu", *extra]


PREDICT_CASES = [
    Case("missing image", lambda ws: _predict(ws, ws / "nope.png"), 2, [r"image file .*nope\.png does not exist"]),
    Case("0-byte image", lambda ws: _predict(ws, write(ws / "empty.png", b"")), 2,
         [r"empty\.png: not an image Pillow can read"]),
    Case("--max-new-tokens 0", lambda ws: _predict(ws, ws.shared["images"] / "0000.png", "--max-new-tokens", "0"), 2,
         ["--max-new-tokens must be >= 1, got 0"]),
    Case("NaN temperature", lambda ws: _predict(ws, ws.shared["images"] / "0000.png", "--temperature", "nan"), 2,
         ["--temperature must be >= 0, got nan"]),
    Case("missing model directory", lambda ws: _predict(ws, ws.shared["images"] / "0000.png", model=ws / "model"), 2,
         [r"--model-path .*model: no such directory"]),
]


@cases(PREDICT_CASES)
def test_predict(case: Case, ws: Workspace, capsys) -> None:
    run_case(predict.main, "python -m llava_patches.predict", case, ws, capsys)


def _answer(ws: Workspace, questions: Path, *, model: Path | None = None, out: Path | None = None) -> list[str]:
    return ["--model-path", str(model or ws.shared["llm"]), "--questions", str(questions), "--image-folder",
            str(ws.shared["images"]), "--out", str(out or ws / "answers"), "--device", "cpu"]


def _questions(ws: Workspace, *lines: str) -> Path:
    return write(ws / "questions.jsonl", "".join(line + "\n" for line in lines))


GOOD_QUESTION = json.dumps({"image": "0000.png", "question": "Is AB parallel to CD?", "answer": "yes"})

ANSWER_CASES = [
    Case("a line that is not JSON", lambda ws: _answer(ws, _questions(ws, GOOD_QUESTION, "{not json")), 2,
         [r"questions\.jsonl: line 2: not valid JSON"], absent("answers")),
    Case("a missing key", lambda ws: _answer(ws, _questions(ws, json.dumps({"image": "0000.png", "question": "Q?"}))), 2,
         [r"questions\.jsonl: line 1: key 'answer': expected a string"], absent("answers")),
    Case("an image that does not exist",
         lambda ws: _answer(ws, _questions(ws, GOOD_QUESTION, GOOD_QUESTION.replace("0000.png", "gone.png"))), 2,
         [r"questions\.jsonl: line 2: key 'image': image .*gone\.png does not exist"], absent("answers")),
    Case("no question", lambda ws: _answer(ws, _questions(ws)), 2, [r"questions\.jsonl: no questions"], absent("answers")),
    Case("--out is a file", lambda ws: _answer(ws, _questions(ws, GOOD_QUESTION), out=ws.remember(write(ws / "a", "x"))),
         2, [r"--out .*a: is a file; expected a directory"], lambda ws: ws.unchanged(ws / "a")),
    Case("missing model directory", lambda ws: _answer(ws, _questions(ws, GOOD_QUESTION), model=ws / "model"), 2,
         [r"--model-path .*model: no such directory"], absent("answers")),
]


@cases(ANSWER_CASES)
def test_answer_questions(case: Case, ws: Workspace, capsys) -> None:
    run_case(answer_questions.main, "python -m llava_patches.answer_questions", case, ws, capsys)


def _tiny(ws: Workspace, *corpus: Path, out: Path | None = None) -> list[str]:
    return ["--corpus", *map(str, corpus), "--out", str(out or ws / "llm"), "--vocab-size", "300"]


TINY_CASES = [
    Case("a corpus that is not JSON", lambda ws: _tiny(ws, write(ws / "c.json", "{")), 2, [r"c\.json: line 1: not valid JSON"],
         absent("llm")),
    Case("a corpus record without conversations", lambda ws: _tiny(ws, write(ws / "c.json", '[{"id": 1}]')), 2,
         [r"c\.json: record 0 \(id 1\): key 'conversations'"], absent("llm")),
    Case("a missing corpus", lambda ws: _tiny(ws, ws / "nope.json"), 2, [r"nope\.json"], absent("llm")),
    Case("--out is a file", lambda ws: _tiny(ws, ws.shared["data"], out=ws.remember(write(ws / "f", "x"))), 2,
         [r"--out .*f: is a file; expected a directory"], lambda ws: ws.unchanged(ws / "f")),
]


@cases(TINY_CASES)
def test_tiny_llm(case: Case, ws: Workspace, capsys) -> None:
    run_case(tiny_llm.main, "python -m llava_patches.tiny_llm", case, ws, capsys)
