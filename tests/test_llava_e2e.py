"""End to end through real upstream LLaVA on CPU: stage 1, stage 2 (plain and ZeRO-2), reload, generate.

Everything is built in the test (a SentencePiece Llama tokenizer, a 2-layer Llama, a random MMCLIP
tower, Pillow diagrams); training runs ``python -m llava_patches.train`` in a subprocess, exactly as a
user would. Losses must be positive, finite and falling (a tokenizer that upstream's ``v1`` masking
mishandles gives loss 0 and prints "tokenization mismatch", which is checked too).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from llava_fixtures import (
    assert_learning,
    build_diagram_dataset,
    build_mmclip_checkpoint,
    build_tiny_llama,
    run_checked,
    train_args,
)
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
_run = run_checked
ZERO2 = ROOT / "llava_patches" / "zero_configs" / "zero2.json"
ZERO3 = ROOT / "llava_patches" / "zero_configs" / "zero3.json"
QUESTION = "What shape is shown in the diagram?"


def _train(ws: dict[str, Path], output: Path, *extra: str, stage: int, launcher: list[str] | None = None) -> str:
    args = train_args(ws["llm"], ws["data"], ws["images"], ws["mmclip"], output, steps=6, learning_rate=1e-3)
    if stage == 1:
        args += ["--version", "plain", "--tune_mm_mlp_adapter", "True"]
    else:
        args += ["--version", "v1", "--pretrain_mm_mlp_adapter", str(ws["stage1"] / "mm_projector.bin")]
    cmd = (launcher or [sys.executable, "-m"]) + ["llava_patches.train", *args, *extra]
    return _run(cmd)


def _assert_learning(output_dir: Path) -> None:
    assert_learning(output_dir, steps=6)


def _generate(model_dir: Path, image: Path):
    from llava_patches.loader import load_pretrained_model
    from llava_patches.predict import answer, load_image

    tokenizer, model, processor, _ = load_pretrained_model(model_dir, device="cpu")
    text = answer(tokenizer, model, processor, load_image(image), QUESTION, conv_mode="v1", max_new_tokens=4)
    return model, text


def _visual_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = load_file(str(checkpoint / "open_clip_model.safetensors"))
    return {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llava_e2e")
    data, images = build_diagram_dataset(root / "data", n=8, seed=0)
    paths = {
        "llm": build_tiny_llama(root / "tiny-llama"),
        "data": data,
        "images": images,
        "mmclip": build_mmclip_checkpoint(root / "mmclip"),
        "root": root,
    }
    _train(paths, root / "stage1", "--use_cpu", "True", "--save_strategy", "no", stage=1)
    paths["stage1"] = root / "stage1"
    return paths


@pytest.fixture(scope="module")
def stage2(ws) -> Path:
    out = ws["root"] / "llava-stage2"
    _train(ws, out, "--use_cpu", "True", "--save_strategy", "steps", "--save_steps", "6", stage=2)
    return out


@pytest.mark.parametrize("version", ["v1", "plain"])
def test_the_test_tokenizer_gets_upstream_label_masking_right(tmp_path, version, capsys):
    """Guard of the harness itself: upstream masks everything but the answer, and prints no mismatch."""
    import copy

    import llava.train.train as upstream
    from llava import conversation
    from llava_fixtures import build_tokenizer
    from transformers import AutoTokenizer

    build_tokenizer(tmp_path / "tok")
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "tok"), use_fast=False, model_max_length=128)
    tokenizer.pad_token = tokenizer.unk_token  # what upstream train() does for v1 / plain
    data, _ = build_diagram_dataset(tmp_path / "data", n=4)
    saved = conversation.default_conversation
    conversation.default_conversation = conversation.conv_templates[version]
    try:
        for record in json.loads(data.read_text()):
            data_args = SimpleNamespace(is_multimodal=True, mm_use_im_start_end=False)
            sources = upstream.preprocess_multimodal(copy.deepcopy([record["conversations"]]), data_args)
            labels = upstream.preprocess(sources, tokenizer, has_image=True)["labels"][0]
            kept = tokenizer.decode([t for t in labels.tolist() if t != upstream.IGNORE_INDEX])
            assert kept.replace("</s>", "").strip() == record["conversations"][1]["value"]
    finally:
        conversation.default_conversation = saved
    assert "mismatch" not in capsys.readouterr().out


def test_stage1_trains_only_the_projector(ws):
    out = ws["stage1"]
    _assert_learning(out)
    weights = torch.load(out / "mm_projector.bin", map_location="cpu")
    assert weights and all("mm_projector" in k for k in weights), sorted(weights)
    config = json.loads((out / "config.json").read_text())
    assert config["mm_vision_tower"] == f"mmclip:{ws['mmclip']}"
    assert config["mm_hidden_size"] == 64


def test_the_same_command_trains_the_same_projector(ws, tmp_path):
    """--seed reaches the projector's initial weights (upstream builds it before the Trainer seeds)."""
    _train(ws, tmp_path / "again", stage=1)
    first = torch.load(ws["stage1"] / "mm_projector.bin", map_location="cpu")
    again = torch.load(tmp_path / "again" / "mm_projector.bin", map_location="cpu")
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    _train(ws, tmp_path / "other", "--seed", "1", stage=1)
    other = torch.load(tmp_path / "other" / "mm_projector.bin", map_location="cpu")
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_a_conv_tower_serves_upstream_training_and_generation(ws, tmp_path):
    """mmclip-tiny-resnet (timm test_resnet): layer3's 4 x 4 map of 192 channels becomes LLaVA's 16 image tokens."""
    from mmclip_plugin.config import ModelConfig
    from mmclip_plugin.model import create_model

    torch.manual_seed(0)
    conv = create_model(ModelConfig(name="mmclip-tiny-resnet")).save_pretrained(tmp_path / "resnet")
    paths = {**ws, "mmclip": conv}
    _train(paths, tmp_path / "stage1", "--use_cpu", "True", "--save_strategy", "no", stage=1)
    _assert_learning(tmp_path / "stage1")
    config = json.loads((tmp_path / "stage1" / "config.json").read_text())
    assert config["mm_hidden_size"] == 192 and config["mm_vision_tower"] == f"mmclip:{conv}"
    paths["stage1"] = tmp_path / "stage1"
    _train(paths, tmp_path / "stage2", "--use_cpu", "True", "--save_strategy", "no", stage=2)
    _assert_learning(tmp_path / "stage2")
    model, text = _generate(tmp_path / "stage2", ws["images"] / "0000.png")
    assert isinstance(text, str) and text.strip(), repr(text)
    assert model.get_vision_tower().num_patches == 16


def test_stage2_trains_saves_reloads_and_generates(ws, stage2):
    _assert_learning(stage2)
    for name in ("config.json", "model.safetensors", "tokenizer.model", "checkpoint-6/model.safetensors"):
        assert (stage2 / name).is_file(), name
    assert not (stage2 / "mmclip_tower").exists(), "a frozen tower must not be copied into the checkpoint"

    model, text = _generate(stage2, ws["images"] / "0000.png")
    assert isinstance(text, str) and text.strip(), repr(text)
    assert model.dtype == torch.float32
    tower = model.get_vision_tower()
    assert tower.is_loaded and tower.vision_tower_name == f"mmclip:{ws['mmclip']}"
    source = _visual_weights(ws["mmclip"])
    for key, value in tower.vision_tower.state_dict().items():
        assert torch.equal(value, source[key]), key


def test_predict_cli_prints_an_answer(ws, stage2):
    output = _run(
        [sys.executable, "-m", "llava_patches.predict", "--model-path", str(stage2), "--image",
         str(ws["images"] / "0001.png"), "--query", QUESTION, "--max-new-tokens", "4", "--device", "cpu"]
    )  # fmt: skip
    assert output.strip(), output


def test_stage2_zero2_with_unfrozen_tower_saves_and_restores_it(ws, tmp_path):
    out = ws["root"] / "llava-zero2-unfrozen"
    _train(
        ws, out, "--deepspeed", str(ZERO2), "--save_strategy", "no",
        "--unfreeze_mm_vision_tower", "True", "--mm_vision_tower_lr", "1e-3", stage=2,
    )  # fmt: skip
    _assert_learning(out)
    tower_dir = out / "mmclip_tower"
    config = json.loads((out / "config.json").read_text())
    assert config["mm_vision_tower"] == f"mmclip:{tower_dir.resolve()}"
    trained, source = _visual_weights(tower_dir), _visual_weights(ws["mmclip"])
    assert trained.keys() == source.keys()
    changed = [k for k in trained if not torch.equal(trained[k], source[k])]
    assert changed, "the unfrozen tower did not change"

    # move the checkpoint: the loader must use the tower shipped inside it, not the stale absolute path
    moved = tmp_path / "llava-moved"
    shutil.copytree(out, moved)
    shutil.rmtree(tower_dir)
    model, text = _generate(moved, ws["images"] / "0002.png")
    assert text.strip(), repr(text)
    tower = model.get_vision_tower()
    assert tower.vision_tower_name == f"mmclip:{(moved / 'mmclip_tower').resolve()}"
    for key, value in tower.vision_tower.state_dict().items():
        assert torch.equal(value, trained[key]), key


LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m"],
    "deepspeed": [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "1", "--master_port", "29731", "--module"],
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_stage2_under_a_launcher_with_zero2(ws, launcher):
    out = ws["root"] / f"llava-{launcher}"
    _train(ws, out, "--deepspeed", str(ZERO2), "--save_strategy", "no", stage=2, launcher=LAUNCHERS[launcher])
    _assert_learning(out)
    assert (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_stage2_zero3_with_unfrozen_tower(ws):
    out = ws["root"] / "llava-zero3"
    _train(ws, out, "--deepspeed", str(ZERO3), "--save_strategy", "no", "--unfreeze_mm_vision_tower", "True", stage=2)
    _assert_learning(out)
    trained, source = _visual_weights(out / "mmclip_tower"), _visual_weights(ws["mmclip"])
    assert any(not torch.equal(trained[k], source[k]) for k in trained)
    _, text = _generate(out, ws["images"] / "0003.png")
    assert text.strip()


@pytest.mark.slow
def test_train_mem_entry_point_runs_with_sdpa_on_cpu(ws):
    out = ws["root"] / "llava-train-mem"
    _run(
        [sys.executable, "-m", "llava_patches.train_mem", "--model_name_or_path", str(ws["llm"]), "--version", "v1",
         "--data_path", str(ws["data"]), "--image_folder", str(ws["images"]), "--vision_tower", f"mmclip:{ws['mmclip']}",
         "--mm_use_im_patch_token", "False", "--bf16", "False", "--output_dir", str(out), "--max_steps", "2",
         "--per_device_train_batch_size", "2", "--save_strategy", "no", "--report_to", "none", "--use_cpu", "True",
         "--dataloader_num_workers", "0", "--logging_steps", "1"]
    )  # fmt: skip
    assert (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_shipped_scripts_run_both_stages(ws):
    env = {
        "MODEL": str(ws["llm"]), "VISION_TOWER": f"mmclip:{ws['mmclip']}", "DATA": str(ws["data"]),
        "IMAGE_FOLDER": str(ws["images"]), "LAUNCHER": f"{sys.executable} -m", "ENTRY": "llava_patches.train",
        "BF16": "False", "TF32": "False", "WORKERS": "0", "ZERO": "zero2",
    }  # fmt: skip
    tiny = ["--max_steps", "2", "--per_device_train_batch_size", "2", "--model_max_length", "128"]
    stage1, stage2 = ws["root"] / "script-stage1", ws["root"] / "script-stage2"
    _run(["bash", "scripts/pretrain.sh", *tiny], extra_env={**env, "OUTPUT": str(stage1)})
    assert (stage1 / "mm_projector.bin").is_file()
    projector = str(stage1 / "mm_projector.bin")
    _run(["bash", "scripts/finetune.sh", *tiny], extra_env={**env, "OUTPUT": str(stage2), "PROJECTOR": projector})
    assert (stage2 / "model.safetensors").is_file()
