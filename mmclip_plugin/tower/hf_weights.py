"""Weight names of transformers CLIP/SigLIP against open_clip, written once and used both ways.

A :class:`Rule` ties one or more transformers tensors to one or more open_clip tensors: the same
tensor, its transpose (projections: transformers stores ``Linear`` weights as (out, in), open_clip
keeps CLIP's projections as (in, out) matrices), or pieces of one packed tensor (q, k, v as
``in_proj_weight`` / timm's ``qkv``; SigLIP's pooling head packs q, k, v in one
``nn.MultiheadAttention`` where timm keeps ``q`` and ``kv``). :func:`rules_for` lists the rules of a
whole model; :func:`convert` applies them in either direction and checks every shape against the
model being filled, so a missing, surplus or misshapen tensor is an error naming the file and key.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from mmgeolm_core.io import FormatError

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HF_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# buffers transformers writes in some checkpoints and recomputes anyway
IGNORED_SUFFIXES = ("position_ids",)


@dataclass(frozen=True)
class Rule:
    """``hf`` tensors <-> ``oc`` tensors.

    Attributes:
        hf: transformers keys.
        oc: open_clip keys.
        op: ``same`` (equal up to size-1 dimensions), ``t`` (transposed) or ``cat`` (the single key on
            one side is the others concatenated along dimension 0, in ``parts`` proportions).
        parts: relative sizes of the pieces of a ``cat``.
    """

    hf: tuple[str, ...]
    oc: tuple[str, ...]
    op: str = "same"
    parts: tuple[int, ...] = ()

    def apply(self, tensors: list[torch.Tensor], to_hf: bool) -> list[torch.Tensor]:
        """Convert the tensors of one side (open_clip's when ``to_hf``) into the other side's."""
        if self.op == "same":
            return [tensors[0]]
        if self.op == "t":
            return [tensors[0].t()]
        targets = self.hf if to_hf else self.oc
        if len(targets) == 1:
            return [torch.cat(tensors, dim=0)]
        total = tensors[0].shape[0]
        unit, rest = divmod(total, sum(self.parts))
        if rest:
            raise ValueError(f"cannot split {total} rows into parts {self.parts}")
        return list(torch.split(tensors[0], [unit * p for p in self.parts], dim=0))


def _pair(hf: str, oc: str, op: str = "same") -> list[Rule]:
    """weight and bias of a Linear / LayerNorm / Conv pair."""
    return [Rule((f"{hf}.weight",), (f"{oc}.weight",), op), Rule((f"{hf}.bias",), (f"{oc}.bias",))]


def _qkv(hf: str, oc_weight: str, oc_bias: str) -> list[Rule]:
    return [Rule(tuple(f"{hf}.{n}_proj.weight" for n in "qkv"), (oc_weight,), "cat", (1, 1, 1)),
            Rule(tuple(f"{hf}.{n}_proj.bias" for n in "qkv"), (oc_bias,), "cat", (1, 1, 1))]


def _open_clip_block(hf: str, oc: str) -> list[Rule]:
    """transformers encoder layer <-> open_clip ``ResidualAttentionBlock``."""
    return [*_pair(f"{hf}.layer_norm1", f"{oc}.ln_1"),
            *_qkv(f"{hf}.self_attn", f"{oc}.attn.in_proj_weight", f"{oc}.attn.in_proj_bias"),
            *_pair(f"{hf}.self_attn.out_proj", f"{oc}.attn.out_proj"), *_pair(f"{hf}.layer_norm2", f"{oc}.ln_2"),
            *_pair(f"{hf}.mlp.fc1", f"{oc}.mlp.c_fc"), *_pair(f"{hf}.mlp.fc2", f"{oc}.mlp.c_proj")]


def _timm_block(hf: str, oc: str) -> list[Rule]:
    """transformers encoder layer <-> timm ``Block``."""
    return [*_pair(f"{hf}.layer_norm1", f"{oc}.norm1"),
            *_qkv(f"{hf}.self_attn", f"{oc}.attn.qkv.weight", f"{oc}.attn.qkv.bias"),
            *_pair(f"{hf}.self_attn.out_proj", f"{oc}.attn.proj"), *_pair(f"{hf}.layer_norm2", f"{oc}.norm2"),
            *_pair(f"{hf}.mlp.fc1", f"{oc}.mlp.fc1"), *_pair(f"{hf}.mlp.fc2", f"{oc}.mlp.fc2")]


def clip_vision_rules(layers: int, projection: bool) -> list[Rule]:
    """``CLIPVisionModel`` (``...WithProjection`` when ``projection``) <-> open_clip ``visual.*``."""
    v = "vision_model"
    rules = [Rule((f"{v}.embeddings.class_embedding",), ("visual.class_embedding",)),
             Rule((f"{v}.embeddings.patch_embedding.weight",), ("visual.conv1.weight",)),
             Rule((f"{v}.embeddings.position_embedding.weight",), ("visual.positional_embedding",)),
             *_pair(f"{v}.pre_layrnorm", "visual.ln_pre"), *_pair(f"{v}.post_layernorm", "visual.ln_post")]
    for i in range(layers):
        rules += _open_clip_block(f"{v}.encoder.layers.{i}", f"visual.transformer.resblocks.{i}")
    if projection:
        rules.append(Rule(("visual_projection.weight",), ("visual.proj",), "t"))
    return rules


def clip_rules(vision_layers: int, text_layers: int) -> list[Rule]:
    """``CLIPModel`` <-> open_clip ``CLIP``."""
    t = "text_model"
    rules = clip_vision_rules(vision_layers, projection=True) + [
        Rule((f"{t}.embeddings.token_embedding.weight",), ("token_embedding.weight",)),
        Rule((f"{t}.embeddings.position_embedding.weight",), ("positional_embedding",)),
        *_pair(f"{t}.final_layer_norm", "ln_final"),
        Rule(("text_projection.weight",), ("text_projection",), "t"),
        Rule(("logit_scale",), ("logit_scale",)),
    ]
    for i in range(text_layers):
        rules += _open_clip_block(f"{t}.encoder.layers.{i}", f"transformer.resblocks.{i}")
    return rules


def siglip_vision_rules(layers: int) -> list[Rule]:
    """``SiglipVisionModel`` <-> open_clip ``visual.trunk.*`` (timm ViT with attention-pool head)."""
    v, trunk = "vision_model", "visual.trunk"
    head, pool = f"{v}.head", f"{trunk}.attn_pool"
    rules = [*_pair(f"{v}.embeddings.patch_embedding", f"{trunk}.patch_embed.proj"),
             Rule((f"{v}.embeddings.position_embedding.weight",), (f"{trunk}.pos_embed",)),
             *_pair(f"{v}.post_layernorm", f"{trunk}.norm"),
             Rule((f"{head}.probe",), (f"{pool}.latent",)),
             Rule((f"{head}.attention.in_proj_weight",), (f"{pool}.q.weight", f"{pool}.kv.weight"), "cat", (1, 2)),
             Rule((f"{head}.attention.in_proj_bias",), (f"{pool}.q.bias", f"{pool}.kv.bias"), "cat", (1, 2)),
             *_pair(f"{head}.attention.out_proj", f"{pool}.proj"), *_pair(f"{head}.layernorm", f"{pool}.norm"),
             *_pair(f"{head}.mlp.fc1", f"{pool}.mlp.fc1"), *_pair(f"{head}.mlp.fc2", f"{pool}.mlp.fc2")]
    for i in range(layers):
        rules += _timm_block(f"{v}.encoder.layers.{i}", f"{trunk}.blocks.{i}")
    return rules


def siglip_rules(vision_layers: int, text_layers: int) -> list[Rule]:
    """``SiglipModel`` <-> open_clip ``CustomTextCLIP`` (timm image tower, open_clip text tower)."""
    t = "text_model"
    rules = siglip_vision_rules(vision_layers) + [
        Rule((f"{t}.embeddings.token_embedding.weight",), ("text.token_embedding.weight",)),
        Rule((f"{t}.embeddings.position_embedding.weight",), ("text.positional_embedding",)),
        *_pair(f"{t}.final_layer_norm", "text.ln_final"), *_pair(f"{t}.head", "text.text_projection"),
        Rule(("logit_scale",), ("logit_scale",)), Rule(("logit_bias",), ("logit_bias",)),
    ]
    for i in range(text_layers):
        rules += _open_clip_block(f"{t}.encoder.layers.{i}", f"text.transformer.resblocks.{i}")
    return rules


# ----------------------------------------------------------------------------- reading HF weights
def read_hf_state(directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor of a transformers checkpoint directory, and the file each key came from.

    Reads ``model.safetensors`` or ``pytorch_model.bin``, or their sharded ``*.index.json`` form.

    Raises:
        InputError: no weights file, an unreadable one, or an index naming a missing shard.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    files: list[Path] = []
    for index_name in HF_INDEX_FILES:
        index = directory / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
                raise FormatError(index, f"not a weight index with a 'weight_map': {exc}") from None
            files = [directory / name for name in dict.fromkeys(weight_map.values())]
            for shard in files:
                if not shard.is_file():
                    raise FormatError(index, f"names shard {shard.name}, which does not exist", key="weight_map")
            break
    else:
        files = [directory / name for name in HF_WEIGHT_FILES if (directory / name).is_file()][:1]
    if not files:
        raise FormatError(directory, f"no weights: expected {' or '.join(HF_WEIGHT_FILES)} (or a sharded index "
                                     f"{' / '.join(HF_INDEX_FILES)})")
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for file in files:
        try:
            part = load_file(str(file)) if file.suffix == ".safetensors" else torch.load(
                file, map_location="cpu", weights_only=True)
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise FormatError(file, f"unreadable weights: {exc}") from None
        for key, value in part.items():
            if not key.endswith(IGNORED_SUFFIXES):
                state[key] = value
                origin[key] = str(file)
    return state, origin


# ----------------------------------------------------------------------------- converting
def convert(rules: list[Rule], source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], to_hf: bool,
            origin: Mapping[str, str] | None = None, source_name: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Fill ``target``'s keys from ``source`` through ``rules``.

    Args:
        rules: the model's rules.
        source: the state dict read (transformers' unless ``to_hf``).
        target: the state dict of the model to fill (only its keys and shapes are used).
        to_hf: direction.
        origin: key -> file of ``source`` (for messages).
        source_name: what ``source`` is, when ``origin`` does not say.

    Returns:
        The tensors for ``target``, each with ``target``'s shape.

    Raises:
        FormatError: a key of ``source`` missing or left over, or a tensor of the wrong shape (naming
            the file and the key).
    """
    origin = origin or {}
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def where(key: str) -> str:
        return origin.get(key, source_name)

    for rule in rules:
        src_keys, dst_keys = (rule.oc, rule.hf) if to_hf else (rule.hf, rule.oc)
        missing = [k for k in src_keys if k not in source]
        if missing:
            raise FormatError(_file_of(origin) if origin else source_name,
                              f"missing weight (needed for {', '.join(dst_keys)})", key=missing[0])
        used.update(src_keys)
        try:
            values = rule.apply([source[k] for k in src_keys], to_hf)
        except (RuntimeError, ValueError) as exc:
            raise FormatError(where(src_keys[0]), f"cannot convert: {exc}", key=src_keys[0]) from None
        for key, value in zip(dst_keys, values):
            if key not in target:
                raise KeyError(f"internal mapping error: {key} is not a parameter of the target model")
            want = target[key].shape
            if tuple(value.shape) != tuple(want):
                if _squeezed(value.shape) != _squeezed(want):
                    raise FormatError(where(src_keys[0]), f"shape {tuple(source[src_keys[0]].shape)} does not fit "
                                      f"{key} of shape {tuple(want)} (expected from the config)", key=src_keys[0])
                value = value.reshape(want)
            out[key] = value.detach().clone().contiguous()
    extra = sorted(set(source) - used)
    if extra:
        raise FormatError(where(extra[0]), f"{len(extra)} unexpected weight(s) that this architecture does not have "
                          f"({', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''})", key=extra[0])
    unfilled = sorted(k for k in target if k not in out and _is_weight(k))
    if unfilled:
        raise KeyError(f"internal mapping error: no rule fills {unfilled[:5]}")
    return out


def _file_of(origin: Mapping[str, str]) -> str:
    files = sorted(set(origin.values()))
    return files[0] if len(files) == 1 else ", ".join(files)


def _squeezed(shape: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _is_weight(key: str) -> bool:
    # non-persistent buffers (open_clip's causal attn_mask) are never in a state dict; position ids are ignored
    return not key.endswith(IGNORED_SUFFIXES)
