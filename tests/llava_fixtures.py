"""Tiny, download-free building blocks for the LLaVA end-to-end tests.

- :func:`build_tokenizer`: a real slow ``LlamaTokenizer`` whose SentencePiece model is trained on the
  fly (BPE, byte fallback, ``<unk>``/``<s>``/``</s>`` at ids 0/1/2 like Llama), so upstream's ``v1`` and
  ``plain`` label masking sees the Llama behaviour it assumes;
- :func:`build_tiny_llama`: a 2-layer, width-64 random ``LlamaForCausalLM`` saved with its tokenizer;
- :func:`build_diagram_dataset`: Pillow line drawings with LLaVA-format conversations;
- :func:`build_mmclip_checkpoint`: a random ``mmclip-tiny-vit`` MMCLIP checkpoint directory.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("triangle", "square", "segment", "angle")
LETTERS = "ABCDEFGH"

SYSTEM_PROMPTS = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
)
QUESTIONS = ("What shape is shown in the diagram?", "Describe the diagram.", "Which figure is drawn?")


def _caption(shape: str, letters: str) -> str:
    if shape == "triangle":
        return f"The diagram shows triangle {letters[:3]}."
    if shape == "square":
        return f"The diagram shows square {letters[:4]}."
    if shape == "segment":
        return f"The diagram shows segment {letters[:2]}."
    return f"The diagram shows angle {letters[:3]}."


def _corpus() -> list[str]:
    """Every string the tests tokenize, plus the template scaffolding, several times over."""
    lines = list(SYSTEM_PROMPTS) + list(QUESTIONS)
    lines += ["USER: <image>\nWhat is this? ASSISTANT: It is a diagram.</s>", "Human: hi\nAssistant: hello"]
    for shape in SHAPES:
        for i in range(len(LETTERS) - 3):
            lines.append(_caption(shape, LETTERS[i : i + 4]))
    lines += [f"{a} {b} {a}{b} {b}{a}" for a in LETTERS for b in LETTERS]
    lines += ["0 1 2 3 4 5 6 7 8 9 10 12 15 20 30 45 60 90 180 360"]
    return lines * 4


def build_tokenizer(directory: Path, vocab_size: int = 512):
    """Train a SentencePiece BPE model and wrap it in a slow ``LlamaTokenizer`` saved to ``directory``."""
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    prefix = directory / "spm"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        split_digits=True,
        character_coverage=1.0,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    tokenizer = LlamaTokenizer(vocab_file=str(prefix) + ".model", legacy=True)
    tokenizer.save_pretrained(str(directory))
    return tokenizer


def build_tiny_llama(directory: Path, seed: int = 0) -> Path:
    """Save a random 2-layer Llama (hidden 64, 4 heads) and its tokenizer into ``directory``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(directory)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(str(directory), safe_serialization=True)
    return directory


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


def build_diagram_dataset(directory: Path, n: int = 8, seed: int = 0, image_size: int = 64) -> tuple[Path, Path]:
    """Write ``n`` diagrams and a LLaVA-format JSON list; returns (json path, image folder)."""
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
        records.append(
            {
                "id": f"sample-{i}",
                "image": name,
                "conversations": [
                    {"from": "human", "value": f"<image>\n{question}"},
                    {"from": "gpt", "value": _caption(shape, letters)},
                ],
            }
        )
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
