"""timm ViTs of any geometry under self-describing names, so an open_clip config can hold them.

open_clip builds a timm image tower from a *name* only (``vision_cfg.timm_model_name``; its
``TimmModel`` passes no architecture arguments), and timm registers fixed geometries
(``vit_so400m_patch14_siglip_384``, ...). A SigLIP imported from transformers may have any width,
depth, size or activation, so its architecture is written into the name itself::

    mmclip_vit_i384_p14_w1152_d27_h16_m4304_e1e-06_gelutanh_map

(image size, patch size, width, depth, heads, MLP width, LayerNorm eps with ``.`` written ``p``,
activation, pooling; no class token, no pre-norm, biases everywhere: SigLIP's layout). Such a name is
registered with timm on first use by :func:`register_timm_names`, which every loader of this
package calls before building a model; outside this package, ``import mmclip_plugin.tower.timm_vit``
and call it on the config (or on the name) before ``open_clip.create_model``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import nn

PREFIX = "mmclip_vit_"
ACTIVATIONS = {"gelutanh": "gelu_tanh", "gelu": "gelu", "quickgelu": "quick_gelu"}
POOLS = ("map", "avg", "token")
_NAME = re.compile(
    r"^mmclip_vit_i(?P<image_size>\d+)_p(?P<patch_size>\d+)_w(?P<width>\d+)_d(?P<depth>\d+)_h(?P<heads>\d+)"
    r"_m(?P<mlp_width>\d+)_e(?P<eps>[0-9p]+e[-+]\d+)_(?P<act>[a-z]+)_(?P<pool>[a-z]+)$"
)


@dataclass(frozen=True)
class TimmViTSpec:
    """The geometry a generated name encodes (SigLIP layout: no class token, no pre-norm, biases on).

    Attributes:
        image_size: square input side in pixels.
        patch_size: square patch side.
        width: embedding width.
        depth: number of blocks.
        heads: attention heads.
        mlp_width: hidden width of every MLP (blocks and attention-pool head).
        eps: LayerNorm epsilon.
        act: ``gelu_tanh``, ``gelu`` or ``quick_gelu``.
        pool: ``map`` (SigLIP's attention-pool head), ``avg`` or ``token``.
    """

    image_size: int
    patch_size: int
    width: int
    depth: int
    heads: int
    mlp_width: int
    eps: float
    act: str = "gelu_tanh"
    pool: str = "map"

    def __post_init__(self) -> None:
        if self.act not in ACTIVATIONS.values():
            raise ValueError(f"activation {self.act!r}: expected one of {sorted(ACTIVATIONS.values())}")
        if self.pool not in POOLS:
            raise ValueError(f"pool {self.pool!r}: expected one of {list(POOLS)}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")

    @property
    def name(self) -> str:
        eps = repr(float(self.eps)).replace(".", "p")  # timm reads a '.' as 'name.pretrained_tag'
        if "e" not in eps:
            eps = f"{float(self.eps):e}".replace(".", "p")
        act = {v: k for k, v in ACTIVATIONS.items()}[self.act]
        return (f"{PREFIX}i{self.image_size}_p{self.patch_size}_w{self.width}_d{self.depth}_h{self.heads}"
                f"_m{self.mlp_width}_e{eps}_{act}_{self.pool}")

    def model_kwargs(self) -> dict[str, Any]:
        """``timm.models.vision_transformer.VisionTransformer`` arguments for this geometry."""
        return dict(
            img_size=self.image_size, patch_size=self.patch_size, embed_dim=self.width, depth=self.depth,
            num_heads=self.heads, mlp_ratio=mlp_ratio(self.width, self.mlp_width), class_token=False,
            global_pool=self.pool, qkv_bias=True, pre_norm=False, act_layer=self.act,
            norm_layer=partial(nn.LayerNorm, eps=self.eps),
        )


def mlp_ratio(width: int, mlp_width: int) -> float:
    """A ratio ``r`` with ``int(width * r) == mlp_width`` (open_clip and timm both size MLPs that way).

    ``mlp_width / width`` can land a hair below the integer after the multiplication (4304 / 1152 * 1152
    is 4303.999...), which would build an MLP one unit narrower than the weights.
    """
    ratio = mlp_width / width
    if int(width * ratio) != mlp_width:
        ratio = (mlp_width + 0.5) / width
    if int(width * ratio) != mlp_width:  # pragma: no cover - cannot happen for positive integers
        raise ValueError(f"no float ratio gives an MLP of {mlp_width} for width {width}")
    return ratio


def is_generated_name(name: str | None) -> bool:
    """True for a name made by :class:`TimmViTSpec` (exact prefix)."""
    return isinstance(name, str) and name.startswith(PREFIX)


def parse_name(name: str) -> TimmViTSpec:
    """The spec a generated name encodes.

    Raises:
        ValueError: the name has our prefix but not the full format (the message shows the format).
    """
    match = _NAME.match(name)
    if match is None:
        raise ValueError(
            f"timm model name {name!r} starts with {PREFIX!r} but is not of the form "
            f"{PREFIX}i<size>_p<patch>_w<width>_d<depth>_h<heads>_m<mlp width>_e<eps>_<act>_<pool>"
        )
    g = match.groupdict()
    if g["act"] not in ACTIVATIONS:
        raise ValueError(f"timm model name {name!r}: activation {g['act']!r}; expected one of {sorted(ACTIVATIONS)}")
    return TimmViTSpec(
        image_size=int(g["image_size"]), patch_size=int(g["patch_size"]), width=int(g["width"]),
        depth=int(g["depth"]), heads=int(g["heads"]), mlp_width=int(g["mlp_width"]),
        eps=float(g["eps"].replace("p", ".")), act=ACTIVATIONS[g["act"]], pool=g["pool"],
    )


def register_timm_name(name: str) -> None:
    """Register a generated name with timm (idempotent; other names are left alone)."""
    import timm
    from timm.models import register_model

    if not is_generated_name(name) or timm.is_model(name):
        return
    spec = parse_name(name)

    def create(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        from timm.models.vision_transformer import VisionTransformer

        if pretrained:
            raise ValueError(f"timm model {name!r} has no pretrained weights; its weights come from an MMCLIP checkpoint")
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        return VisionTransformer(**{**spec.model_kwargs(), **kwargs})

    create.__name__ = create.__qualname__ = name
    # listed with timm's own ViTs (register_model files an entry point under its module's name)
    create.__module__ = "timm.models.vision_transformer"
    register_model(create)


def register_timm_names(model_cfg: dict[str, Any] | None) -> None:
    """Register the generated timm name an open_clip ``model_cfg`` uses, if any."""
    vision = (model_cfg or {}).get("vision_cfg")
    if isinstance(vision, dict):
        register_timm_name(vision.get("timm_model_name") or "")

