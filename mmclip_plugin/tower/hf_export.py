"""``mmclip-export``: an MMCLIP checkpoint as a transformers CLIP or SigLIP directory.

What is written depends on the checkpoint's image tower and on the options:

============================  =====================================  ==============================
tower                         default (image tower only)             ``--full`` (both towers)
============================  =====================================  ==============================
open_clip ViT (OpenAI CLIP)   ``CLIPVisionModel``                    ``CLIPModel``
                              (``--with-projection``:
                              ``CLIPVisionModelWithProjection``)
timm ViT, SigLIP layout       ``SiglipVisionModel``                  ``SiglipModel``
============================  =====================================  ==============================

Weights go through the same rule table as ``mmclip-import``
(:mod:`~mmclip_plugin.tower.hf_weights`), so a checkpoint round-trips HF -> MMCLIP -> HF. The image
processor is a ``CLIPImageProcessor`` configured from the checkpoint's ``preprocess_cfg``: it has the
``crop_size`` and ``image_mean`` upstream LLaVA reads (transformers' ``SiglipImageProcessor`` has no
``crop_size``); for SigLIP it resizes both sides without cropping, as SigLIP does. A full export also
writes the tokenizer (the checkpoint's own transformers tokenizer, or, for open_clip's built-in
OpenAI tokenizer, the equivalent ``CLIPTokenizer``).

The export checks itself unless told not to: every hidden state of the image tower, and with
``--full`` or ``--with-projection`` the embeddings, must equal the MMCLIP model's within 1e-4.

Which LLaVA loads what: upstream LLaVA-1.5 (``llava-torch`` 1.2.2) loads any existing path as HF CLIP,
so a ``CLIPVisionModel`` export works as ``--vision_tower <dir>`` without patches; it has no SigLIP
class at all (a SigLIP directory fails there with a 729 vs 730 position mismatch), so serve SigLIP
checkpoints to it as ``mmclip:<checkpoint>`` (llava_patches). Code that loads towers through
transformers' Auto classes (LLaVA-NeXT's ``hf:<dir>`` tower, transformers' own LLaVA) reads the SigLIP
export as it is; see docs/tower.md.

CLI::

    mmclip-export --checkpoint runs/mmclip/final --out runs/mmclip/final-hf [--full | --with-projection]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmclip_plugin.checkpoint_files import read_open_clip_config
from mmclip_plugin.model import OPEN_CLIP_CONFIG, WEIGHTS_FILE, check_checkpoint_dir
from mmclip_plugin.tower.hf_config import (
    clip_text_config,
    hf_activation,
    hf_family,
    siglip_text_config,
    siglip_vision_config,
)
from mmclip_plugin.tower.hf_weights import (
    clip_rules,
    clip_vision_rules,
    convert,
    siglip_rules,
    siglip_vision_rules,
)
from mmclip_plugin.tower.image_processor import build_hf_image_processor
from mmclip_plugin.tower.weights import load_visual
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import atomic_directory, atomic_write_json, check_replaceable_dir

logger = logging.getLogger(__name__)

EXPORT_INFO = "mmclip_export.json"
DEFAULT_ATOL = 1e-4
# vision_cfg keys whose non-default value changes the hidden states in a way HF CLIP cannot express
_UNSUPPORTED_FLAGS = (
    "timm_model_name", "ls_init_value", "attentional_pool", "no_ln_pre", "qk_norm", "scaled_cosine_attn",
    "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc", "final_ln_after_pool",
)


# ----------------------------------------------------------------------------- configs
def build_hf_config(model_cfg: dict[str, Any], source: str = "checkpoint") -> Any:
    """The ``transformers.CLIPVisionConfig`` equivalent to an open_clip ``model_cfg`` (OpenAI-CLIP ViT).

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
        hidden_act=hf_activation(bool(model_cfg.get("quick_gelu")), vision.get("act_kwargs"), f"{source}: vision_cfg"),
        layer_norm_eps=float(norm_kwargs.get("eps", 1e-5)),
        attention_dropout=0.0,
    )


def _side(value: Any, source: str, key: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"{source}: vision_cfg.{key}={list(value)} is not square; HF CLIP needs square sizes")
        value = value[0]
    return int(value)


def _target(model_cfg: dict[str, Any], visual: nn.Module, image_size: int, source: str, full: bool,
            with_projection: bool, tokenizer_ids: dict[str, int]) -> tuple[nn.Module, list]:
    """The empty transformers model to fill and the weight rules, for this checkpoint and export kind."""
    import transformers as tf

    family = hf_family(model_cfg)
    scale = float(model_cfg.get("init_logit_scale", 2.6592))
    if family == "clip":
        vision = build_hf_config(model_cfg, source)
        if not full:
            cls = tf.CLIPVisionModelWithProjection if with_projection else tf.CLIPVisionModel
            return cls(vision), clip_vision_rules(vision.num_hidden_layers, with_projection)
        text = clip_text_config(model_cfg, source, tokenizer_ids)
        config = tf.CLIPConfig(text_config=text, vision_config=vision.to_dict(), projection_dim=vision.projection_dim,
                               logit_scale_init_value=scale)
        return tf.CLIPModel(config), clip_rules(vision.num_hidden_layers, text["num_hidden_layers"])
    if with_projection:
        raise InputError(f"{source}: --with-projection is for CLIP towers; a SigLIP image tower has no projection "
                         f"(its attention-pool head is exported with it)")
    trunk = getattr(visual, "trunk", None)
    head = getattr(visual, "head", None)
    if trunk is None or (head is not None and len(head)):
        raise ValueError(f"{source}: a timm tower with an extra projection (timm_proj) has no SigLIP equivalent")
    vision = siglip_vision_config(trunk, image_size, source)
    if not full:
        return tf.SiglipVisionModel(tf.SiglipVisionConfig(**vision)), siglip_vision_rules(vision["num_hidden_layers"])
    text = siglip_text_config(model_cfg, source)
    if text["hidden_size"] != vision["hidden_size"]:
        raise ValueError(f"{source}: text width {text['hidden_size']} != image width {vision['hidden_size']}")
    config = tf.SiglipConfig(text_config=text, vision_config=vision)
    return tf.SiglipModel(config), siglip_rules(vision["num_hidden_layers"], text["num_hidden_layers"])


# ----------------------------------------------------------------------------- tokenizer
def _hf_tokenizer(src: Path, model_cfg: dict[str, Any]) -> Any:
    """The checkpoint's tokenizer as a transformers tokenizer (None when it has none to export)."""
    from transformers import AutoTokenizer, CLIPTokenizer

    text = model_cfg.get("text_cfg") or {}
    length = int(text.get("context_length", 77))
    if text.get("hf_tokenizer_name"):
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(src))
        except (OSError, ValueError) as exc:
            raise InputError(f"{src}: its config names a transformers tokenizer but the directory holds none "
                             f"readable ({exc})") from None
        tokenizer.model_max_length = length
        return tokenizer
    # open_clip's built-in tokenizer is OpenAI's byte-level BPE: the same vocabulary and merges as CLIPTokenizer
    import tempfile

    import open_clip

    simple = open_clip.get_tokenizer(f"local-dir:{src}")
    if not hasattr(simple, "bpe_ranks"):
        logger.warning("%s: tokenizer %s has no transformers equivalent; exporting without a tokenizer",
                       src, type(simple).__name__)
        return None
    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = Path(tmp, "vocab.json"), Path(tmp, "merges.txt")
        vocab.write_text(json.dumps(simple.encoder))
        ranked = sorted(simple.bpe_ranks.items(), key=lambda item: item[1])
        merges.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for (a, b), _ in ranked))
        return CLIPTokenizer(str(vocab), str(merges), model_max_length=length)


# ----------------------------------------------------------------------------- export
def export_hf(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    with_projection: bool = False,
    verify: bool = True,
    overwrite: bool = False,
    full: bool = False,
    atol: float = DEFAULT_ATOL,
) -> Path:
    """Write ``checkpoint`` as a transformers CLIP/SigLIP directory (model, image processor, tokenizer if full).

    Args:
        checkpoint: an MMCLIP checkpoint directory, or an ``mmclip-train`` output directory (its model).
        out: the directory to create (written to a temporary sibling, then renamed into place).
        with_projection: CLIP only: ``CLIPVisionModelWithProjection`` (keeps the image projection).
        verify: compare the export with the MMCLIP model (hidden states; embeddings when exported).
        overwrite: replace an existing ``out``.
        full: export both towers (``CLIPModel`` / ``SiglipModel``) with the tokenizer.
        atol: the largest absolute difference ``verify`` accepts.

    Raises:
        ValueError: an architecture transformers cannot express, or the verification failed.
        InputError: ``out`` holds an earlier export and ``overwrite`` is False, or other files (never replaced);
            bad options.
    """
    from mmclip_plugin.checkpoint import resolve_model_dir

    src = check_checkpoint_dir(resolve_model_dir(checkpoint)).resolve()
    out = check_replaceable_dir(out, option="--out", what="an mmclip-export output", overwrite=overwrite,
                                is_ours=lambda path: (path / EXPORT_INFO).is_file())
    if full and with_projection:
        raise InputError("--full already exports the projections; drop --with-projection")
    cfg = read_open_clip_config(src)
    model_cfg, source = cfg["model_cfg"], str(src / OPEN_CLIP_CONFIG)
    visual, preprocess_cfg = load_visual(src)
    tokenizer = _hf_tokenizer(src, model_cfg) if full else None
    ids = {k: getattr(tokenizer, k) for k in ("pad_token_id", "bos_token_id") if getattr(tokenizer, k, None) is not None}
    image_size = _side(preprocess_cfg.get("size", 224), source, "size")
    hf_model, rules = _target(model_cfg, visual, image_size, source, full, with_projection, ids)
    from safetensors.torch import load_file

    state = load_file(str(src / WEIGHTS_FILE))
    if not full:  # the image tower alone: its projection goes only where the export has one
        wanted = {key for rule in rules for key in rule.oc}
        state = {k: v for k, v in state.items() if k.startswith("visual.") and (k in wanted or k != "visual.proj")}
    if "logit_scale" in hf_model.state_dict() and "logit_bias" in hf_model.state_dict() and "logit_bias" not in state:
        raise ValueError(f"{src / WEIGHTS_FILE}: no logit_bias; a SiglipModel needs one (train with a sigmoid loss, "
                         f"or export the image tower alone)")
    if full and "logit_bias" in state and "logit_bias" not in hf_model.state_dict():
        state = {k: v for k, v in state.items() if k != "logit_bias"}
        logger.warning("%s: the checkpoint's logit_bias has no place in a CLIPModel and is not exported", src)
    weights = convert(rules, state, hf_model.state_dict(), to_hf=True, source_name=str(src / WEIGHTS_FILE))
    hf_model.load_state_dict(weights, strict=False)
    hf_model.eval()
    differences = _verify(src, visual, hf_model, image_size, full, with_projection, atol) if verify else {}

    processor = build_hf_image_processor(preprocess_cfg)
    with atomic_directory(out) as tmp:
        hf_model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / EXPORT_INFO, {
            "format": "mmclip-hf-export", "version": 2, "source_checkpoint": str(src),
            "model_class": type(hf_model).__name__, "verified": verify, "max_abs_difference": differences,
        })
    if hf_family(model_cfg) == "siglip" and not full:
        logger.info("SigLIP image tower exported to %s: upstream LLaVA-1.5 has no SigLIP class (use mmclip:%s there); "
                    "transformers' AutoModel / LLaVA-NeXT's hf:<dir> tower read it (select feature 'cls_patch' keeps "
                    "every patch of a tower without class token)", out, src)
    return out


export_hf_clip = export_hf  # the name before SigLIP and full models were exported


@torch.no_grad()
def _verify(src: Path, visual: nn.Module, hf_model: nn.Module, image_size: int, full: bool, with_projection: bool,
            atol: float) -> dict[str, float]:
    """Largest differences between the export and MMCLIP; raises ``ValueError`` past ``atol``."""
    from mmclip_plugin.tower.vision_tower import _embedding_output

    pixels = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    hf_vision = hf_model.vision_model
    hf_states = hf_vision(pixels, output_hidden_states=True).hidden_states
    out = visual.forward_intermediates(pixels, indices=None, intermediates_only=True, output_fmt="NLC",
                                       output_extra_tokens=True)
    prefixes = out.get("image_intermediates_prefix") or [None] * len(out["image_intermediates"])
    ours = [_embedding_output(visual, pixels)] + [
        tokens if prefix is None else torch.cat([prefix, tokens], dim=1)
        for prefix, tokens in zip(prefixes, out["image_intermediates"])
    ]
    differences = {"hidden_states": max(float((a - b).abs().max()) for a, b in zip(ours, hf_states))}
    for index, (a, b) in enumerate(zip(ours, hf_states)):
        diff = float((a - b).abs().max())
        if diff > atol:
            raise ValueError(f"{src}: exported hidden_states[{index}] differs from MMCLIP by {diff:.2e} (> {atol})")
    if with_projection:
        differences["image_embeds"] = float((hf_model(pixels).image_embeds - visual(pixels)).abs().max())
    if full:
        from mmclip_plugin.model import load_checkpoint
        from mmclip_plugin.tower.hf_import import PARITY_CAPTIONS

        model = load_checkpoint(src).eval()
        ids = model.tokenize(list(PARITY_CAPTIONS))
        differences["image_embeds"] = float((hf_model.get_image_features(pixel_values=pixels)
                                             - model.encode_image(pixels, normalize=False)).abs().max())
        differences["text_embeds"] = float((hf_model.get_text_features(input_ids=ids)
                                            - model.encode_text(ids, normalize=False)).abs().max())
    for key, diff in differences.items():
        if diff > atol:
            raise ValueError(f"{src}: exported {key} differ from MMCLIP by {diff:.2e} (> {atol})")
    return differences


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmclip-export",
        description="Export an MMCLIP checkpoint as a transformers CLIP (CLIPVisionModel, CLIPModel) or SigLIP "
                    "(SiglipVisionModel, SiglipModel) directory with a CLIPImageProcessor, checked against MMCLIP.",
        epilog="example: mmclip-export --checkpoint runs/mmclip/final --out runs/mmclip/final-hf --full",
    )
    parser.add_argument("--checkpoint", required=True, help="MMCLIP checkpoint directory (or an mmclip-train output directory)")
    parser.add_argument("--out", required=True, help="output directory (loadable with transformers' from_pretrained)")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--full", action="store_true", help="both towers: CLIPModel / SiglipModel, with the tokenizer")
    kind.add_argument("--with-projection", action="store_true", help="CLIP: export CLIPVisionModelWithProjection")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="largest difference the check accepts")
    parser.add_argument("--no-verify", action="store_true", help="skip the comparison with MMCLIP")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def _run(args: argparse.Namespace) -> int:
    try:
        out = export_hf(args.checkpoint, args.out, with_projection=args.with_projection, verify=not args.no_verify,
                        overwrite=args.overwrite, full=args.full, atol=args.atol)
    except ValueError as exc:  # an architecture transformers cannot express, or a failed check: bad input here
        raise InputError(str(exc)) from exc
    info = json.loads((Path(out) / EXPORT_INFO).read_text())
    figures = ", ".join(f"{k} {v:.2e}" for k, v in info["max_abs_difference"].items()) or "not verified"
    print(f"exported {args.checkpoint} -> {out} ({info['model_class']}; max abs difference: {figures})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``mmclip-export --checkpoint DIR --out HFDIR`` (also ``python -m mmclip_plugin.tower.hf_export``)."""
    from mmgeolm_core.cli import run_cli

    return run_cli("mmclip-export", build_parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
