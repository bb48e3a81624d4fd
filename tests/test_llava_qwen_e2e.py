"""Qwen2 end to end through real upstream LLaVA on CPU: stage 1, stage 2 (qwen_2 plain, qwen_2_5 under
ZeRO-2 with tied embeddings), reload with ``llava_patches.loader``, answers.

Training runs ``python -m llava_patches.train`` in a subprocess, as a user would, on a tiny random Qwen2
(random q/k/v biases, byte-level BPE without BOS or unk) built in the test. Stage 2 trains on 1-, 2- and
3-turn conversations. Losses must be positive, finite and falling, and no "tokenization mismatch" printed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from llava_fixtures import (
    assert_learning,
    build_diagram_dataset,
    build_mmclip_checkpoint,
    build_tiny_qwen2,
    run_checked,
    train_args,
)
from safetensors.torch import load_file

from llava_patches.qwen2 import LlavaQwen2ForCausalLM

ROOT = Path(__file__).resolve().parents[1]
ZERO2 = ROOT / "llava_patches" / "zero_configs" / "zero2.json"
ZERO3 = ROOT / "llava_patches" / "zero_configs" / "zero3.json"
QUESTION = "What shape is shown in the diagram?"
STAGE2_STEPS = 10


def _train(ws: dict[str, Path], llm: str, output: Path, *extra: str, stage: int, version: str = "qwen_2",
           entry: str = "llava_patches.train") -> list[float]:
    if stage == 1:
        args = train_args(ws[llm], ws["captions"], ws["images"], ws["mmclip"], output, steps=6, learning_rate=1e-3)
        args += ["--version", "plain", "--tune_mm_mlp_adapter", "True"]
    else:
        args = train_args(ws[llm], ws["chats"], ws["images"], ws["mmclip"], output, steps=STAGE2_STEPS,
                          learning_rate=3e-3)  # fmt: skip
        args += ["--version", version, "--pretrain_mm_mlp_adapter", str(ws["stage1"] / "mm_projector.bin")]
    run_checked([sys.executable, "-m", entry, *args, *extra])
    return assert_learning(output, steps=6 if stage == 1 else STAGE2_STEPS)


def _load(model_dir: Path, model_base: Path | None = None):
    from llava_patches.loader import load_pretrained_model

    return load_pretrained_model(model_dir, str(model_base) if model_base else None, device="cpu")


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llava_qwen_e2e")
    captions, images = build_diagram_dataset(root / "data", n=8, seed=0)  # plain (stage 1) takes one round
    chats, _ = build_diagram_dataset(root / "chats", n=8, seed=0, turns=(1, 2, 3))
    paths = {
        "qwen": build_tiny_qwen2(root / "tiny-qwen2"),
        "qwen_tied": build_tiny_qwen2(root / "tiny-qwen2-tied", tie_word_embeddings=True),
        "captions": captions,
        "chats": chats,
        "images": images,
        "mmclip": build_mmclip_checkpoint(root / "mmclip"),
        "root": root,
    }
    paths["stage1_losses"] = _train(paths, "qwen", root / "stage1", "--use_cpu", "True", "--save_strategy", "no", stage=1)
    paths["stage1"] = root / "stage1"
    return paths


@pytest.fixture(scope="module")
def stage2(ws) -> Path:
    out = ws["root"] / "llava-qwen-stage2"
    _train(ws, "qwen", out, "--use_cpu", "True", "--save_strategy", "no", stage=2, version="qwen_2")
    return out


def test_stage1_trains_the_projector_of_a_qwen_llava(ws):
    assert all(x > 0 for x in ws["stage1_losses"])
    weights = torch.load(ws["stage1"] / "mm_projector.bin", map_location="cpu")
    assert weights and all("mm_projector" in k for k in weights), sorted(weights)
    config = json.loads((ws["stage1"] / "config.json").read_text())
    assert config["model_type"] == "llava_qwen"  # what the model_base reload dispatches on


def test_stage2_qwen_2_trains_saves_reloads_as_qwen_and_answers(ws, stage2):
    from llava_patches.predict import answer, answer_batch, load_image

    config = json.loads((stage2 / "config.json").read_text())
    assert config["model_type"] == "llava_qwen" and config["mm_vision_tower"] == f"mmclip:{ws['mmclip']}"
    assert json.loads((stage2 / "tokenizer_config.json").read_text())["pad_token"] == "<|endoftext|>"
    saved = load_file(str(stage2 / "model.safetensors"))
    tokenizer, model, processor, _ = _load(stage2)
    assert type(model) is LlavaQwen2ForCausalLM and model.dtype == torch.float32
    for layer in range(2):  # the trained q/k/v biases come back
        for proj in ("q_proj", "k_proj", "v_proj"):
            key = f"model.layers.{layer}.self_attn.{proj}.bias"
            assert torch.equal(model.state_dict()[key], saved[key]), key
    images = [load_image(ws["images"] / f"000{i}.png") for i in range(3)]
    queries = [QUESTION, "Which letter is written in the corner?", "Is it a polygon?"]
    answers = [answer(tokenizer, model, processor, im, q, max_new_tokens=6) for im, q in zip(images, queries)]
    # a tiny model may answer nothing (greedy <|im_end|> first); what it says carries no special token
    assert all(isinstance(a, str) and "<|" not in a for a in answers), answers
    assert answer_batch(tokenizer, model, processor, images, queries, max_new_tokens=6) == answers
    torch.manual_seed(0)  # sampled (seeded), the answers do hold text: decoding it must leave no special token
    sampled = [answer(tokenizer, model, processor, im, q, max_new_tokens=6, temperature=1.0)
               for im, q in zip(images, queries)]
    assert any(sampled) and all("<|" not in a for a in sampled), sampled


def test_predict_and_answer_questions_default_to_the_qwen_template(ws, stage2, tmp_path, capsys):
    from llava_patches import answer_questions, predict

    predict.main(["--model-path", str(stage2), "--image", str(ws["images"] / "0001.png"), "--query", QUESTION,
                  "--max-new-tokens", "6", "--device", "cpu"])  # fmt: skip
    printed = capsys.readouterr().out.strip()  # the answer line; a tiny model may answer nothing
    questions = tmp_path / "questions.jsonl"
    records = [{"image": f"000{i}.png", "question": QUESTION, "answer": "x", "kind": "shape"} for i in range(1, 4)]
    questions.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert answer_questions.main(["--model-path", str(stage2), "--questions", str(questions), "--image-folder",
                                  str(ws["images"]), "--out", str(tmp_path / "out"), "--max-new-tokens", "6",
                                  "--batch-size", "2", "--device", "cpu"]) == 0  # fmt: skip
    predictions = [json.loads(line)["prediction"] for line in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    assert predictions[0] == printed, (printed, predictions)
    tokenizer, model, processor, _ = _load(stage2)
    assert predict.default_conv_mode(model) == "qwen_2"
    image = predict.load_image(ws["images"] / "0001.png")
    assert printed == predict.answer(tokenizer, model, processor, image, QUESTION, "qwen_2", max_new_tokens=6)


def test_stage2_qwen_2_5_under_zero2_keeps_tied_embeddings(ws):
    out = ws["root"] / "llava-qwen-zero2-tied"
    _train(ws, "qwen_tied", out, "--deepspeed", str(ZERO2), "--save_strategy", "no", stage=2, version="qwen_2_5")
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and config["model_type"] == "llava_qwen"
    saved = load_file(str(out / "model.safetensors"))
    if "lm_head.weight" in saved:  # DeepSpeed's gathered state dict may hold both copies: they must be equal
        assert torch.equal(saved["lm_head.weight"], saved["model.embed_tokens.weight"])
    _, model, _, _ = _load(out)
    assert type(model) is LlavaQwen2ForCausalLM
    assert model.lm_head.weight is model.get_input_embeddings().weight
    assert torch.equal(model.get_input_embeddings().weight, saved["model.embed_tokens.weight"])


def test_a_stage1_checkpoint_reloads_on_its_base_qwen(ws):
    _, model, _, _ = _load(ws["stage1"], model_base=ws["qwen"])
    assert type(model) is LlavaQwen2ForCausalLM
    projector = torch.load(ws["stage1"] / "mm_projector.bin", map_location="cpu")
    state = model.state_dict()
    for key, value in projector.items():  # upstream casts the projector to fp16 on the way in
        torch.testing.assert_close(state[key], value.to(torch.float16).to(state[key].dtype))


@pytest.mark.slow
def test_stage2_lora_reloads_merged_on_its_base_qwen(ws):
    out = ws["root"] / "llava-qwen-lora"
    _train(ws, "qwen", out, "--use_cpu", "True", "--save_strategy", "no", "--lora_enable", "True",
           "--lora_r", "8", "--lora_alpha", "16", stage=2)  # fmt: skip
    assert (out / "adapter_model.safetensors").is_file() and (out / "non_lora_trainables.bin").is_file()
    lora_dir = ws["root"] / "llava-qwen-lora-ckpt"  # upstream's loader takes LoRA by "lora" in the name
    out.rename(lora_dir)
    from llava_patches.predict import answer, load_image

    tokenizer, model, processor, _ = _load(lora_dir, model_base=ws["qwen"])
    assert type(model) is LlavaQwen2ForCausalLM
    assert isinstance(answer(tokenizer, model, processor, load_image(ws["images"] / "0000.png"), QUESTION,
                             max_new_tokens=4), str)  # fmt: skip


@pytest.mark.slow
def test_stage2_qwen_under_zero3_and_train_mem(ws):
    out = ws["root"] / "llava-qwen-zero3"
    _train(ws, "qwen", out, "--deepspeed", str(ZERO3), "--save_strategy", "no", stage=2,
           entry="llava_patches.train_mem")  # fmt: skip
    _, model, _, _ = _load(out)
    assert type(model) is LlavaQwen2ForCausalLM
