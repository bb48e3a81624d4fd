"""Where an MMCLIP tower's weights come from: tower names, the cheap geometry config, the weights.

- :func:`resolve_checkpoint` turns ``mmclip:<dir>`` / bare ``mmclip`` into a checked directory;
- :func:`read_vision_config` reads the tower geometry from the checkpoint's JSON, without weights
  (what a delay-loaded tower reports as ``config``);
- :func:`load_visual` builds only the image tower and reads only its tensors.

Four kinds of open_clip image tower (``MMCLIPVisionConfig.backend``): open_clip's own ViT
(``open_clip_vit``), a timm ViT (``timm_vit``), a timm convolutional trunk such as a ResNet
(``timm_conv``) and open_clip's ``ModifiedResNet`` (``open_clip_resnet``, the RN50 family). A ViT's
hidden states are its embeddings and the output of each block, all of one width; a conv tower's
are its feature maps, stage by stage (timm's ``feature_info``; for a ResNet the stem, then four
stages), each with its own channel count and stride.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmclip_plugin.checkpoint_files import check_weights_file, read_open_clip_config, weights_mismatch
from mmclip_plugin.model import OPEN_CLIP_CONFIG, check_checkpoint_dir, is_checkpoint_dir
from mmclip_plugin.tower.timm_vit import register_timm_name, register_timm_names

logger = logging.getLogger(__name__)

MMCLIP_PREFIX = "mmclip"
CHECKPOINT_ENV = "MMCLIP_CHECKPOINT"
CONFIG_ENV = "MMGEOLM_CONFIG"
DEFAULT_CONFIG_FILE = Path("~/.config/mmgeolm/config.yaml")
BACKENDS = ("open_clip_vit", "timm_vit", "timm_conv", "open_clip_resnet")


# ----------------------------------------------------------------------------- names
def is_mmclip_name(name: str) -> bool:
    """True for ``"mmclip"`` and ``"mmclip:<dir>"`` (exact prefix, never a substring match)."""
    return isinstance(name, str) and (name == MMCLIP_PREFIX or name.startswith(MMCLIP_PREFIX + ":"))


def default_config_file() -> Path:
    """The user config file read for a bare ``mmclip``: ``$MMGEOLM_CONFIG`` or ``~/.config/mmgeolm/config.yaml``."""
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_FILE).expanduser()


def resolve_checkpoint(name: str) -> Path:
    """The checkpoint directory a tower name points to, checked to be a readable MMCLIP checkpoint.

    ``mmclip:<dir>`` names the directory itself (``~`` expanded; relative paths are taken from the
    current directory, so store absolute ones in LLaVA configs). Bare ``mmclip`` reads
    ``$MMCLIP_CHECKPOINT``, else the ``checkpoint`` key of :func:`default_config_file`. The directory
    may also be an ``mmclip-train`` output directory: its ``final/`` is used, else its newest
    checkpoint, and the choice is logged (see :func:`mmclip_plugin.checkpoint.resolve_model_dir`).

    Raises:
        ValueError: not an mmclip name, an empty path, or a malformed config file.
        FileNotFoundError: nothing configured for bare ``mmclip``, or the directory is missing or
            lacks a checkpoint file (the message names the path and the missing file).
    """
    if not is_mmclip_name(name):
        raise ValueError(f"{name!r} is not an MMCLIP tower name; expected 'mmclip' or 'mmclip:<checkpoint dir>'")
    if name == MMCLIP_PREFIX:
        path = _default_checkpoint()
    else:
        raw = name[len(MMCLIP_PREFIX) + 1 :]
        if not raw.strip():
            raise ValueError(f"tower name {name!r} has an empty checkpoint path; expected 'mmclip:<checkpoint dir>'")
        path = Path(raw).expanduser()
    # absolute now, so a later change of directory cannot change which checkpoint load_model() reads
    path = path.absolute()
    if not is_checkpoint_dir(path):
        from mmclip_plugin.checkpoint import resolve_model_dir

        chosen = resolve_model_dir(path)
        if chosen != path:
            logger.info("vision tower %s: %s is a training run; using %s", name, path, chosen)
        path = chosen
    return check_checkpoint_dir(path)


def _default_checkpoint() -> Path:
    env = os.environ.get(CHECKPOINT_ENV)
    if env:
        return Path(env).expanduser()
    config_file = default_config_file()
    if config_file.is_file():
        import yaml

        try:
            data = yaml.safe_load(config_file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{config_file} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{config_file} must hold a mapping with a 'checkpoint' key, got {type(data).__name__}")
        if data.get("checkpoint"):
            return Path(str(data["checkpoint"])).expanduser()
    raise FileNotFoundError(
        f"vision tower 'mmclip' names no checkpoint: set ${CHECKPOINT_ENV} to an MMCLIP checkpoint directory, "
        f"or put 'checkpoint: <dir>' in {config_file} (override that file's location with ${CONFIG_ENV}), "
        f"or use 'mmclip:<checkpoint dir>'"
    )


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class MMCLIPVisionConfig:
    """The tower geometry, read from a checkpoint's JSON without loading its weights.

    Attributes:
        checkpoint: the checkpoint directory.
        backend: one of :data:`BACKENDS` (see the module docstring).
        image_size: square input side in pixels.
        patch_size: square patch side in pixels; for a conv tower the stride of the hidden state
            selected (:meth:`for_hidden_state`), each cell of its feature map being one patch token.
        hidden_size: width of the hidden states; for a conv tower the channels of the one selected.
        num_hidden_layers: transformer blocks, or conv stages after the first feature map
            (``hidden_states`` has one more entry).
        num_prefix_tokens: tokens in front of the patches (class + register tokens; 0 for conv towers).
        has_class_token: whether one of the prefix tokens is a class token.
        feature_channels: channels of every hidden state (conv towers; empty for ViTs, all of one width).
        feature_reductions: stride of every hidden state in pixels (conv towers; empty for ViTs).
    """

    checkpoint: str
    backend: str
    image_size: int
    patch_size: int
    hidden_size: int
    num_hidden_layers: int
    num_prefix_tokens: int
    has_class_token: bool
    feature_channels: tuple[int, ...] = ()
    feature_reductions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"{self.checkpoint}: backend {self.backend!r}; expected one of {list(BACKENDS)}")
        # A patch grid that does not tile the image drops the remainder, as the convolution does (SigLIP
        # so400m: 384 px / 14 px patches -> 27 x 27 = 729 patches), so any sizes with one patch fit.
        if self.patch_size > self.image_size:
            raise ValueError(f"{self.checkpoint}: patch_size {self.patch_size} > image_size {self.image_size}")

    @property
    def is_conv(self) -> bool:
        """True for convolutional towers, whose hidden states are feature maps of different widths."""
        return bool(self.feature_channels)

    def hidden_state_index(self, select_layer: int) -> int:
        """Upstream's ``hidden_states[select_layer]`` as an index in 0..L (0: embeddings or the first feature map).

        Raises:
            ValueError: ``select_layer`` is outside ``-(L + 1)..L``.
        """
        n = self.num_hidden_layers
        index = select_layer if select_layer >= 0 else n + 1 + select_layer
        if not 0 <= index <= n:
            unit = "stages after the first feature map" if self.is_conv else "blocks"
            raise ValueError(
                f"mm_vision_select_layer={select_layer} is out of range for {self.checkpoint} with {n} {unit} "
                f"({n + 1} hidden states): expected {-(n + 1)}..{n}"
            )
        return index

    def for_hidden_state(self, index: int) -> MMCLIPVisionConfig:
        """The geometry LLaVA sees when it takes hidden state ``index`` (a conv stage's channels and stride)."""
        if not self.is_conv:
            return self
        return replace(self, hidden_size=self.feature_channels[index], patch_size=self.feature_reductions[index])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_vision_config(checkpoint: str | os.PathLike) -> MMCLIPVisionConfig:
    """Geometry of a checkpoint's vision tower, from ``open_clip_config.json`` (timm trunks are built on
    the meta device, which allocates nothing).

    Raises:
        ValueError: the checkpoint has no vision tower, or one of a kind the tower cannot serve.
    """
    path = check_checkpoint_dir(checkpoint)
    cfg_file = path / OPEN_CLIP_CONFIG
    cfg = read_open_clip_config(path)
    model_cfg = cfg["model_cfg"]
    vision = model_cfg.get("vision_cfg")
    if not isinstance(vision, dict):
        raise ValueError(f"{cfg_file}: model_cfg has no 'vision_cfg'; an MMCLIP tower needs an image encoder")
    size = _square(cfg.get("preprocess_cfg", {}).get("size", vision.get("image_size", 224)), cfg_file, "preprocess_cfg.size")
    if vision.get("timm_model_name"):
        return _timm_config(path, vision["timm_model_name"], size)
    if isinstance(vision.get("layers"), (list, tuple)):
        return _resnet_config(path, vision, size)
    arch_size = _square(vision.get("image_size", 224), cfg_file, "vision_cfg.image_size")
    if arch_size != size:
        raise ValueError(
            f"{cfg_file}: preprocess_cfg.size {size} differs from vision_cfg.image_size {arch_size}; "
            f"the tower's position embeddings fit {arch_size} px only"
        )
    if vision.get("attentional_pool"):
        raise ValueError(f"{cfg_file}: vision_cfg.attentional_pool is not supported by the LLaVA tower")
    return MMCLIPVisionConfig(
        checkpoint=str(path),
        backend="open_clip_vit",
        image_size=size,
        patch_size=_square(vision.get("patch_size", 16), cfg_file, "vision_cfg.patch_size"),
        hidden_size=int(vision.get("width", 768)),
        num_hidden_layers=int(vision.get("layers", 12)),
        num_prefix_tokens=1,  # open_clip's VisionTransformer always prepends a class token
        has_class_token=True,
    )


def _square(value: Any, where: Path, key: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"{where}: {key}={list(value)}; LLaVA towers need square images and patches")
        value = value[0]
    return int(value)


def _timm_config(path: Path, timm_name: str, image_size: int) -> MMCLIPVisionConfig:
    import timm

    register_timm_name(timm_name)
    with torch.device("meta"):
        try:
            trunk = timm.create_model(timm_name, pretrained=False, weight_init="skip")
        except TypeError:  # a timm model without the weight_init option (a conv net)
            trunk = timm.create_model(timm_name, pretrained=False)
    if not hasattr(trunk, "blocks") or not hasattr(trunk, "patch_embed"):
        return _timm_conv_config(path, timm_name, trunk, image_size)
    return MMCLIPVisionConfig(
        checkpoint=str(path),
        backend="timm_vit",
        image_size=image_size,
        patch_size=_square(trunk.patch_embed.patch_size, path / OPEN_CLIP_CONFIG, "timm patch_size"),
        hidden_size=int(trunk.embed_dim),
        num_hidden_layers=len(trunk.blocks),
        num_prefix_tokens=int(trunk.num_prefix_tokens),
        has_class_token=bool(trunk.has_class_token),
    )


def _timm_conv_config(path: Path, timm_name: str, trunk: nn.Module, image_size: int) -> MMCLIPVisionConfig:
    """A timm conv trunk: its hidden states are the feature maps timm lists in ``feature_info``."""
    info = getattr(trunk, "feature_info", None)
    if not info or not hasattr(trunk, "forward_intermediates"):
        raise ValueError(
            f"{path / OPEN_CLIP_CONFIG}: timm model {timm_name!r} is neither a ViT (blocks, patch_embed) nor a "
            f"conv net with feature_info and forward_intermediates; the LLaVA tower cannot take its patch tokens"
        )
    channels = tuple(int(f["num_chs"]) for f in info)
    reductions = tuple(int(f["reduction"]) for f in info)
    return _conv_config(path, "timm_conv", image_size, channels, reductions)


def _resnet_config(path: Path, vision: dict[str, Any], image_size: int) -> MMCLIPVisionConfig:
    """open_clip's ModifiedResNet: the stem (stride 4) then four bottleneck stages (x4 expansion)."""
    width = int(vision.get("width", 64))
    arch_size = _square(vision.get("image_size", 224), path / OPEN_CLIP_CONFIG, "vision_cfg.image_size")
    if arch_size != image_size:
        raise ValueError(
            f"{path / OPEN_CLIP_CONFIG}: preprocess_cfg.size {image_size} differs from vision_cfg.image_size "
            f"{arch_size}; the ResNet's attention pool fits {arch_size} px only"
        )
    channels = (width, 4 * width, 8 * width, 16 * width, 32 * width)
    return _conv_config(path, "open_clip_resnet", image_size, channels, (4, 4, 8, 16, 32))


def _conv_config(path: Path, backend: str, image_size: int, channels: tuple[int, ...],
                 reductions: tuple[int, ...]) -> MMCLIPVisionConfig:
    coarse = max(reductions)
    if image_size % coarse:
        raise ValueError(
            f"{path / OPEN_CLIP_CONFIG}: image size {image_size} is not a multiple of the tower's coarsest stride "
            f"{coarse}; its feature maps would not tile the image exactly"
        )
    return MMCLIPVisionConfig(
        checkpoint=str(path),
        backend=backend,
        image_size=image_size,
        patch_size=reductions[-1],
        hidden_size=channels[-1],
        num_hidden_layers=len(channels) - 1,
        num_prefix_tokens=0,
        has_class_token=False,
        feature_channels=channels,
        feature_reductions=reductions,
    )


# ----------------------------------------------------------------------------- weights
def load_visual(checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The checkpoint's open_clip vision tower in float32 (eval mode, patch dropout off) and its preprocess_cfg.

    Only the ``visual.*`` tensors are read and the text tower is never built; the module is created
    on the meta device and the weights are assigned, so nothing is randomly initialised first.

    Raises:
        ValueError: the weights file is unreadable or does not fit the architecture in the JSON.
    """
    from open_clip.model import _build_vision_tower
    from safetensors import SafetensorError, safe_open

    path = check_checkpoint_dir(checkpoint)
    cfg = read_open_clip_config(path)
    model_cfg = cfg["model_cfg"]
    if not isinstance(model_cfg.get("vision_cfg"), dict):
        raise ValueError(f"{path / OPEN_CLIP_CONFIG}: model_cfg has no 'vision_cfg'; there is no image tower to load")
    register_timm_names(model_cfg)
    preprocess_cfg = dict(cfg.get("preprocess_cfg") or {})
    preprocess_cfg.setdefault("size", model_cfg["vision_cfg"].get("image_size", 224))
    weights = check_weights_file(path)
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            state = {k[len("visual.") :]: f.get_tensor(k) for k in f.keys() if k.startswith("visual.")}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{weights} is not a readable safetensors file: {exc}") from exc
    if not state:
        raise ValueError(f"{weights} has no 'visual.*' tensors; expected an open_clip model with an image tower")

    def build() -> nn.Module:
        return _build_vision_tower(model_cfg["embed_dim"], model_cfg["vision_cfg"], model_cfg.get("quick_gelu", False))

    # open_clip's own ViT is built on the meta device (no random init, fast for ViT-L); timm's init
    # runs slow reference kernels on meta tensors, so timm trunks are built normally.
    on_meta = not model_cfg["vision_cfg"].get("timm_model_name")
    with torch.device("meta") if on_meta else contextlib.nullcontext():
        visual = build()
    try:
        visual.load_state_dict(state, strict=True, assign=on_meta)
    except RuntimeError as exc:
        raise weights_mismatch(path, exc) from None
    if any(p.is_meta for p in visual.parameters()):
        raise RuntimeError(
            f"loading {path} produced meta (empty) weights: it ran inside an empty-weights context such as "
            f"accelerate.init_empty_weights (from_pretrained with low_cpu_mem_usage=True); build the tower "
            f"with delay_load=True and call load_model() after the model is built"
        )
    if any(b.is_meta for b in visual.buffers()):
        visual = build()  # non-persistent buffers are not in the file: initialise normally, then load
        visual.load_state_dict(state, strict=True)
    _disable_patch_dropout(visual)
    return visual.to(device=device, dtype=torch.float32).eval(), preprocess_cfg


def _disable_patch_dropout(visual: nn.Module) -> None:
    """Patch dropout would change the number of visual tokens LLaVA receives: the tower never uses it."""
    if hasattr(visual, "patch_dropout"):
        visual.patch_dropout = nn.Identity()
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "patch_drop"):
        trunk.patch_drop = nn.Identity()
