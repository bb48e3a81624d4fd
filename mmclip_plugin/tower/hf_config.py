"""The architecture and preprocessing of a transformers CLIP/SigLIP, as an open_clip config, and back.

Two families have an exact twin in open_clip:

- **CLIP** (``CLIPModel``): open_clip's own ``CLIP`` (``VisionTransformer`` with class token and
  pre-norm, causal ``TextTransformer`` pooled at the EOS token), ``quick_gelu`` or GELU.
- **SigLIP** (``SiglipModel``): open_clip's ``CustomTextCLIP`` with a timm ViT without class token and
  with SigLIP's attention-pool head (a generated timm name, see :mod:`~mmclip_plugin.tower.timm_vit`),
  and a bidirectional ``TextTransformer`` pooled at the last token with a biased linear head.

:func:`open_clip_config_from_hf` reads ``config.json`` (through transformers' config classes, so
every default is transformers' own) and :func:`hf_config_from_open_clip` goes back. Image
preprocessing travels as open_clip's ``preprocess_cfg`` (:func:`preprocess_cfg_from_hf`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mmclip_plugin.tower.timm_vit import TimmViTSpec, mlp_ratio
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import FormatError

FAMILIES = ("clip", "siglip")
VISION_ONLY = {"clip_vision_model": "CLIPVisionModel", "siglip_vision_model": "SiglipVisionModel"}
# transformers activation name -> (open_clip quick_gelu flag, open_clip act_kwargs, timm activation)
ACTIVATIONS: dict[str, tuple[bool, dict | None, str]] = {
    "quick_gelu": (True, None, "quick_gelu"),
    "gelu": (False, None, "gelu"),
    "gelu_pytorch_tanh": (False, {"approximate": "tanh"}, "gelu_tanh"),
    "gelu_new": (False, {"approximate": "tanh"}, "gelu_tanh"),
}
# PIL resampling codes (transformers' PILImageResampling) -> open_clip interpolation
RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ----------------------------------------------------------------------------- reading a HF directory
def read_hf_config(directory: str | os.PathLike) -> tuple[str, Any]:
    """``(family, transformers config)`` of a CLIPModel / SiglipModel directory.

    Raises:
        InputError: no directory, no ``config.json``, or a model that is not a full CLIP/SigLIP (the
            message names the file and its ``model_type``).
    """
    from transformers import CLIPConfig, SiglipConfig

    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory} is not a directory; expected a transformers CLIPModel or SiglipModel directory")
    file = directory / "config.json"
    if not file.is_file():
        raise InputError(f"{directory} has no config.json; expected a transformers CLIPModel or SiglipModel directory "
                         f"(as written by save_pretrained)")
    try:
        raw = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FormatError(file, f"not valid JSON: {exc}") from None
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type in VISION_ONLY:
        raise FormatError(file, f"holds a {VISION_ONLY[model_type]} (image tower only); mmclip-import needs the full "
                                f"model with its text tower (CLIPModel or SiglipModel)", key="model_type")
    if model_type not in FAMILIES:
        raise FormatError(file, f"model_type {model_type!r} is not a CLIP or SigLIP model; expected one of "
                                f"{list(FAMILIES)}", key="model_type")
    cls = CLIPConfig if model_type == "clip" else SiglipConfig
    return model_type, cls.from_dict(raw)


def _activation(name: str, where: str) -> tuple[bool, dict | None, str]:
    if name not in ACTIVATIONS:
        raise InputError(f"{where}: hidden_act {name!r} has no open_clip equivalent; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _heads(width: int, heads: int, where: str) -> int:
    if width % heads:
        raise InputError(f"{where}: hidden_size {width} is not a multiple of num_attention_heads {heads}")
    return width // heads


# ----------------------------------------------------------------------------- HF -> open_clip
def open_clip_config_from_hf(family: str, config: Any, source: str, tokenizer_dir: str) -> dict[str, Any]:
    """The open_clip ``model_cfg`` of a transformers CLIP/SigLIP config.

    Args:
        family: ``clip`` or ``siglip``.
        config: the ``CLIPConfig`` / ``SiglipConfig``.
        source: the config file, named in errors.
        tokenizer_dir: recorded as ``text_cfg.hf_tokenizer_name`` (open_clip then reads the tokenizer
            from the checkpoint directory itself, where the import copies it).

    Raises:
        InputError: a setting open_clip cannot express (the message names it).
    """
    v, t = config.vision_config, config.text_config
    v_where, t_where = f"{source}: vision_config", f"{source}: text_config"
    v_quick, v_act_kwargs, v_timm_act = _activation(v.hidden_act, v_where)
    t_quick, t_act_kwargs, _ = _activation(t.hidden_act, t_where)
    text_cfg: dict[str, Any] = {
        "context_length": int(t.max_position_embeddings), "vocab_size": int(t.vocab_size),
        "width": int(t.hidden_size), "heads": int(t.num_attention_heads), "layers": int(t.num_hidden_layers),
        "mlp_ratio": mlp_ratio(int(t.hidden_size), int(t.intermediate_size)),
        "norm_kwargs": {"eps": float(t.layer_norm_eps)}, "pad_id": int(t.pad_token_id or 0),
        "hf_tokenizer_name": tokenizer_dir,
    }
    _heads(t.hidden_size, t.num_attention_heads, t_where)
    if family == "clip":
        if v_quick != t_quick or v_act_kwargs != t_act_kwargs:
            raise InputError(f"{source}: vision hidden_act {v.hidden_act!r} and text hidden_act {t.hidden_act!r} differ; "
                             f"open_clip's CLIP uses one activation for both towers")
        vision_cfg: dict[str, Any] = {
            "image_size": int(v.image_size), "patch_size": int(v.patch_size), "width": int(v.hidden_size),
            "layers": int(v.num_hidden_layers), "head_width": _heads(v.hidden_size, v.num_attention_heads, v_where),
            "mlp_ratio": mlp_ratio(int(v.hidden_size), int(v.intermediate_size)),
            "norm_kwargs": {"eps": float(v.layer_norm_eps)},
        }
        if v_act_kwargs:
            vision_cfg["act_kwargs"] = dict(v_act_kwargs)
            text_cfg["act_kwargs"] = dict(t_act_kwargs)
        # transformers pools CLIP text at argmax(input_ids) when eos_token_id is the legacy 2, else at the first EOS
        legacy = t.eos_token_id == 2
        text_cfg.update(pool_type="argmax" if legacy else "eos", eos_id=int(t.eos_token_id),
                        tokenizer_kwargs={"clean": "whitespace"})
        return {"embed_dim": int(config.projection_dim), "quick_gelu": v_quick, "vision_cfg": vision_cfg,
                "text_cfg": text_cfg}
    if v.hidden_size != t.hidden_size:
        raise InputError(f"{source}: vision hidden_size {v.hidden_size} != text hidden_size {t.hidden_size}; SigLIP "
                         f"compares the towers' outputs directly, so they must have the same width")
    _heads(v.hidden_size, v.num_attention_heads, v_where)
    spec = TimmViTSpec(image_size=int(v.image_size), patch_size=int(v.patch_size), width=int(v.hidden_size),
                       depth=int(v.num_hidden_layers), heads=int(v.num_attention_heads),
                       mlp_width=int(v.intermediate_size), eps=float(v.layer_norm_eps), act=v_timm_act, pool="map")
    text_cfg.update(no_causal_mask=True, proj_bias=True, pool_type="last", tokenizer_kwargs={"clean": "canonicalize"})
    if t_act_kwargs:
        text_cfg["act_kwargs"] = dict(t_act_kwargs)
    if t_quick:
        raise InputError(f"{t_where}: hidden_act 'quick_gelu' is not supported for a SigLIP text tower")
    return {
        "embed_dim": int(v.hidden_size), "custom_text": True,
        "vision_cfg": {"image_size": int(v.image_size), "timm_model_name": spec.name, "timm_model_pretrained": False,
                       "timm_pool": "map", "timm_proj": "none"},
        "text_cfg": text_cfg,
    }


def preprocess_cfg_from_hf(directory: str | os.PathLike, family: str, image_size: int) -> dict[str, Any]:
    """open_clip's ``preprocess_cfg`` from ``preprocessor_config.json`` (the family's defaults when absent).

    Raises:
        InputError: settings open_clip's transform cannot reproduce (a resize size other than the crop,
            an unknown resampling filter, a crop of another size than the model's input).
    """
    file = Path(directory) / "preprocessor_config.json"
    if file.is_file():
        try:
            raw = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise FormatError(file, f"not valid JSON: {exc}") from None
    else:
        from transformers import CLIPImageProcessor, SiglipImageProcessor

        cls = CLIPImageProcessor if family == "clip" else SiglipImageProcessor
        raw = cls(**({"size": {"shortest_edge": image_size}, "crop_size": image_size} if family == "clip" else
                     {"size": {"height": image_size, "width": image_size}})).to_dict()
    resample = raw.get("resample", 3)
    if resample not in RESAMPLE:
        raise FormatError(file, f"resample {resample!r}: expected one of {RESAMPLE} (PIL codes)", key="resample")
    size = raw.get("size") or {}
    size = {"shortest_edge": size} if isinstance(size, int) else size
    crop = raw.get("crop_size") or {}
    crop = {"height": crop, "width": crop} if isinstance(crop, int) else crop
    if raw.get("do_resize", True) is False:
        raise FormatError(file, "do_resize is false; open_clip always resizes to the model's input size", key="do_resize")
    if "shortest_edge" in size:
        if not raw.get("do_center_crop", True):
            raise FormatError(file, "a shortest-edge resize without a centre crop gives images of varying size",
                              key="do_center_crop")
        side = (crop.get("height"), crop.get("width"))
        if side[0] != side[1] or size["shortest_edge"] != side[0]:
            raise FormatError(file, f"size.shortest_edge {size['shortest_edge']} and crop_size {crop} differ; open_clip "
                                    f"resizes the shortest edge to the crop size", key="size")
        out_size, mode = int(size["shortest_edge"]), "shortest"
    elif "height" in size and "width" in size:
        if size["height"] != size["width"]:
            raise FormatError(file, f"size {size} is not square", key="size")
        if raw.get("do_center_crop") and crop and crop.get("height") != size["height"]:
            raise FormatError(file, f"crop_size {crop} differs from size {size}", key="crop_size")
        out_size, mode = int(size["height"]), "squash"
    else:
        raise FormatError(file, f"size {size}: expected {{'shortest_edge': S}} or {{'height': S, 'width': S}}", key="size")
    if out_size != image_size:
        raise FormatError(file, f"images are resized to {out_size} px but the model's image_size is {image_size}",
                          key="size")
    if not raw.get("do_normalize", True):
        raise FormatError(file, "do_normalize is false; open_clip always normalises", key="do_normalize")
    rescale = float(raw.get("rescale_factor", 1 / 255))
    if raw.get("do_rescale", True) is False or abs(rescale - 1 / 255) > 1e-12:
        raise FormatError(file, f"rescale {raw.get('do_rescale')}/{rescale}: open_clip scales pixels by 1/255",
                          key="rescale_factor")
    mean = [float(x) for x in raw.get("image_mean", CLIP_MEAN)]
    std = [float(x) for x in raw.get("image_std", CLIP_STD)]
    return {"size": out_size, "mode": "RGB", "mean": mean, "std": std, "interpolation": RESAMPLE[resample],
            "resize_mode": mode, "fill_color": 0}


# ----------------------------------------------------------------------------- open_clip -> HF
def hf_family(model_cfg: dict[str, Any]) -> str:
    """``clip`` for open_clip's own ViT, ``siglip`` for a timm ViT tower."""
    return "siglip" if (model_cfg.get("vision_cfg") or {}).get("timm_model_name") else "clip"


def hf_activation(quick_gelu: bool, act_kwargs: dict | None, where: str) -> str:
    if quick_gelu:
        return "quick_gelu"
    approximate = (act_kwargs or {}).get("approximate", "none")
    if set(act_kwargs or {}) - {"approximate"} or approximate not in ("none", "tanh"):
        raise ValueError(f"{where}: act_kwargs {act_kwargs} have no transformers equivalent")
    return "gelu_pytorch_tanh" if approximate == "tanh" else "gelu"


def clip_text_config(model_cfg: dict[str, Any], source: str, tokenizer: dict[str, int] | None = None) -> dict[str, Any]:
    """``CLIPTextConfig`` keyword arguments for an open_clip CLIP text tower.

    Raises:
        ValueError: settings transformers' CLIP text model cannot express.
    """
    text = model_cfg.get("text_cfg") or {}
    where = f"{source}: text_cfg"
    bad = [k for k in ("hf_model_name", "ls_init_value", "embed_cls", "no_causal_mask", "proj_bias", "qk_norm",
                       "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc",
                       "final_ln_after_pool") if text.get(k)]
    if text.get("pool_type", "argmax") not in ("argmax", "eos"):
        bad.append(f"pool_type={text['pool_type']!r}")
    if text.get("proj_type", "linear") != "linear":
        bad.append(f"proj_type={text['proj_type']!r}")
    if bad:
        raise ValueError(f"{where}: transformers CLIPTextModel cannot express {', '.join(bad)}")
    width, heads = int(text.get("width", 512)), int(text.get("heads", 8))
    tokenizer = tokenizer or {}
    pool = text.get("pool_type", "argmax")
    return dict(
        vocab_size=int(text.get("vocab_size", 49408)), hidden_size=width,
        intermediate_size=int(width * float(text.get("mlp_ratio", 4.0))), num_hidden_layers=int(text.get("layers", 12)),
        num_attention_heads=heads, max_position_embeddings=int(text.get("context_length", 77)),
        hidden_act=hf_activation(bool(model_cfg.get("quick_gelu")), text.get("act_kwargs"), where),
        layer_norm_eps=float((text.get("norm_kwargs") or {}).get("eps", 1e-5)),
        # transformers pools at argmax(input_ids) exactly when eos_token_id == 2 (its legacy convention)
        eos_token_id=2 if pool == "argmax" else int(text.get("eos_id", 2)),
        pad_token_id=int(tokenizer.get("pad_token_id", text.get("pad_id", 1))),
        bos_token_id=int(tokenizer.get("bos_token_id", 49406)),
    )


def siglip_text_config(model_cfg: dict[str, Any], source: str) -> dict[str, Any]:
    """``SiglipTextConfig`` keyword arguments for an open_clip SigLIP-style text tower.

    Raises:
        ValueError: not SigLIP's layout (bidirectional, last-token pooling, biased linear head of the same width).
    """
    text = model_cfg.get("text_cfg") or {}
    where = f"{source}: text_cfg"
    width = int(text.get("width", 512))
    bad = [k for k in ("hf_model_name", "ls_init_value", "embed_cls", "qk_norm", "scaled_cosine_attn", "scale_heads",
                       "scale_attn_inner", "scale_attn", "scale_fc", "final_ln_after_pool") if text.get(k)]
    for key, want in (("no_causal_mask", True), ("proj_bias", True), ("pool_type", "last")):
        if text.get(key) != want:
            bad.append(f"{key}={text.get(key)!r} (SigLIP: {want!r})")
    if int(model_cfg.get("embed_dim", 0)) != width:
        bad.append(f"embed_dim {model_cfg.get('embed_dim')} != width {width}")
    if bad:
        raise ValueError(f"{where}: transformers SiglipTextModel cannot express {', '.join(bad)}")
    return dict(
        vocab_size=int(text.get("vocab_size", 32000)), hidden_size=width,
        intermediate_size=int(width * float(text.get("mlp_ratio", 4.0))), num_hidden_layers=int(text.get("layers", 12)),
        num_attention_heads=int(text.get("heads", 8)), max_position_embeddings=int(text.get("context_length", 64)),
        hidden_act=hf_activation(False, text.get("act_kwargs"), where),
        layer_norm_eps=float((text.get("norm_kwargs") or {}).get("eps", 1e-6)),
        pad_token_id=int(text.get("pad_id", 1)),
    )


def siglip_vision_config(trunk: Any, image_size: int, source: str) -> dict[str, Any]:
    """``SiglipVisionConfig`` keyword arguments read off a built timm ViT (generated or stock name).

    Raises:
        ValueError: the trunk is not SigLIP's layout (the message names the part that differs).
    """
    from timm.layers.activations import GELU, GELUTanh, QuickGELU
    from torch import nn

    bad = []
    if getattr(trunk, "cls_token", None) is not None or getattr(trunk, "reg_token", None) is not None:
        bad.append("prefix tokens (class or register)")
    if getattr(trunk, "global_pool", None) != "map" or getattr(trunk, "attn_pool", None) is None:
        bad.append(f"global_pool={getattr(trunk, 'global_pool', None)!r} (SigLIP: 'map')")
    if not isinstance(getattr(trunk, "norm_pre", None), nn.Identity):
        bad.append("a pre-norm")
    if not isinstance(getattr(trunk, "fc_norm", nn.Identity()), nn.Identity):
        bad.append("fc_norm")
    blocks = getattr(trunk, "blocks", [])
    block = blocks[0] if len(blocks) else None
    if block is None or not isinstance(block.ls1, nn.Identity) or not isinstance(block.attn.q_norm, nn.Identity):
        bad.append("layer scale or qk-norm")
    if trunk.patch_embed.proj.bias is None:
        bad.append("patch embedding without bias")
    if getattr(trunk, "head", None) is not None and not isinstance(trunk.head, nn.Identity):
        bad.append("a classifier head")
    if bad:
        raise ValueError(f"{source}: this timm tower is not SigLIP's layout: {', '.join(bad)}")
    act = block.mlp.act
    if isinstance(act, GELUTanh) or (isinstance(act, nn.GELU) and act.approximate == "tanh"):
        hidden_act = "gelu_pytorch_tanh"
    elif isinstance(act, QuickGELU):
        hidden_act = "quick_gelu"
    elif isinstance(act, (nn.GELU, GELU)):
        hidden_act = "gelu"
    else:
        raise ValueError(f"{source}: activation {type(act).__name__} has no transformers equivalent")
    patch = trunk.patch_embed.proj.kernel_size
    if patch[0] != patch[1]:
        raise ValueError(f"{source}: patch size {tuple(patch)} is not square")
    return dict(
        hidden_size=int(trunk.embed_dim), intermediate_size=int(block.mlp.fc1.out_features),
        num_hidden_layers=len(blocks), num_attention_heads=int(block.attn.num_heads), num_channels=3,
        image_size=int(image_size), patch_size=int(patch[0]), hidden_act=hidden_act,
        layer_norm_eps=float(trunk.norm.eps), attention_dropout=0.0,
    )
