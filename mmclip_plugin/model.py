"""The MMCLIP model wrapper: a narrow interface over an open_clip model.

Losses, trainer, evaluation and the LLaVA tower only talk to :class:`MMCLIPModel`; the open_clip
model stays inside (``.clip``), so another backend (transformers CLIP/SigLIP/AltCLIP) can be added
by implementing the same methods.

A saved checkpoint directory is a valid open_clip ``local-dir:`` (``open_clip_config.json`` with
``model_cfg`` and ``preprocess_cfg``, weights in ``open_clip_model.safetensors``) plus
``mmclip_config.json`` (the :class:`ModelConfig` used and free-form metadata from the trainer), and
the tokenizer's own files when it is a transformers tokenizer (SigLIP, imported models), which open_clip
reads from the directory itself. A checkpoint with a generated timm tower name (an imported SigLIP,
see :mod:`mmclip_plugin.tower.timm_vit`) needs that name registered before plain open_clip builds it.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from torch import nn

from mmclip_plugin.checkpoint_files import (
    MMCLIP_CONFIG,
    MMCLIP_FORMAT,
    MMCLIP_VERSION,
    OPEN_CLIP_CONFIG,
    WEIGHTS_FILE,
    check_weights_file,
    model_config_with,
    read_mmclip_model_config,
    read_open_clip_config,
    weights_mismatch,
)
from mmclip_plugin.config import HF_PREFIX, ModelConfig
from mmclip_plugin.tower.timm_vit import register_timm_names
from mmgeolm_core.config import ConfigError
from mmgeolm_core.errors import UnknownNameError
from mmgeolm_core.io import atomic_directory, atomic_write_json

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
__all__ = ["MMCLIP_CONFIG", "OPEN_CLIP_CONFIG", "WEIGHTS_FILE", "MMCLIPModel", "check_checkpoint_dir", "create_model",
           "is_checkpoint_dir", "load_checkpoint", "register_model_configs"]

_registered_dirs: set[Path] = set()


def register_model_configs(path: str | os.PathLike = MODEL_CONFIG_DIR) -> None:
    """Register architecture JSON files (a file or a folder of them) with open_clip, once per path."""
    path = Path(path).resolve()
    if path in _registered_dirs:
        return
    if not path.exists():
        raise FileNotFoundError(f"architecture config {path} does not exist")
    open_clip.add_model_config(path)
    _registered_dirs.add(path)


class MMCLIPModel(nn.Module):
    """An open_clip model behind the few methods MMCLIP needs."""

    def __init__(self, clip: nn.Module, model_cfg: dict, preprocess_cfg: dict, tokenizer, config: ModelConfig):
        super().__init__()
        self.clip = clip
        self.model_cfg = model_cfg  # the open_clip architecture dict, saved with every checkpoint
        self.preprocess_cfg = preprocess_cfg  # size, mean, std, interpolation, resize_mode
        self.tokenizer = tokenizer
        self.config = config
        self.preprocess_train = image_transform_v2(
            PreprocessCfg(**preprocess_cfg), is_train=True
        )
        self.preprocess_val = image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False)

    # ----------------------------------------------------------------------------- encoders
    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D) embeddings."""
        return self.clip.encode_image(images, normalize=normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, L) token ids -> (B, D) embeddings."""
        return self.clip.encode_text(tokens, normalize=normalize)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Captions -> (B, context_length) token ids."""
        return self.tokenizer(texts)

    def forward_intermediates(self, images: torch.Tensor, indices: int | list[int] | None = None, **kwargs) -> dict:
        """Vision hidden states; see open_clip's ``forward_intermediates`` (``image_intermediates`` etc.)."""
        return self.clip.forward_intermediates(image=images, image_indices=indices, **kwargs)

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.clip.logit_scale

    @property
    def logit_bias(self) -> nn.Parameter | None:
        return getattr(self.clip, "logit_bias", None)

    def ensure_logit_bias(self, init: float | None = None) -> nn.Parameter:
        """Give the model a learnable logit bias (sigmoid losses need one) if it has none."""
        if self.logit_bias is None:
            value = self.config.init_logit_bias if init is None else init
            self.clip.logit_bias = nn.Parameter(torch.full_like(self.clip.logit_scale.detach(), value))
            self.model_cfg["init_logit_bias"] = value
        return self.clip.logit_bias

    # ----------------------------------------------------------------------------- geometry
    @property
    def image_size(self) -> int:
        size = self.preprocess_cfg["size"]
        return int(size if isinstance(size, int) else size[0])

    @property
    def device(self) -> torch.device:
        return self.clip.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.clip.visual.parameters()).dtype

    # ----------------------------------------------------------------------------- freezing
    def train(self, mode: bool = True) -> MMCLIPModel:
        """Train mode, except the image tower's batch norms when ``config.freeze_bn_stats``."""
        super().train(mode)
        if mode and self.config.freeze_bn_stats:
            for module in self.clip.visual.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()  # normalise with the running statistics and leave them as they are
        return self

    def apply_freezing(self) -> None:
        """Apply the lock/freeze options of :attr:`config` (idempotent)."""
        cfg = self.config
        if cfg.lock_text:
            self.clip.lock_text_tower(unlocked_layers=cfg.lock_text_unlocked_layers, freeze_layer_norm=True)
        if cfg.freeze_vision_blocks:
            self._freeze_vision_blocks(cfg.freeze_vision_blocks)
        if cfg.grad_checkpointing:
            self.clip.set_grad_checkpointing(True)

    def _freeze_vision_blocks(self, count: int) -> None:
        """Freeze the patch embedding, position/prefix embeddings, pre-norm and the first ``count`` blocks."""
        visual = self.clip.visual
        trunk = getattr(visual, "trunk", None)  # a timm ViT (SigLIP) inside open_clip's TimmModel
        if trunk is not None and hasattr(trunk, "blocks") and hasattr(trunk, "patch_embed"):
            blocks, stem, names, owner = trunk.blocks, [trunk.patch_embed, trunk.norm_pre], ("cls_token", "reg_token",
                                                                                             "pos_embed"), trunk
        else:
            blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
            if blocks is None:
                raise ValueError(
                    f"model.freeze_vision_blocks={count} needs a ViT tower (open_clip VisionTransformer or timm ViT); "
                    f"{type(visual).__name__} has no blocks"
                )
            stem, names, owner = [visual.conv1, getattr(visual, "ln_pre", nn.Identity())], (
                "class_embedding", "positional_embedding"), visual
        if count > len(blocks):
            raise ValueError(f"model.freeze_vision_blocks={count} > {len(blocks)} vision blocks")
        for module in [*stem, *blocks[:count]]:
            module.requires_grad_(False)
        for name in names:
            if isinstance(getattr(owner, name, None), nn.Parameter):
                getattr(owner, name).requires_grad_(False)

    # ----------------------------------------------------------------------------- save / load
    def save_pretrained(self, directory: str | os.PathLike, metadata: dict | None = None) -> Path:
        """Write an MMCLIP checkpoint directory atomically (a temp dir renamed into place)."""
        with atomic_directory(directory) as tmp:
            self.write_files(tmp, metadata)
        return Path(directory)

    def write_files(self, directory: Path, metadata: dict | None = None) -> None:
        """Write the checkpoint's files (weights, open_clip config, MMCLIP config) into an existing directory."""
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous().cpu() for k, v in self.clip.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
        atomic_write_json(directory / OPEN_CLIP_CONFIG, {"model_cfg": self.model_cfg, "preprocess_cfg": self.preprocess_cfg})
        if hasattr(self.tokenizer, "save_pretrained"):
            # a transformers tokenizer (open_clip HFTokenizer): local-dir: loading reads it from the directory
            self.tokenizer.save_pretrained(str(directory))
        atomic_write_json(directory / MMCLIP_CONFIG, {"format": MMCLIP_FORMAT, "version": MMCLIP_VERSION,
                                                      "model": dataclasses.asdict(self.config), "metadata": metadata or {}})


def is_checkpoint_dir(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / OPEN_CLIP_CONFIG).is_file() and (path / WEIGHTS_FILE).is_file()


def create_model(config: ModelConfig | None = None, device: str | torch.device = "cpu") -> MMCLIPModel:
    """Build an :class:`MMCLIPModel` from a :class:`ModelConfig` (random init, pretrained tag, or checkpoint)."""
    config = config or ModelConfig()
    if config.pretrained and config.pretrained.startswith(HF_PREFIX):
        from mmclip_plugin.tower.hf_import import build_model_from_hf

        if config.force_image_size:
            raise ValueError("model.force_image_size cannot be combined with pretrained: hf:<dir> (the size is the "
                             "transformers model's)")
        return build_model_from_hf(config.pretrained[len(HF_PREFIX):], config, device=device)
    register_model_configs()
    if config.arch_json:
        register_model_configs(config.arch_json)
    kwargs: dict[str, Any] = {}
    if config.force_image_size:
        kwargs["force_image_size"] = config.force_image_size
    name = config.name
    if name.startswith("local-dir:"):
        path = check_checkpoint_dir(name[len("local-dir:") :])
        model_cfg = read_open_clip_config(path)["model_cfg"]
        if "embed_dim" not in model_cfg:
            raise ConfigError("missing (the embedding width of both towers)", key="model_cfg.embed_dim",
                              source=str(path / OPEN_CLIP_CONFIG))
        check_weights_file(path)
        register_timm_names(model_cfg)
    elif name.startswith("hf-hub:"):
        pass  # open_clip fetches the architecture from the hub
    elif open_clip.get_model_config(name) is None:
        raise UnknownNameError(f"unknown open_clip model {name!r}; known: {', '.join(open_clip.list_models())} "
                               f"(or local-dir:<checkpoint>, or a JSON file registered with model.arch_json)")
    else:
        register_timm_names(open_clip.get_model_config(name))
    try:
        clip, _, _ = open_clip.create_model_and_transforms(name, pretrained=config.pretrained, device=device, **kwargs)
    except RuntimeError as exc:
        if not (name.startswith("local-dir:") and str(exc).startswith("Error(s) in loading state_dict")):
            raise
        raise weights_mismatch(name[len("local-dir:") :], exc) from None
    model_cfg = open_clip.get_model_config(name)
    if model_cfg is None:
        raise ValueError(f"unknown open_clip model {name!r}; known: {', '.join(open_clip.list_models())}")
    if config.force_image_size:
        model_cfg["vision_cfg"]["image_size"] = config.force_image_size
    preprocess_cfg = dataclasses.asdict(PreprocessCfg(**clip.visual.preprocess_cfg))
    tokenizer = open_clip.get_tokenizer(name)
    model = MMCLIPModel(clip, model_cfg, preprocess_cfg, tokenizer, config)
    model.apply_freezing()
    return model


def check_checkpoint_dir(path: str | os.PathLike) -> Path:
    """``path`` if it is a readable MMCLIP/open_clip checkpoint directory; every file is checked here (see
    :mod:`mmclip_plugin.checkpoint_files`), so each reader refuses a bad one with the same message.

    Raises:
        FileNotFoundError: the directory or one of its two required files is missing.
        FormatError: a JSON file is empty or not JSON (the weights are checked where they are loaded).
        ConfigError: a misspelt key or a bad value in ``open_clip_config.json`` / ``mmclip_config.json``.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"MMCLIP checkpoint directory {path} does not exist")
    missing = [f for f in (OPEN_CLIP_CONFIG, WEIGHTS_FILE) if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path} is not an MMCLIP checkpoint: missing {', '.join(missing)} "
            f"(expected {OPEN_CLIP_CONFIG} and {WEIGHTS_FILE}, as written by MMCLIPModel.save_pretrained)"
        )
    read_open_clip_config(path)
    read_mmclip_model_config(path)
    return path


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu", **overrides: Any) -> MMCLIPModel:
    """Load a directory written by :meth:`MMCLIPModel.save_pretrained`.

    The saved :class:`ModelConfig` is restored (freezing options included) with ``overrides`` applied,
    but the architecture and weights always come from the directory itself.
    """
    path = check_checkpoint_dir(path).resolve()
    config = model_config_with(read_mmclip_model_config(path), str(path / MMCLIP_CONFIG), **overrides,
                               name=f"local-dir:{path}", pretrained=None, arch_json=None, force_image_size=None)
    return create_model(config, device=device)
