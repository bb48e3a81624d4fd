"""``mmgeolm-bench generate`` through upstream LLaVA on CPU: batched = one at a time, resumable, sharded."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_recipes.diagrams.probe import ProbeConfig, write_probe_set
from llava_patches.batch_generate import Query, encode_prompts, merge_shards, padding_side, shard_file
from mmgeolm.bench.cli import main as bench_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from llava_patches.tiny_llava import build_tiny_llava

    root = tmp_path_factory.mktemp("bench-generate")
    records = write_probe_set(str(root / "probe"), ProbeConfig(num=5, size_px=64))
    corpus = [r.question for r in records] * 4 + ["yes no 0 1 2 3 4 5 6 7 8 9"] * 4
    return {"root": root, "probe": root / "probe", "model": build_tiny_llava(root / "llava", corpus)}


def _generate(ws: dict[str, Path], out: Path, *extra: str) -> int:
    return bench_main(["generate", "probe", "--model-path", str(ws["model"]), "--questions", str(ws["probe"]),
                       "--out", str(out), "--batch-size", "4", "--max-new-tokens", "5", "--device", "cpu", "-q",
                       *extra])


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_batched_answers_equal_one_at_a_time_and_a_rerun_resumes(ws: dict[str, Path], tmp_path: Path) -> None:
    from llava_patches.loader import load_pretrained_model
    from llava_patches.predict import answer, load_image
    from mmgeolm.bench.registry import get_benchmark

    out = tmp_path / "gen"
    assert _generate(ws, out) == 0
    predictions = _lines(out / "predictions.jsonl")
    items = get_benchmark("probe").read(ws["probe"])
    assert [p["id"] for p in predictions] == [i.id for i in items]  # question order, every item once
    tokenizer, model, processor, _ = load_pretrained_model(ws["model"], device="cpu")
    for item, p in list(zip(items, predictions))[:4]:
        single = answer(tokenizer, model, processor, load_image(ws["probe"] / item.image), item.question, "v1", 5)
        assert p["response"] == single
    # resume: keep the first lines (one marked), drop the rest; only the dropped ones are generated again
    kept = [{**predictions[0], "response": "KEPT"}, *predictions[1:6]]
    (out / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in kept))
    assert _generate(ws, out) == 0
    again = _lines(out / "predictions.jsonl")
    assert again[0]["response"] == "KEPT" and again[1:] == predictions[1:]
    # nothing left to do: the model is not even loaded
    config = ws["model"] / "config.json"
    config.rename(config.with_suffix(".bak"))
    try:
        assert _generate(ws, out) == 0
    finally:
        config.with_suffix(".bak").rename(config)
    assert _generate(ws, out, "--prompt", "answer-line") == 2  # other settings: refused, not mixed
    scored = tmp_path / "scored"
    assert bench_main(["score", "probe", "--questions", str(ws["probe"]), "--predictions",
                       str(out / "predictions.jsonl"), "--out", str(scored), "-q"]) == 0
    assert json.loads((scored / "scores.json").read_text())["num_items"] == len(items)


def test_a_missing_image_is_named(ws: dict[str, Path], tmp_path: Path, capsys) -> None:
    assert _generate(ws, tmp_path / "gen", "--image-root", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "probe item probe-00000-pos" in err and "does not exist" in err


def test_prompts_are_padded_on_the_left_and_the_config_restored(ws: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(ws["model"]), use_fast=False)
    ids, mask = encode_prompts(tokenizer, ["USER: <image>\nIs AB parallel to CD? ASSISTANT:", "USER: <image>\nyes"])
    assert ids.shape == mask.shape and mask[0].all() and not mask[1, 0] and mask[1, -1]
    assert (ids[1, : int((mask[1] == 0).sum())] == tokenizer.eos_token_id).all()

    class Config:
        tokenizer_padding_side = "right"

    model = type("M", (), {"config": Config()})()
    with padding_side(model, "left"):
        assert model.config.tokenizer_padding_side == "left"
    assert model.config.tokenizer_padding_side == "right"


def test_merge_shards_restores_question_order(tmp_path: Path) -> None:
    shard_file(tmp_path, 0, 2).write_text('{"id": "c", "response": "3"}\n{"id": "a", "response": "1"}\n')
    shard_file(tmp_path, 1, 2).write_text('{"id": "b", "response": "2"}\n')
    merged = merge_shards(tmp_path, ["a", "b", "c", "d"], 2)
    assert [r["id"] for r in _lines(merged)] == ["a", "b", "c"]
    assert not shard_file(tmp_path, 0, 2).exists() and not shard_file(tmp_path, 1, 2).exists()
    assert Query("a", tmp_path, "q").prompt == "q"


@pytest.mark.slow
def test_torchrun_two_ranks_shard_and_merge(ws: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "gen"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29631",
           "-m", "mmgeolm.bench.cli", "generate", "probe", "--model-path", str(ws["model"]), "--questions",
           str(ws["probe"]), "--out", str(out), "--batch-size", "3", "--max-new-tokens", "4", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = [p["id"] for p in _lines(out / "predictions.jsonl")]
    assert len(ids) == len(set(ids)) == 10 and not list(out.glob("predictions.rank*"))


@pytest.mark.slow
def test_the_pipeline_bench_stage_runs_every_shipped_sample_and_the_report_shows_the_paper_table(
        ws: dict[str, Path], tmp_path: Path) -> None:
    """The demo recipe's bench section, run as the stage runs it, on a tiny LLaVA in place of the trained one."""
    import shutil

    from mmgeolm.bench.paper import PUBLISHED
    from mmgeolm.pipeline import bench_commands
    from mmgeolm.recipe import load_recipe
    from mmgeolm.report import build_report
    from mmgeolm.run_layout import RunLayout

    recipe = load_recipe("demo-cpu")
    recipe.bench.probe, recipe.bench.max_new_tokens = 3, 4
    run = tmp_path / "run"
    shutil.copytree(ws["model"], run / "llava_stage2" / "model")
    (run / "recipe.yaml").write_text("llava: {llm: tiny}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    for cmd in bench_commands(recipe, RunLayout(run), run / "bench"):
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (cmd, proc.stderr[-3000:])
    for name in ("geoqa", "mathvista", "wemath", "mmmath", "probe"):
        scores = json.loads((run / "bench" / name / "scores.json").read_text())
        assert scores["num_missing"] == 0 and 0.0 <= scores["accuracy"] <= 1.0, name
    text = build_report(run).read_text()
    assert "## Geometry benchmarks" in text and "near chance" in text and "Paired accuracy" in text
    assert all(name in text for name in PUBLISHED) and "**this run**" in text
