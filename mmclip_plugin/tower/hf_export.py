"""Export an MMCLIP checkpoint as a transformers ``CLIPVisionModel`` directory.

Unpatched upstream LLaVA loads any existing path as HF CLIP (``CLIPVisionModel.from_pretrained`` +
``CLIPImageProcessor.from_pretrained``), so an exported directory works as ``--vision_tower <dir>``
without ``llava_patches``. Only the OpenAI-CLIP architecture has an HF twin: an open_clip
``VisionTransformer`` with a class token, pre-norm, standard blocks (no layer scale, no qk-norm, no
attentional pooler), class-token pooling and ``gelu`` or ``quick_gelu``; anything else is refused.

The written image processor is a plain ``CLIPImageProcessor`` (HF's centre crop rounds the offset
down, torchvision's to nearest; for some non-square images the crop window moves by one pixel
compared with open_clip's transform). By default the export checks itself: the exported model's
hidden states must match the MMCLIP tower's to 1e-4 on random pixels.

CLI::

    python -m mmclip_plugin.tower.hf_export --checkpoint runs/mmclip/final --out runs/mmclip/final-hf
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmclip_plugin.model import OPEN_CLIP_CONFIG, check_checkpoint_dir
from mmclip_plugin.tower.image_processor import build_hf_image_processor
from mmclip_plugin.tower.weights import load_visual
from mmgeolm_core.io import atomic_directory, atomic_write_json

EXPORT_INFO = "mmclip_export.json"
# vision_cfg keys whose non-default value changes the hidden states in a way HF CLIP cannot express
_UNSUPPORTED_FLAGS = (
    "timm_model_name", "ls_init_value", "attentional_pool", "no_ln_pre", "qk_norm", "scaled_cosine_attn",
    "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc", "final_ln_after_pool", "act_kwargs",
)


def build_hf_config(model_cfg: dict[str, Any], source: str = "checkpoint") -> Any:
    """The ``transformers.CLIPVisionConfig`` equivalent to an open_clip ``model_cfg``.

    Raises:
        ValueError: the architecture is not OpenAI-CLIP's (the message names the offending key).
    """
    from transformers import CLIPVisionConfig

    vision = model_cfg.get("vision_cfg")
    if not isinstance(vision, dict):
        raise ValueError(f"{source}: model_cfg has no 'vision_cfg'; nothing to export")
    bad = [key for key in _UNSUPPORTED_FLAGS if vision.get(key)]
    if isinstance(vision.get("layers", 12), (list, tuple)):
        bad.append("layers (ModifiedResNet)")
    if vision.get("block_type") not in (None, "default"):
        bad.append(f"block_type={vision['block_type']!r}")
    if vision.get("pool_type", "tok") != "tok":
        bad.append(f"pool_type={vision['pool_type']!r}")
    if vision.get("pos_embed_type", "learnable") not in ("learnable", "sin_cos_2d"):
        bad.append(f"pos_embed_type={vision['pos_embed_type']!r}")
    norm_kwargs = vision.get("norm_kwargs") or {}
    if set(norm_kwargs) - {"eps"}:
        bad.append(f"norm_kwargs={norm_kwargs}")
    if bad:
        raise ValueError(
            f"{source}: only the OpenAI-CLIP ViT architecture can be exported to transformers CLIPVisionModel; "
            f"unsupported vision_cfg settings: {', '.join(bad)}"
        )
    image_size, patch_size = (_side(vision.get(k, d), source, k) for k, d in (("image_size", 224), ("patch_size", 16)))
    width = int(vision.get("width", 768))
    head_width = int(vision.get("head_width", 64))
    if width % head_width:
        raise ValueError(f"{source}: vision_cfg.width {width} is not a multiple of head_width {head_width}")
    return CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=int(width * float(vision.get("mlp_ratio", 4.0))),
        num_hidden_layers=int(vision.get("layers", 12)),
        num_attention_heads=width // head_width,
        num_channels=3,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=int(model_cfg.get("embed_dim", 512)),
        hidden_act="quick_gelu" if model_cfg.get("quick_gelu") else "gelu",
        layer_norm_eps=float(norm_kwargs.get("eps", 1e-5)),
        attention_dropout=0.0,
    )


def _side(value: Any, source: str, key: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"{source}: vision_cfg.{key}={list(value)} is not square; HF CLIP needs square sizes")
        value = value[0]
    return int(value)


def map_state_dict(visual: nn.Module, num_layers: int, with_projection: bool = False) -> dict[str, torch.Tensor]:
    """open_clip ``VisionTransformer`` weights -> ``CLIPVisionModel`` (or ``...WithProjection``) keys."""
    sd = visual.state_dict()
    out = {
        "vision_model.embeddings.class_embedding": sd["class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": sd["conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "vision_model.pre_layrnorm.weight": sd["ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": sd["ln_pre.bias"],
        "vision_model.post_layernorm.weight": sd["ln_post.weight"],
        "vision_model.post_layernorm.bias": sd["ln_post.bias"],
    }
    for i in range(num_layers):
        src, dst = f"transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}."
        # nn.MultiheadAttention packs q, k, v into one (3D, D) projection
        for name, weight, bias in zip(
            ("q_proj", "k_proj", "v_proj"),
            sd[src + "attn.in_proj_weight"].chunk(3, dim=0),
            sd[src + "attn.in_proj_bias"].chunk(3, dim=0),
        ):
            out[dst + f"self_attn.{name}.weight"] = weight
            out[dst + f"self_attn.{name}.bias"] = bias
        pairs = {
            "attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
            "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
        }
        for s, d in pairs.items():
            out[dst + d + ".weight"] = sd[src + s + ".weight"]
            out[dst + d + ".bias"] = sd[src + s + ".bias"]
    if with_projection:
        out["visual_projection.weight"] = sd["proj"].t()
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def export_hf_clip(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    with_projection: bool = False,
    verify: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write ``checkpoint`` as a transformers CLIP vision model + ``CLIPImageProcessor`` in ``out``.

    Args:
        checkpoint: an MMCLIP checkpoint directory (``MMCLIPModel.save_pretrained``).
        out: the directory to create (written to a temporary sibling, then renamed into place).
        with_projection: export ``CLIPVisionModelWithProjection`` (keeps the image projection);
            ``CLIPVisionModel.from_pretrained`` still loads it, ignoring the projection.
        verify: compare every hidden state of the export with the MMCLIP tower (max abs diff 1e-4).
        overwrite: replace an existing ``out``.

    Raises:
        ValueError: unsupported architecture, or the verification failed.
        FileExistsError: ``out`` exists and ``overwrite`` is False.
    """
    from transformers import CLIPVisionModel, CLIPVisionModelWithProjection

    src = check_checkpoint_dir(checkpoint).resolve()
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    cfg = json.loads((src / OPEN_CLIP_CONFIG).read_text())
    hf_config = build_hf_config(cfg["model_cfg"], source=str(src / OPEN_CLIP_CONFIG))
    visual, preprocess_cfg = load_visual(src)
    model_cls = CLIPVisionModelWithProjection if with_projection else CLIPVisionModel
    hf_model = model_cls(hf_config).eval()
    missing, unexpected = hf_model.load_state_dict(
        map_state_dict(visual, hf_config.num_hidden_layers, with_projection), strict=False
    )
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"{src}: weight mapping incomplete; missing {missing}, unexpected {unexpected}")
    if verify:
        _verify(visual, hf_model, hf_config.image_size, str(src))

    with atomic_directory(out) as tmp:
        hf_model.save_pretrained(tmp, safe_serialization=True)
        build_hf_image_processor(preprocess_cfg).save_pretrained(tmp)
        info = {"format": "mmclip-hf-export", "version": 1, "source_checkpoint": str(src),
                "model_class": model_cls.__name__, "verified": verify}
        atomic_write_json(tmp / EXPORT_INFO, info)
    return out


@torch.no_grad()
def _verify(visual: nn.Module, hf_model: nn.Module, image_size: int, source: str, atol: float = 1e-4) -> None:
    """Every HF hidden state must equal open_clip's (embeddings, then each block)."""
    pixels = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    hf_states = hf_model.vision_model(pixels, output_hidden_states=True).hidden_states
    out = visual.forward_intermediates(pixels, indices=None, intermediates_only=True, output_fmt="NLC",
                                       output_extra_tokens=True)
    ours = [visual._embeds(pixels)] + [
        torch.cat([prefix, tokens], dim=1)
        for prefix, tokens in zip(out["image_intermediates_prefix"], out["image_intermediates"])
    ]
    for index, (a, b) in enumerate(zip(ours, hf_states)):
        diff = (a - b).abs().max().item()
        if diff > atol:
            raise ValueError(f"{source}: exported hidden_states[{index}] differs from MMCLIP by {diff:.2e} (> {atol})")


def main(argv: list[str] | None = None) -> int:
    """``mmclip-export --checkpoint DIR --out HFDIR`` (also ``python -m mmclip_plugin.tower.hf_export``)."""
    parser = argparse.ArgumentParser(
        prog="mmclip-export",
        description="Export an MMCLIP checkpoint (OpenAI-CLIP ViT) as a transformers CLIPVisionModel directory.",
    )
    parser.add_argument("--checkpoint", required=True, help="MMCLIP checkpoint directory")
    parser.add_argument("--out", required=True, help="output directory (loadable by CLIPVisionModel.from_pretrained)")
    parser.add_argument("--with-projection", action="store_true", help="export CLIPVisionModelWithProjection")
    parser.add_argument("--no-verify", action="store_true", help="skip the hidden-state comparison")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    try:
        out = export_hf_clip(args.checkpoint, args.out, with_projection=args.with_projection,
                             verify=not args.no_verify, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"exported {args.checkpoint} -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
