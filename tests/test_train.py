"""The MMCLIP trainer end to end on CPU: the real `mmclip-train` entry point, exact resume, checkpoints, DDP."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmclip_fixtures import make_dataset_dir, make_reference_json
from safetensors.torch import load_file

from mmclip_plugin import checkpoint as ckpt
from mmclip_plugin.cli import train_main
from mmclip_plugin.config import config_to_dict, load_config
from mmclip_plugin.model import WEIGHTS_FILE, is_checkpoint_dir, load_checkpoint
from mmclip_plugin.train import train
from mmgeolm_core.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "mmclip_plugin" / "configs" / "tiny-cpu.yaml"
FAST = ["model.force_image_size=32", "data.batch_size=4", "data.num_workers=0", "log_every=1", "progress=false",
        "optim.lr=1e-3", "data.image_negatives=2", "data.text_negatives=2", "data.sample=random"]


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_cli_trains_overfits_and_writes_outputs(tmp_path, capsys):
    data = make_dataset_dir(tmp_path / "data", n=8, k_images=3, k_texts=3)
    (data / "images" / "5.png").write_bytes(b"corrupt")  # a positive that only fails when decoded
    out = tmp_path / "run"
    rc = train_main([str(TINY), f"data.train={data}", f"output_dir={out}", "steps=18", "save_every=8", "keep_last=2",
                     *FAST])
    assert rc == 0
    history = _history(out)
    assert [h["step"] for h in history] == list(range(1, 19))
    losses = [h["loss"] for h in history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-6:]) / 6 < 0.7 * sum(losses[:3]) / 3  # it learns the tiny set
    for key in ("lr", "in_batch", "image_negatives", "text_negatives", "i2t_hard_acc", "t2i_hard_acc", "images_per_s"):
        assert key in history[-1]
    assert history[0]["lr"] > history[-1]["lr"]  # cosine decay
    # checkpoints every 10 steps plus the end, only the last two kept, no temp directory left
    assert [p.name for _, p in ckpt.list_checkpoints(out)] == ["step_000016", "step_000018"]
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    saved = load_config(out / "checkpoints" / "step_000018" / ckpt.TRAIN_CONFIG)
    assert saved.steps == 18 and saved.data.train == str(data)
    model = load_checkpoint(out / "final")  # what the LLaVA tower loads as mmclip:<dir>
    assert model.image_size == 32 and model.logit_bias is not None  # sigmoid term: learnable bias
    assert (out / "loss_curve.png").stat().st_size > 1000
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["bad_at_load"] == 1 and "5.png" in summary["bad_record_details"][0]
    assert history[-1]["bad_records"] == 1
    assert "1 bad records skipped" in capsys.readouterr().err


def test_resume_continues_exactly(tmp_path):
    data = make_dataset_dir(tmp_path / "data", n=6, k_images=2, k_texts=2)
    args = [f"data.train={data}", "steps=6", "save_every=0", *FAST]  # 6 items / batch 4: epochs end mid-run
    straight = load_config(TINY, [*args, f"output_dir={tmp_path / 'a'}"])
    split = load_config(TINY, [*args, f"output_dir={tmp_path / 'b'}"])
    train(straight)
    first = train(split, stop_at_step=3)
    assert first.steps == 3 and not (tmp_path / "b" / "final").exists()
    resumed = train(split, resume="latest")
    assert resumed.steps == 6
    a, b = _history(tmp_path / "a"), _history(tmp_path / "b")
    assert [h["step"] for h in b] == list(range(1, 7))
    for key in ("loss", "in_batch", "image_negatives", "text_negatives", "lr", "epoch"):
        assert torch.allclose(torch.tensor([h[key] for h in a], dtype=torch.float64),
                              torch.tensor([h[key] for h in b], dtype=torch.float64), rtol=1e-6, atol=1e-7), key
    wa, wb = load_file(str(tmp_path / "a" / "final" / WEIGHTS_FILE)), load_file(str(tmp_path / "b" / "final" / WEIGHTS_FILE))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.allclose(wa[name], wb[name], rtol=1e-5, atol=1e-6), name
    # issue 19: a fresh run into a finished run's directory refuses, and loses nothing
    before = (tmp_path / "a" / "final" / WEIGHTS_FILE).read_bytes()
    with pytest.raises(InputError, match="finished run.*--resume latest.*--overwrite"):
        train(straight)
    assert (tmp_path / "a" / "final" / WEIGHTS_FILE).read_bytes() == before
    assert [h["step"] for h in _history(tmp_path / "a")] == list(range(1, 7))
    train(straight, overwrite=True)  # moves the old run aside (never deletes it) and starts a new metrics file
    (aside,) = tmp_path.glob("a.replaced-*")
    assert (aside / "final" / WEIGHTS_FILE).read_bytes() == before and len(_history(aside)) == 6
    assert [h["step"] for h in _history(tmp_path / "a")] == list(range(1, 7))
    assert is_checkpoint_dir(tmp_path / "a" / "init")  # the starting weights, what evaluation compares against
    changed = load_config(TINY, [*args, f"output_dir={tmp_path / 'b'}", "data.batch_size=2", "steps=9"])
    with pytest.raises(ValueError, match="batch_size"):  # another geometry would not reproduce the data order
        train(changed, resume="latest")


def test_resume_errors_name_what_is_missing(tmp_path):
    with pytest.raises(InputError, match="no checkpoint"):
        ckpt.resolve_resume("latest", tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ckpt.resolve_resume(str(tmp_path / "nope"), tmp_path)


@pytest.mark.parametrize(
    "extra",
    [["data.hard_batches=true", "loss.in_batch=sigmoid", "loss.image_negatives=softmax"],
     ["precision=bf16", "optim.grad_accum_steps=2", "loss.image_negatives=null", "loss.text_negatives=null",
      "data.image_negatives=0", "data.text_negatives=0"]],
    ids=["hard_batches-sigmoid", "bf16-accum-in_batch_only"],
)
def test_variants_train_on_reference_json(tmp_path, extra):
    image_json, text_json = make_reference_json(tmp_path / "ref", n=6)
    data = make_dataset_dir(tmp_path / "data", n=4)
    cfg = load_config(TINY, [f"data.train=[{data}, {image_json}, {text_json}]", f"output_dir={tmp_path / 'o'}",
                             "steps=2", "plot=false", *FAST, *extra])
    result = train(cfg)
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    model = load_checkpoint(result.final_dir)
    assert (model.logit_bias is not None) == cfg.loss.uses_logit_bias
    assert config_to_dict(load_config(result.final_dir / ckpt.TRAIN_CONFIG)) == config_to_dict(cfg)


@pytest.mark.distributed
def test_torchrun_two_processes_gloo(tmp_path):
    data = make_dataset_dir(tmp_path / "data", n=8, k_images=2, k_texts=2)
    (data / "images" / "3.png").write_bytes(b"corrupt")  # one rank's batch shrinks: both must cut to equal size
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mmclip_plugin.cli", str(TINY), f"data.train={data}", f"output_dir={out}", "steps=2", "plot=false", *FAST]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for _, p in ckpt.list_checkpoints(out)] == ["step_000002"]
    history = _history(out)
    assert [h["step"] for h in history] == [1, 2]  # rank 0 alone writes metrics
    assert history[0]["images_per_s"] > 0
    assert history[-1]["bad_records"] == 1  # merged over ranks, reported once
    assert json.loads((out / "train_summary.json").read_text())["bad_at_load"] == 1
    load_checkpoint(out / "final")


def test_trains_on_the_data_set_builder_output(tmp_path):
    from data_recipes.cli import main as data_main

    data = tmp_path / "built"
    assert data_main(["build", str(ROOT / "data_recipes" / "recipes" / "tiny.yaml"), "--out", str(data)]) == 0
    from mmclip_plugin.data import read_samples

    from_dir, bad = read_samples(data)
    assert from_dir and not bad
    from_json, bad = read_samples([data / "image_negatives.json", data / "text_negatives.json"])
    assert not bad
    by_image = {s.image: s for s in from_json}
    for sample in from_dir:  # the builder's reference-format export reads back as the same samples
        twin = by_image[sample.image]
        assert twin.caption == sample.caption
        assert [n.image for n in twin.image_negatives] == [n.image for n in sample.image_negatives]
    cfg = load_config(TINY, [f"data.train={data}", f"output_dir={tmp_path / 'o'}", "steps=2", "plot=false",
                             "data.hard_batches=true", *FAST])
    result = train(cfg)
    assert result.steps == 2 and not result.bad_records
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_tensorboard_without_the_package_names_it(tmp_path):
    data = make_dataset_dir(tmp_path / "data", n=4, k_images=1, k_texts=1)
    cfg = load_config(TINY, [f"data.train={data}", f"output_dir={tmp_path / 'o'}", "steps=1", "tensorboard=true", *FAST])
    with pytest.raises(ImportError, match="pip install tensorboard"):
        train(cfg)
