"""MMCLIP as a LLaVA vision tower: ``--vision_tower mmclip:<checkpoint dir>``.

:class:`MMCLIPVisionTower` has upstream ``CLIPVisionTower``'s constructor and members (the
contract is written down in :mod:`mmclip_plugin.tower.protocol`) but is built from an MMCLIP checkpoint
directory (see :meth:`mmclip_plugin.model.MMCLIPModel.save_pretrained`). This package never imports
``llava``: ``llava_patches`` registers the class with upstream's builder.

Layer selection follows upstream's ``hidden_states[mm_vision_select_layer]`` for a tower with L
blocks: ``hidden_states`` has L + 1 entries, entry 0 is the embedding output (patch embedding +
position embedding + pre-norm) and entry k >= 1 is the output of block k - 1. So -1 is the last
block, -2 (LLaVA-1.5's default) the penultimate one, 0 or -(L + 1) the embeddings. Blocks after the
selected one are never run (``forward_intermediates(..., stop_early=True)``), and the final norm,
pooling and projection are skipped.

``mm_vision_select_feature``: ``'patch'`` returns the H/p x W/p patch tokens only (for a tower
with a class token this is upstream's ``[:, 1:]``; a tower without one, e.g. SigLIP-style, loses
nothing); ``'cls_patch'`` also returns the prefix tokens (class token and any register tokens) in
front, like upstream's full hidden state.

Convolutional towers (a timm ResNet or other conv trunk, open_clip's ModifiedResNet) serve LLaVA the
same way: their hidden states are the feature maps stage by stage (entry 0 the first one, for a
ResNet the stem's; -1 the last stage, -2 the one before), and the selected map of shape
(C, H/s, W/s) becomes H/s x W/s patch tokens of width C, in row-major order. ``hidden_size`` and
``patch_size`` are then those of the selected stage (channels and stride), so the projector LLaVA
builds fits the stage chosen. Conv towers have no prefix tokens; stages after the selected one,
the pooling and the projection are never run.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mmclip_plugin.tower.image_processor import build_image_processor
from mmclip_plugin.tower.weights import (
    CHECKPOINT_ENV,
    CONFIG_ENV,
    MMCLIP_PREFIX,
    MMCLIPVisionConfig,
    default_config_file,
    is_mmclip_name,
    load_visual,
    read_vision_config,
    resolve_checkpoint,
)

__all__ = [
    "CHECKPOINT_ENV", "CONFIG_ENV", "MMCLIP_PREFIX", "SELECT_FEATURES", "MMCLIPVisionConfig", "MMCLIPVisionTower",
    "default_config_file", "is_mmclip_name", "load_visual", "read_vision_config", "resolve_checkpoint",
]

SELECT_FEATURES = ("patch", "cls_patch")


# ----------------------------------------------------------------------------- the tower
class MMCLIPVisionTower(nn.Module):
    """An MMCLIP checkpoint behind upstream LLaVA's ``CLIPVisionTower`` interface.

    Frozen by default, like upstream: parameters do not require grad, the forward runs without
    autograd and the encoder stays in eval mode. It is trainable when ``args.unfreeze_mm_vision_tower``
    (or ``trainable=True``) is set, or whenever a trainer sets ``requires_grad`` on its parameters:
    the forward builds a graph exactly when some tower parameter requires grad.

    Args:
        vision_tower: ``'mmclip:<checkpoint dir>'`` or ``'mmclip'`` (see :func:`resolve_checkpoint`).
        args: an object with ``mm_vision_select_layer``, optionally ``mm_vision_select_feature``
            (default ``'patch'``) and ``unfreeze_mm_vision_tower`` (LLaVA's model args or config).
        delay_load: read only the checkpoint's JSON now; :meth:`load_model` loads the weights.
        trainable: overrides ``args.unfreeze_mm_vision_tower`` when given.
    """

    def __init__(self, vision_tower: str, args: Any, delay_load: bool = False, trainable: bool | None = None):
        super().__init__()
        self.is_loaded = False
        self._gradient_checkpointing = False
        self.vision_tower_name = vision_tower
        self.select_layer = _select_layer(args)
        self.select_feature = getattr(args, "mm_vision_select_feature", None) or "patch"
        if self.select_feature not in SELECT_FEATURES:
            raise ValueError(
                f"mm_vision_select_feature={self.select_feature!r}; expected one of {list(SELECT_FEATURES)}"
            )
        self.checkpoint = resolve_checkpoint(vision_tower)
        geometry = read_vision_config(self.checkpoint)
        self.hidden_state_index = geometry.hidden_state_index(self.select_layer)
        self.cfg_only = geometry.for_hidden_state(self.hidden_state_index)
        self._trainable_on_load = bool(getattr(args, "unfreeze_mm_vision_tower", False)) if trainable is None else trainable
        if not delay_load or self._trainable_on_load:
            self.load_model()

    # ------------------------------------------------------------------------- loading
    def load_model(self, device_map: Any = None) -> None:
        """Load the checkpoint's vision encoder and image processor (a second call does nothing).

        Args:
            device_map: None (CPU), ``'auto'`` (CUDA when available), a device, a device index, or
                a dict mapping every module to one device (a tower is never split).
        """
        if self.is_loaded:
            return
        visual, preprocess_cfg = load_visual(self.checkpoint, device=_device_from_map(device_map))
        self.image_processor = build_image_processor(preprocess_cfg)
        self.vision_tower = visual
        self.is_loaded = True
        self.set_trainable(self._trainable_on_load)
        self.gradient_checkpointing = self._gradient_checkpointing

    def set_trainable(self, trainable: bool) -> None:
        """Freeze (upstream's default) or unfreeze every parameter of the encoder."""
        self._require_loaded("set_trainable")
        self.vision_tower.requires_grad_(trainable)
        self.vision_tower.train(self.training and trainable)

    @property
    def trainable(self) -> bool:
        """Whether any encoder parameter requires grad (then the forward builds a graph)."""
        return self.is_loaded and any(p.requires_grad for p in self.vision_tower.parameters())

    @property
    def gradient_checkpointing(self) -> bool:
        """Recompute the encoder's blocks in backward (only matters when it trains).

        transformers' ``gradient_checkpointing_enable()`` on the LLaVA model (``--gradient_checkpointing``)
        sets this attribute on every submodule that has one, so the tower follows LLaVA's flag.
        """
        return self._gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, enable: bool) -> None:
        self._gradient_checkpointing = bool(enable)
        if self.is_loaded:
            self.vision_tower.set_grad_checkpointing(self._gradient_checkpointing)

    def train(self, mode: bool = True) -> MMCLIPVisionTower:
        """A frozen encoder stays in eval mode whatever the surrounding model does."""
        self.training = mode
        if self.is_loaded:
            self.vision_tower.train(mode and self.trainable)
        return self

    # ------------------------------------------------------------------------- forward
    def forward(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """(B, 3, S, S) -> (B, N, D) in the input's dtype; a list of (3, S, S) -> a list of (1, N, D).

        Raises:
            ValueError: images of the wrong rank, channel count or size (the message gives the
                expected shape).
        """
        self._require_loaded("forward")
        if isinstance(images, (list, tuple)):
            if not images:
                raise ValueError("MMCLIPVisionTower got an empty list of images")
            for index, image in enumerate(images):
                if not isinstance(image, torch.Tensor) or image.ndim != 3:
                    raise ValueError(
                        f"image {index} of the list: expected a (3, {self.image_size}, {self.image_size}) tensor, "
                        f"got {tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}"
                    )
            batch = torch.stack([image.to(device=self.device, dtype=self.dtype) for image in images])
            features = self._features(batch)
            return [feature.unsqueeze(0).to(image.dtype) for feature, image in zip(features, images)]
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"MMCLIPVisionTower expects a tensor or a list of tensors, got {type(images).__name__}")
        return self._features(images.to(device=self.device, dtype=self.dtype)).to(images.dtype)

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        self._check_pixels(pixels)
        trainable = self.trainable
        if self.vision_tower.training != (self.training and trainable):
            # a trainer may flip requires_grad after .train(): keep "frozen means eval mode" true
            self.vision_tower.train(self.training and trainable)
        with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
            prefix, patches = self._hidden_state(pixels)
            if self.select_feature == "cls_patch" and prefix is not None:
                return torch.cat([prefix, patches], dim=1)
            return patches

    def _hidden_state(self, pixels: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(prefix tokens or None, patch tokens) of ``hidden_states[hidden_state_index]``."""
        index = self.hidden_state_index
        if self.cfg_only.is_conv:
            maps = _feature_map(self.vision_tower, self.cfg_only.backend, index)(pixels)  # (B, C, H/s, W/s)
            return None, maps.flatten(2).transpose(1, 2)  # (B, H/s * W/s, C), row-major cells
        if index == 0:
            tokens = _embedding_output(self.vision_tower, pixels)
            n_prefix = self.cfg_only.num_prefix_tokens
            return (tokens[:, :n_prefix] if n_prefix else None), tokens[:, n_prefix:]
        out = self.vision_tower.forward_intermediates(
            pixels,
            indices=[index - 1],
            stop_early=True,
            intermediates_only=True,
            output_fmt="NLC",
            output_extra_tokens=True,
        )
        prefix = out.get("image_intermediates_prefix")
        return (prefix[0] if prefix else None), out["image_intermediates"][0]

    def _check_pixels(self, pixels: torch.Tensor) -> None:
        size = self.image_size
        if pixels.ndim != 4 or pixels.shape[1] != 3 or pixels.shape[2] != size or pixels.shape[3] != size:
            raise ValueError(
                f"MMCLIP tower {self.vision_tower_name!r} expects images of shape (B, 3, {size}, {size}), "
                f"got {tuple(pixels.shape)}; preprocess them with tower.image_processor"
            )

    def _require_loaded(self, what: str) -> None:
        if not self.is_loaded:
            raise RuntimeError(f"MMCLIPVisionTower.{what}: the tower was delay-loaded; call load_model() first")

    # ------------------------------------------------------------------------- properties
    @property
    def dummy_feature(self) -> torch.Tensor:
        return torch.zeros(1, self.hidden_size, device=self.device, dtype=self.dtype)

    @property
    def dtype(self) -> torch.dtype:
        """The encoder's dtype; float32 (what ``load_model`` produces) before loading."""
        return next(self.vision_tower.parameters()).dtype if self.is_loaded else torch.float32

    @property
    def device(self) -> torch.device:
        """The encoder's device; CPU before loading."""
        return next(self.vision_tower.parameters()).device if self.is_loaded else torch.device("cpu")

    @property
    def config(self) -> MMCLIPVisionConfig:
        return self.cfg_only

    @property
    def hidden_size(self) -> int:
        return self.cfg_only.hidden_size

    @property
    def image_size(self) -> int:
        return self.cfg_only.image_size

    @property
    def num_patches_per_side(self) -> int:
        return self.cfg_only.image_size // self.cfg_only.patch_size

    @property
    def num_patches(self) -> int:
        return self.num_patches_per_side**2


def _select_layer(args: Any) -> int:
    value = getattr(args, "mm_vision_select_layer", None)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"args.mm_vision_select_layer must be an integer (LLaVA-1.5 uses -2), got {value!r}")
    return value


def _feature_map(visual: nn.Module, backend: str, index: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """pixels -> feature map ``index`` of a conv tower, running no stage after it."""
    if backend == "open_clip_resnet":
        # run by hand: open_clip 3.3's ModifiedResNet.forward_intermediates runs every stage when stop_early=True
        stages = [visual.stem, visual.layer1, visual.layer2, visual.layer3, visual.layer4][: index + 1]

        def resnet_map(pixels: torch.Tensor) -> torch.Tensor:
            for stage in stages:
                pixels = stage(pixels)
            return pixels

        return resnet_map

    def timm_map(pixels: torch.Tensor) -> torch.Tensor:
        out = visual.forward_intermediates(pixels, indices=[index], stop_early=True, intermediates_only=True,
                                           output_fmt="NCHW")
        return out["image_intermediates"][0]

    return timm_map


def _embedding_output(visual: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """``hidden_states[0]``: patch + position embeddings (and prefix tokens) after the pre-norm."""
    trunk = getattr(visual, "trunk", None)
    if trunk is not None:  # open_clip TimmModel around a timm VisionTransformer
        return trunk.norm_pre(trunk.patch_drop(trunk._pos_embed(trunk.patch_embed(pixels))))
    return visual._embeds(pixels)


def _device_from_map(device_map: Any) -> torch.device:
    if isinstance(device_map, dict):
        devices = {str(d) for d in device_map.values()}
        if len(devices) != 1:
            raise ValueError(f"device_map={device_map} splits the tower across devices; give one device")
        device_map = next(iter(device_map.values()))
    if device_map is None:
        return torch.device("cpu")
    if device_map in ("auto", "balanced", "balanced_low_0", "sequential"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device_map, int):
        return torch.device("cuda", device_map)
    return torch.device(device_map)
