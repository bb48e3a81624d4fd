"""Tiny, download-free building blocks for the LLaVA end-to-end tests.

- :func:`build_tiny_llama`, :func:`build_tiny_qwen2`: 2-layer, width-64 random LLMs saved with tokenizers
  trained on the fly on the tests' texts, built by :mod:`llava_patches.tiny_llm` (the demo's own code);
- :func:`build_tokenizer`: the tiny Llama's slow ``LlamaTokenizer`` alone;
- :func:`build_diagram_dataset`: Pillow line drawings with LLaVA-format conversations;
- :func:`build_mmclip_checkpoint`: a random ``mmclip-tiny-vit`` MMCLIP checkpoint directory;
- :func:`train_args`, :func:`run_checked`, :func:`assert_learning`: run ``python -m llava_patches.train``
  as a user would (offline, CPU) and check that the loss is positive, finite and falling.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from llava_patches import tiny_llm

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ("triangle", "square", "segment", "angle")
LETTERS = "ABCDEFGH"

QUESTIONS = ("What shape is shown in the diagram?", "Describe the diagram.", "Which figure is drawn?")


def _caption(shape: str, letters: str) -> str:
    if shape == "triangle":
        return f"The diagram shows triangle {letters[:3]}."
    if shape == "square":
        return f"The diagram shows square {letters[:4]}."
    if shape == "segment":
        return f"The diagram shows segment {letters[:2]}."
    return f"The diagram shows angle {letters[:3]}."


def corpus() -> list[str]:
    """Every string the tests tokenize (the tiny LLMs add their templates' scaffolding themselves)."""
    lines = list(QUESTIONS)
    for shape in SHAPES:
        for i in range(len(LETTERS) - 3):
            lines.append(_caption(shape, LETTERS[i : i + 4]))
            lines += [t for pair in follow_ups(shape, LETTERS[i : i + 4]) for t in pair]
    lines += [f"{a} {b} {a}{b} {b}{a}" for a in LETTERS for b in LETTERS]
    return lines


def build_tokenizer(directory: Path, vocab_size: int = 512):
    """The tiny Llama's slow ``LlamaTokenizer`` (:func:`llava_patches.tiny_llm.build_tokenizer`) on :func:`corpus`."""
    return tiny_llm.build_tokenizer(directory, corpus(), vocab_size)


def build_tiny_llama(directory: Path, seed: int = 0) -> Path:
    """A random 2-layer Llama (hidden 64, 4 heads) and its tokenizer (``tiny-llama``) in ``directory``."""
    return tiny_llm.build_tiny_llama(directory, corpus(), hidden_size=64, layers=2, heads=4, vocab_size=512, seed=seed)


def build_tiny_qwen2(directory: Path, seed: int = 0, tie_word_embeddings: bool = False) -> Path:
    """A random 2-layer Qwen2 (hidden 64, 4 heads, 2 KV heads, random q/k/v biases) and its tokenizer."""
    return tiny_llm.build_tiny_qwen2(directory, corpus(), hidden_size=64, layers=2, heads=4, kv_heads=2,
                                     vocab_size=512, seed=seed, tie_word_embeddings=tie_word_embeddings)


def draw_diagram(shape: str, letters: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A black-on-white line drawing of ``shape`` with a little random placement jitter."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    m = size // 8
    jitter = lambda: int(rng.integers(-m // 2, m // 2 + 1))  # noqa: E731
    if shape == "triangle":
        pts = [(m + jitter(), size - m + jitter()), (size - m + jitter(), size - m + jitter()), (size // 2 + jitter(), m)]
        draw.polygon(pts, outline="black", width=2)
    elif shape == "square":
        a, b = m + jitter(), size - m + jitter()
        draw.rectangle([a, a, b, b], outline="black", width=2)
    elif shape == "segment":
        draw.line([(m + jitter(), size // 2 + jitter()), (size - m + jitter(), size // 2 + jitter())], fill="black", width=2)
    else:
        corner = (m + jitter(), size - m + jitter())
        draw.line([corner, (size - m, size - m + jitter())], fill="black", width=2)
        draw.line([corner, (size - m + jitter(), m)], fill="black", width=2)
    draw.text((2, 2), letters[0], fill="black")
    return image


def follow_ups(shape: str, letters: str) -> list[tuple[str, str]]:
    """Question/answer pairs for the second and later turns of a multi-turn sample."""
    return [("Which letter is written in the corner?", f"The letter {letters[0]}."),
            ("Is it a polygon?", "yes" if shape in ("triangle", "square") else "no")]


def build_diagram_dataset(directory: Path, n: int = 8, seed: int = 0, image_size: int = 64,
                          turns: int | tuple[int, ...] = 1) -> tuple[Path, Path]:
    """Write ``n`` diagrams and a LLaVA-format JSON list; returns (json path, image folder).

    ``turns`` is the number of question/answer rounds per sample (1 to 3), or a cycle of such numbers.
    """
    rng = np.random.default_rng(seed)
    images = directory / "images"
    images.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        shape = SHAPES[i % len(SHAPES)]
        start = int(rng.integers(0, len(LETTERS) - 3))
        letters = LETTERS[start : start + 4]
        name = f"{i:04d}.png"
        draw_diagram(shape, letters, rng, image_size).save(images / name)
        question = QUESTIONS[i % len(QUESTIONS)]
        rounds = [(f"<image>\n{question}", _caption(shape, letters))]
        count = turns[i % len(turns)] if isinstance(turns, tuple) else turns
        rounds += follow_ups(shape, letters)[: count - 1]
        conversations = []
        for q, a in rounds:
            conversations += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
        records.append({"id": f"sample-{i}", "image": name, "conversations": conversations})
    data = directory / "data.json"
    data.write_text(json.dumps(records, indent=1))
    return data, images


def build_mmclip_checkpoint(directory: Path) -> Path:
    """A random ``mmclip-tiny-vit`` checkpoint (64 px, patch 16, width 64) saved to ``directory``."""
    import torch

    from mmclip_plugin.config import ModelConfig
    from mmclip_plugin.model import create_model

    torch.manual_seed(0)
    return create_model(ModelConfig(name="mmclip-tiny-vit")).save_pretrained(directory)


def subprocess_env() -> dict[str, str]:
    """The environment of a training subprocess: CPU, offline, one thread, no launcher variables."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        WANDB_MODE="disabled",
    )
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    # DeepSpeed JIT-builds its CPU ops into ~/.cache/torch_extensions by default: environments sharing that
    # folder (several checkouts on one machine) rebuild each other's build (minutes each); keep one per env.
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    return env


def run_checked(cmd: list[str], timeout: int = 600, extra_env: dict[str, str] | None = None) -> str:
    """Run ``cmd`` in the repository; assert success and no "tokenization mismatch"; return its output."""
    env = {**subprocess_env(), **(extra_env or {})}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{output[-6000:]}"
    assert "tokenization mismatch" not in output, output[-3000:]
    return output


def train_args(llm: Path, data: Path, images: Path, mmclip: Path, output: Path, steps: int,
               learning_rate: float) -> list[str]:
    """Upstream training arguments shared by the tests (LLaVA-1.5's tower/projector flags, tiny sizes)."""
    return [
        "--model_name_or_path", str(llm),
        "--data_path", str(data),
        "--image_folder", str(images),
        "--vision_tower", f"mmclip:{mmclip}",
        "--mm_projector_type", "mlp2x_gelu",
        "--mm_vision_select_layer", "-2",
        "--mm_use_im_start_end", "False",
        "--mm_use_im_patch_token", "False",
        "--bf16", "False",
        "--fp16", "False",
        "--output_dir", str(output),
        "--max_steps", str(steps),
        "--per_device_train_batch_size", "4",
        "--learning_rate", str(learning_rate),
        "--weight_decay", "0.0",
        "--lr_scheduler_type", "constant",
        "--logging_steps", "1",
        "--model_max_length", "128",
        "--dataloader_num_workers", "0",
        "--lazy_preprocess", "True",
        "--report_to", "none",
        "--seed", "0",
    ]  # fmt: skip


def logged_losses(output_dir: Path) -> list[float]:
    """The training losses the HF trainer logged in ``output_dir/trainer_state.json``."""
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def assert_learning(output_dir: Path, steps: int) -> list[float]:
    """Assert ``steps`` logged losses, all positive and finite, the last two below the first two."""
    losses = logged_losses(output_dir)
    assert len(losses) == steps, losses
    assert all(math.isfinite(x) and x > 0 for x in losses), losses
    assert sum(losses[-2:]) < sum(losses[:2]), f"loss did not fall: {losses}"
    return losses
