"""Bad input never crashes and nothing is lost: mmclip-eval, mmclip-train, mmclip-export, mmclip-import, mmclip-ablate.

Every row is one bad input tried as a new user would, run through the real ``main``: the exit status, the
one-line message (file, record, key, what was expected), no traceback, and nothing partial or lost.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_cases import (
    Case,
    Workspace,
    absent,
    cases,
    edit_samples,
    interrupt_when,
    read_only_dir,
    run_case,
    write,
)
from mmclip_fixtures import make_dataset_dir, write_png

from mmclip_plugin.cli import ablate_main, eval_main, train_main
from mmclip_plugin.model import MMCLIP_CONFIG, OPEN_CLIP_CONFIG, WEIGHTS_FILE
from mmclip_plugin.tower.hf_export import main as export_main
from mmclip_plugin.tower.hf_import import main as import_main

FAST = ["model.force_image_size=32", "data.batch_size=2", "data.num_workers=0", "log_every=1", "progress=false",
        "plot=false", "data.image_negatives=1", "data.text_negatives=1", "device=cpu"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict[str, Path]:
    """A small data set (train and val) and an untrained tiny checkpoint, shared read-only by every case."""
    import torch

    from mmclip_plugin.config import ModelConfig
    from mmclip_plugin.model import create_model

    root = tmp_path_factory.mktemp("mmclip-errors")
    data = make_dataset_dir(root / "data", n=4, k_images=2, k_texts=2, val=3)
    torch.manual_seed(0)
    ckpt = create_model(ModelConfig(force_image_size=32)).save_pretrained(root / "ckpt")
    return {"data": data, "ckpt": ckpt}


@pytest.fixture
def ws(tmp_path, shared) -> Workspace:
    return Workspace(tmp_path, shared)


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _val_line(data: Path) -> int:
    return next(i for i, line in enumerate((data / "samples.jsonl").read_text().splitlines())
                if json.loads(line)["split"] == "val")


# ----------------------------------------------------------------------------- mmclip-eval


def _eval(ws: Workspace, data: Path, ckpt: Path | str | None = None, *extra: str) -> list[str]:
    return ["--checkpoint", str(ckpt or ws.shared["ckpt"]), "--data", str(data), "--batch-size", "4",
            "--device", "cpu", *extra]


def _zero_byte_png(ws: Workspace) -> list[str]:
    data = ws.copy("data")
    image = data / json.loads((data / "samples.jsonl").read_text().splitlines()[_val_line(data)])["image"]
    image.write_bytes(b"")
    return _eval(ws, data, None, "--out", str(ws / "eval.json"))


def _missing_image(ws: Workspace) -> list[str]:
    data = ws.copy("data")
    (data / json.loads((data / "samples.jsonl").read_text().splitlines()[_val_line(data)])["image"]).unlink()
    return _eval(ws, data, None, "--out", str(ws / "eval.json"))


def _oops_negatives(ws: Workspace) -> list[str]:
    data = ws.copy("data")
    edit_samples(data, _val_line(data), lambda r: r.update(negatives="oops"))
    return _eval(ws, data, None, "--out", str(ws / "eval.json"))


def _skipped_in_json(count: int, *words: str):
    def check(ws: Workspace) -> None:
        result = json.loads((ws / "eval.json").read_text())
        assert result["bad_records"] == count == len(result["bad_record_details"])
        assert result["counts"]["samples"] == 3 - count
        for word in words:
            assert word in result["bad_record_details"][0]
    return check


def _damaged_ckpt(ws: Workspace, damage) -> Path:
    ckpt = ws.copy("ckpt")
    damage(ckpt)
    return ckpt


def _truncate(ckpt: Path) -> None:
    data = (ckpt / WEIGHTS_FILE).read_bytes()
    (ckpt / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])


def _misspell_mmclip(ckpt: Path) -> None:
    _edit_json(ckpt / MMCLIP_CONFIG, lambda d: d["model"].update(lock_txt=d["model"].pop("lock_text")))


def _misspell_open_clip(ckpt: Path) -> None:
    _edit_json(ckpt / OPEN_CLIP_CONFIG, lambda d: d["model_cfg"]["vision_cfg"].update(
        widht=d["model_cfg"]["vision_cfg"].pop("width")))


def _other_width(ckpt: Path) -> None:
    _edit_json(ckpt / OPEN_CLIP_CONFIG, lambda d: d["model_cfg"]["vision_cfg"].update(width=96))


def _earlier_result_kept_on_failure(ws: Workspace) -> list[str]:
    ws.remember(write(ws / "eval.json", '{"earlier": "result"}\n'))
    return _eval(ws, ws.shared["data"], _damaged_ckpt(ws, _truncate), "--out", str(ws / "eval.json"))


def _out_is_a_directory(ws: Workspace) -> list[str]:
    (ws / "eval.json").mkdir()
    return _eval(ws, ws.shared["data"], None, "--out", str(ws / "eval.json"))


def _out_read_only(ws: Workspace) -> list[str]:
    return _eval(ws, ws.shared["data"], None, "--out", str(read_only_dir(ws.root) / "eval.json"))


def _plot_under_a_file(ws: Workspace) -> list[str]:
    ws.remember(write(ws / "notes.txt", "mine"))
    return _eval(ws, ws.shared["data"], None, "--plot", str(ws / "notes.txt" / "eval.png"))


EVAL_CASES = [
    Case("0-byte PNG: sample skipped and reported", _zero_byte_png, 0,
         [r"skipped 1 record", r"cannot decode the image"], _skipped_in_json(1, "cannot decode the image")),
    Case("missing image: sample skipped and reported", _missing_image, 0,
         [r"skipped 1 record", r"key 'image': file .* does not exist"], _skipped_in_json(1, "does not exist")),
    Case("negatives 'oops': record skipped and reported", _oops_negatives, 0,
         [r"skipped 1 record", r"key 'negatives': expected list, got 'oops'"], _skipped_in_json(1, "negatives")),
    Case("truncated safetensors", lambda ws: _eval(ws, ws.shared["data"], _damaged_ckpt(ws, _truncate)), 2,
         [rf"{WEIGHTS_FILE}: not a complete safetensors file"]),
    Case("misspelt key in mmclip_config.json", lambda ws: _eval(ws, ws.shared["data"], _damaged_ckpt(ws, _misspell_mmclip)),
         2, [rf"{MMCLIP_CONFIG}: key 'model.lock_txt': unknown key", "lock_text"]),
    Case("misspelt key in open_clip_config.json",
         lambda ws: _eval(ws, ws.shared["data"], _damaged_ckpt(ws, _misspell_open_clip)), 2,
         [rf"{OPEN_CLIP_CONFIG}: key 'model_cfg.vision_cfg.widht': unknown key", "width"]),
    Case("weights of another architecture", lambda ws: _eval(ws, ws.shared["data"], _damaged_ckpt(ws, _other_width)),
         2, [rf"{WEIGHTS_FILE}: does not match the architecture in .*{OPEN_CLIP_CONFIG}: size mismatch"]),
    Case("unknown open_clip model", lambda ws: _eval(ws, ws.shared["data"], "none:no-such-model"), 2,
         ["unknown open_clip model 'no-such-model'", "mmclip-tiny-vit"]),
    Case("a failed evaluation keeps the earlier --out", _earlier_result_kept_on_failure, 2, ["not a complete safetensors"],
         lambda ws: ws.unchanged(ws / "eval.json")),
    Case("--out is a directory", _out_is_a_directory, 2, [r"--out .*eval\.json: is a directory; expected a file name"]),
    Case("--out in a read-only directory", _out_read_only, 2, [r"--out .*eval\.json: cannot write in"]),
    Case("--plot under a file", _plot_under_a_file, 2, [r"--plot .*: .*notes\.txt is a file, not a directory"],
         lambda ws: ws.unchanged(ws / "notes.txt")),
    Case("split with no sample", lambda ws: _eval(ws, ws.shared["data"], None, "--split", "test"), 2,
         ["no valid samples", "split 'test'"]),
]


@cases(EVAL_CASES)
def test_mmclip_eval(case: Case, ws: Workspace, capsys) -> None:
    run_case(eval_main, "mmclip-eval", case, ws, capsys)


# ----------------------------------------------------------------------------- mmclip-train


def _train(ws: Workspace, data: Path | str, out: Path, *extra: str) -> list[str]:
    return ["tiny-cpu", f"data.train={data}", f"output_dir={out}", "steps=2", *FAST, *extra]


def _finished_run(ws: Workspace) -> Path:
    run = ws / "run"
    run.mkdir()
    ws.copy("ckpt", "run/final")
    write(run / "metrics.jsonl", "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2)))
    return ws.remember(run)


def _bad_records(ws: Workspace) -> list[str]:
    data = ws.copy("data")
    edit_samples(data, 0, lambda r: r.update(image="/etc/hostname"))
    edit_samples(data, 1, lambda r: r.update(image="../outside.png"))
    edit_samples(data, 2, lambda r: r.update(id="s3"))  # the id of line 4
    write_png(ws / "ref" / "pos.png", 1)
    conversations = [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "a square"}]
    reference = write(ws / "ref" / "ref.json", json.dumps([
        {"positive_image_path": "pos.png", "negative_captions": ["a circle"], "conversations": "oops"},
        {"positive_image_path": "pos.png", "negative_captions": ["a circle"], "conversations": conversations}]))
    return _train(ws, f"[{data}, {reference}]", ws / "run", "loss.image_negatives=null")


def _bad_records_reported(ws: Workspace) -> None:
    details = "\n".join(json.loads((ws / "run" / "train_summary.json").read_text())["bad_record_details"])
    for word in ("key 'image': expected a path relative to the data set, got '/etc/hostname'",
                 "key 'image': expected a path relative to the data set, got '../outside.png'",
                 "key 'id': duplicate id 's3'", "key 'conversations': expected a non-empty list of turns"):
        assert word in details


def _non_utf8(ws: Workspace) -> list[str]:
    data = ws.copy("data")
    text = (data / "samples.jsonl").read_bytes()
    (data / "samples.jsonl").write_bytes(text[:40] + b"\xff" + text[40:])
    return _train(ws, data, ws / "run")


def _only_val(ws: Workspace) -> list[str]:
    data = ws.copy("data")
    for i in range(7):
        edit_samples(data, i, lambda r: r.update(split="val"))
    return _train(ws, data, ws / "run")


def _duplicate_keys(ws: Workspace) -> list[str]:
    return [str(write(ws / "train.yaml", "steps: 2\nsteps: 3\n")), f"data.train={ws.shared['data']}"]


def _output_dir_is_a_file(ws: Workspace) -> list[str]:
    ws.remember(write(ws / "run", "my notes"))
    return _train(ws, ws.shared["data"], ws / "run")


def _interrupted_then_resumed(ws: Workspace, capsys) -> None:
    """Ctrl-C saves the step it was in and exits 130; a torn metrics line (a kill in a write) does not stop the
    resume, which logs every step once."""
    run = ws / "run"
    argv = _train(ws, ws.shared["data"], run, "steps=6", "save_every=0")
    with interrupt_when(lambda: (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().count("\n") >= 1):
        code = train_main(argv)
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mmclip-train: interrupted: stopped after step") and "--resume latest" in last
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    (checkpoint,) = (run / "checkpoints").iterdir()
    assert checkpoint.name == f"step_{steps[-1]:06d}" and not (run / "final").exists()
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 99, "lo')
    assert train_main([*argv, "--resume", "latest"]) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6] and (run / "final").is_dir()


TRAIN_CASES = [
    Case("a finished run is never overwritten", lambda ws: _train(ws, ws.shared["data"], _finished_run(ws)), 2,
         ["holds a finished run", "--resume latest", "--overwrite"], lambda ws: ws.unchanged(ws / "run")),
    Case("--resume latest on a new directory", lambda ws: _train(ws, ws.shared["data"], ws / "new", "--resume", "latest"),
         2, ["--resume latest: no checkpoint", "nothing to resume"], absent("new")),
    Case("--resume of a missing directory", lambda ws: _train(ws, ws.shared["data"], ws / "run", "--resume", str(ws / "nope")),
         2, ["checkpoint directory .*nope does not exist"]),
    Case("malformed override value", lambda ws: _train(ws, ws.shared["data"], ws / "run", "optim.lr=[1,"), 2,
         [r"override 'optim.lr=\[1,'", "not valid YAML"]),
    Case("NaN learning rate", lambda ws: _train(ws, ws.shared["data"], ws / "run", "optim.lr=.nan"), 2,
         ["key 'optim.lr'", "finite number"]),
    Case("duplicate YAML keys", _duplicate_keys, 2, ["train.yaml", "duplicate key 'steps'"]),
    Case("--print-config after the config and an override",
         lambda ws: ["tiny-cpu", "--print-config", "steps=7"], 0, ["steps: 7"]),
    Case("non-UTF-8 samples.jsonl", _non_utf8, 2, [r"samples\.jsonl: line 1: not UTF-8 text"]),
    Case("no sample in the train split", _only_val, 2, ["no valid training samples", "no record is in split 'train'"]),
    Case("a batch larger than the data", lambda ws: _train(ws, ws.shared["data"], ws / "run", "data.batch_size=64"), 2,
         ["key 'data.batch_size'", "no complete global batch"]),
    Case("output_dir is a file", _output_dir_is_a_file, 2, [r"output_dir .*run: is a file; expected a directory"],
         lambda ws: ws.unchanged(ws / "run")),
    Case("bad records (absolute or .. paths, duplicate id, conversations 'oops') skipped and reported",
         _bad_records, 0, ["4 bad records skipped"], _bad_records_reported),
]


@cases(TRAIN_CASES)
def test_mmclip_train(case: Case, ws: Workspace, capsys) -> None:
    run_case(train_main, "mmclip-train", case, ws, capsys)


def test_mmclip_train_ctrl_c_leaves_a_resumable_run(ws: Workspace, capsys) -> None:
    _interrupted_then_resumed(ws, capsys)


# ----------------------------------------------------------------------------- mmclip-export / mmclip-import / mmclip-ablate


def _export(ws: Workspace, ckpt: Path, out: Path, *extra: str) -> list[str]:
    return ["--checkpoint", str(ckpt), "--out", str(out), "--no-verify", *extra]


def _someone_elses_folder(ws: Workspace) -> Path:
    folder = ws / "mine"
    write(folder / "thesis.tex", "months of work")
    return ws.remember(folder)


EXPORT_CASES = [
    Case("truncated safetensors", lambda ws: _export(ws, _damaged_ckpt(ws, _truncate), ws / "hf"), 2,
         [rf"{WEIGHTS_FILE}: not a complete safetensors file"], absent("hf")),
    Case("misspelt key in open_clip_config.json", lambda ws: _export(ws, _damaged_ckpt(ws, _misspell_open_clip), ws / "hf"),
         2, ["key 'model_cfg.vision_cfg.widht': unknown key"]),
    Case("misspelt key in mmclip_config.json", lambda ws: _export(ws, _damaged_ckpt(ws, _misspell_mmclip), ws / "hf"), 2,
         ["key 'model.lock_txt': unknown key"]),
    Case("--overwrite never deletes a folder it did not write",
         lambda ws: _export(ws, ws.shared["ckpt"], _someone_elses_folder(ws), "--overwrite"), 2,
         ["holds files that are not an mmclip-export output", "never replaced"], lambda ws: ws.unchanged(ws / "mine")),
    Case("--out is a file", lambda ws: _export(ws, ws.shared["ckpt"], ws.remember(write(ws / "hf", "x"))), 2,
         [r"--out .*hf: is a file; expected a directory"], lambda ws: ws.unchanged(ws / "hf")),
    Case("checkpoint is not one", lambda ws: _export(ws, ws.shared["data"], ws / "hf"), 2,
         ["is not an MMCLIP checkpoint: missing open_clip_config.json"]),
]


@cases(EXPORT_CASES)
def test_mmclip_export(case: Case, ws: Workspace, capsys) -> None:
    run_case(export_main, "mmclip-export", case, ws, capsys)


IMPORT_CASES = [
    Case("--overwrite never deletes a folder it did not write",
         lambda ws: ["--from-hf", str(ws.shared["ckpt"]), "--out", str(_someone_elses_folder(ws)), "--overwrite"], 2,
         ["holds files that are not an MMCLIP checkpoint", "never replaced"], lambda ws: ws.unchanged(ws / "mine")),
    Case("--from-hf is missing", lambda ws: ["--from-hf", str(ws / "nope"), "--out", str(ws / "ckpt")], 2,
         ["nope"], absent("ckpt")),
    Case("--from-hf is not a transformers model", lambda ws: ["--from-hf", str(ws.shared["data"]), "--out", str(ws / "c")],
         2, ["config.json"], absent("c")),
]


@cases(IMPORT_CASES)
def test_mmclip_import(case: Case, ws: Workspace, capsys) -> None:
    run_case(import_main, "mmclip-import", case, ws, capsys)


ABLATE_CASES = [
    Case("--out is a file", lambda ws: ["ablation-cpu", "--out", str(ws.remember(write(ws / "out", "x")))], 2,
         [r"--out .*out: is a file; expected a directory"], lambda ws: ws.unchanged(ws / "out")),
    Case("unknown recipe", lambda ws: ["no-such-ablation", "--out", str(ws / "out")], 2,
         ["'no-such-ablation' is neither a file nor a shipped"]),
    Case("no recipe", lambda ws: ["--out", str(ws / "out")], 2, ["give an ablation RECIPE"]),
]


@cases(ABLATE_CASES)
def test_mmclip_ablate(case: Case, ws: Workspace, capsys) -> None:
    run_case(ablate_main, "mmclip-ablate", case, ws, capsys)
