"""Analytic FLOP count of an open_clip ViT image tower and transformer text tower, and its cross-check.

One multiply-add is 2 FLOPs; only matrix products are counted (the convention of MFU: layer norms,
softmax, GELU and the loss are a fraction of a percent at these sizes). For a pre-norm transformer block
of width ``w``, MLP width ``m`` and ``n`` tokens:

* projections ``q, k, v, out``: ``2 n 4 w^2``; MLP: ``2 n 2 w m``;
* attention ``Q K^T`` and ``A V``: ``4 n^2 w`` (the full square: open_clip's text tower passes a causal
  mask as a dense additive mask, so nothing is skipped).

Image tower: ``n = (S / p)^2 + 1`` tokens (class token), plus the patch embedding ``2 (S / p)^2 3 p^2 w``
and the projection of the pooled token ``2 w D``. Text tower: ``n`` = the context length, plus the
projection ``2 w_t D`` of the pooled token. A training step counts 3x the forward (forward, then input
and weight gradients); the recomputation of gradient checkpointing is not model work and is not counted
(that figure would be the hardware FLOP utilisation). :func:`counted_forward_flops` measures the same
forward with ``torch.utils.flop_counter`` to check the formula on the model actually built; the counter
knows the CUDA attention kernels but not the CPU one (``_scaled_dot_product_flash_attention_for_cpu``), so
on the CPU it sees everything but the attention products.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch


class Flops(NamedTuple):
    """Forward FLOPs of one sample: ``total``, of which ``attention`` in the two attention products."""

    total: int
    attention: int


def block_flops(tokens: int, width: int, layers: int, mlp_ratio: float) -> Flops:
    """Forward FLOPs of ``layers`` transformer blocks over one sequence of ``tokens``."""
    mlp = int(width * mlp_ratio)
    attention = layers * 4 * tokens * tokens * width
    return Flops(layers * 2 * tokens * (4 * width * width + 2 * width * mlp) + attention, attention)


def image_forward_flops(model_cfg: dict[str, Any]) -> Flops:
    """Forward FLOPs of one image through an open_clip ``VisionTransformer`` described by ``model_cfg``."""
    v = model_cfg["vision_cfg"]
    if isinstance(v.get("layers"), (list, tuple)) or v.get("timm_model_name"):
        raise ValueError(f"the analytic count covers open_clip ViT towers; vision_cfg {v} is not one")
    size, patch, width = _side(v["image_size"]), _side(v["patch_size"]), int(v["width"])
    grid = (size // patch) ** 2
    body = block_flops(grid + 1, width, int(v["layers"]), float(v.get("mlp_ratio", 4.0)))
    embed, head = 2 * grid * 3 * patch * patch * width, 2 * width * int(model_cfg["embed_dim"])
    return Flops(embed + body.total + head, body.attention)


def text_forward_flops(model_cfg: dict[str, Any]) -> Flops:
    """Forward FLOPs of one caption (padded to the context length) through the open_clip text tower."""
    t = model_cfg["text_cfg"]
    width = int(t["width"])
    body = block_flops(int(t.get("context_length", 77)), width, int(t["layers"]), float(t.get("mlp_ratio", 4.0)))
    return Flops(body.total + 2 * width * int(model_cfg["embed_dim"]), body.attention)


def training_step_flops(model_cfg: dict[str, Any], images: int, texts: int) -> int:
    """Model FLOPs of one training step encoding ``images`` and ``texts`` (3x the forward, both towers trained)."""
    return 3 * (images * image_forward_flops(model_cfg).total + texts * text_forward_flops(model_cfg).total)


def counted_forward_flops(model: Any, device: torch.device) -> dict[str, int]:
    """FLOPs ``torch.utils.flop_counter`` sees in one image and one caption forward of an ``MMCLIPModel``."""
    from torch.utils.flop_counter import FlopCounterMode

    size = model.image_size
    length = int(model.model_cfg["text_cfg"].get("context_length", 77))
    image = torch.randn(1, 3, size, size, device=device)
    text = torch.ones(1, length, dtype=torch.long, device=device)
    out = {}
    was_training = model.training
    # With grad on and in train mode, nn.MultiheadAttention takes its SDPA path: its inference fast path
    # (a fused native kernel) is invisible to the counter.
    model.train()
    try:
        with torch.enable_grad():
            for key, run in (("image", lambda: model.encode_image(image)), ("text", lambda: model.encode_text(text))):
                counter = FlopCounterMode(display=False)
                with counter:
                    run()
                out[key] = int(counter.get_total_flops())
    finally:
        model.train(was_training)
    return out


def _side(value: Any) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)
