"""A tiny random LLaVA checkpoint (a small Llama, a random MMCLIP tower, a random projector), built locally.

For smoke tests and speed measurements of the inference path (``mmgeolm-bench generate``,
``benchmarks/bench_generate.py``): the checkpoint reloads through
:func:`llava_patches.loader.load_pretrained_model` like a trained one. Its answers are noise.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llava_patches.compat import get_upstream_symbol
from llava_patches.register import registered
from llava_patches.tiny_llm import build_tiny_llama


def build_tiny_llava(directory: str | Path, corpus: Sequence[str], tower: str = "mmclip-tiny-vit",
                     hidden_size: int = 64, layers: int = 2, vocab_size: int = 512, seed: int = 0) -> Path:
    """Save a random LLaVA-Llama with an ``mmclip:`` tower into ``directory/model``; returns that folder.

    Args:
        directory: where the model, its tokenizer and the tower checkpoint go.
        corpus: texts the SentencePiece tokenizer is trained on.
        tower: an MMCLIP model config name (random weights).
        hidden_size, layers, vocab_size: the Llama's size.
        seed: weight initialisation seed.
    """
    import torch

    from mmclip_plugin.config import ModelConfig
    from mmclip_plugin.model import create_model

    directory = Path(directory)
    torch.manual_seed(seed)
    tower_dir = create_model(ModelConfig(name=tower)).save_pretrained(directory / "tower")
    llm = build_tiny_llama(directory / "model", corpus, hidden_size=hidden_size, layers=layers, vocab_size=vocab_size,
                           seed=seed)
    config_cls = get_upstream_symbol("llava.model.language_model.llava_llama", "LlavaConfig")
    model_cls = get_upstream_symbol("llava.model.language_model.llava_llama", "LlavaLlamaForCausalLM")
    config = config_cls.from_pretrained(str(llm))
    with registered():
        from mmclip_plugin.tower.vision_tower import MMCLIPVisionTower

        config.update({"mm_vision_tower": f"mmclip:{tower_dir}", "mm_projector_type": "mlp2x_gelu",
                       "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
                       "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "image_aspect_ratio": "pad",
                       "tokenizer_padding_side": "right", "mm_patch_merge_type": "flat"})
        config.mm_hidden_size = MMCLIPVisionTower(f"mmclip:{tower_dir}", args=config, delay_load=True).hidden_size
        torch.manual_seed(seed)
        model = model_cls.from_pretrained(str(llm), config=config)
    model.save_pretrained(str(llm), safe_serialization=True)
    return llm
