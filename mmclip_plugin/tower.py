"""MMCLIP as a LLaVA vision tower: ``--vision_tower mmclip:<checkpoint dir>``.

:class:`MMCLIPVisionTower` has upstream ``CLIPVisionTower``'s constructor and members (the
contract is written down in :mod:`mmclip_plugin.protocol`) but is built from an MMCLIP checkpoint
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
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .image_processor import build_image_processor
from .model import OPEN_CLIP_CONFIG, WEIGHTS_FILE, check_checkpoint_dir

MMCLIP_PREFIX = "mmclip"
CHECKPOINT_ENV = "MMCLIP_CHECKPOINT"
CONFIG_ENV = "MMGEOLM_CONFIG"
DEFAULT_CONFIG_FILE = Path("~/.config/mmgeolm/config.yaml")
SELECT_FEATURES = ("patch", "cls_patch")


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
    ``$MMCLIP_CHECKPOINT``, else the ``checkpoint`` key of :func:`default_config_file`.

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
        backend: ``'open_clip_vit'`` (open_clip VisionTransformer) or ``'timm_vit'`` (timm ViT trunk).
        image_size: square input side in pixels.
        patch_size: square patch side in pixels.
        hidden_size: width of the hidden states.
        num_hidden_layers: number of transformer blocks (``hidden_states`` has one more entry).
        num_prefix_tokens: tokens in front of the patches (class + register tokens).
        has_class_token: whether one of the prefix tokens is a class token.
    """

    checkpoint: str
    backend: str
    image_size: int
    patch_size: int
    hidden_size: int
    num_hidden_layers: int
    num_prefix_tokens: int
    has_class_token: bool

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"{self.checkpoint}: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_vision_config(checkpoint: str | os.PathLike) -> MMCLIPVisionConfig:
    """Geometry of a checkpoint's vision tower, from ``open_clip_config.json`` (timm trunks are built on
    the meta device, which allocates nothing).

    Raises:
        ValueError: the checkpoint has no vision tower, or one that is not a ViT.
    """
    path = check_checkpoint_dir(checkpoint)
    cfg_file = path / OPEN_CLIP_CONFIG
    cfg = json.loads(cfg_file.read_text())
    model_cfg = cfg["model_cfg"]
    vision = model_cfg.get("vision_cfg")
    if not isinstance(vision, dict):
        raise ValueError(f"{cfg_file}: model_cfg has no 'vision_cfg'; an MMCLIP tower needs an image encoder")
    size = _square(cfg.get("preprocess_cfg", {}).get("size", vision.get("image_size", 224)), cfg_file, "preprocess_cfg.size")
    if vision.get("timm_model_name"):
        return _timm_config(path, vision["timm_model_name"], size)
    if isinstance(vision.get("layers"), (list, tuple)):
        raise ValueError(
            f"{cfg_file}: vision_cfg.layers={vision['layers']} is a ModifiedResNet; an MMCLIP LLaVA tower needs a "
            f"ViT (open_clip VisionTransformer or a timm ViT via vision_cfg.timm_model_name)"
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

    with torch.device("meta"):
        try:
            trunk = timm.create_model(timm_name, pretrained=False, weight_init="skip")
        except TypeError:  # a timm model without the weight_init option (not a ViT, refused below)
            trunk = timm.create_model(timm_name, pretrained=False)
    if not hasattr(trunk, "blocks") or not hasattr(trunk, "patch_embed"):
        raise ValueError(
            f"{path / OPEN_CLIP_CONFIG}: timm model {timm_name!r} is not a ViT (no blocks/patch_embed); "
            f"an MMCLIP LLaVA tower needs a ViT"
        )
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
    cfg = json.loads((path / OPEN_CLIP_CONFIG).read_text())
    model_cfg = cfg["model_cfg"]
    weights = path / WEIGHTS_FILE
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
        raise ValueError(f"{weights} does not match the architecture in {path / OPEN_CLIP_CONFIG}: {exc}") from exc
    if any(t.is_meta for t in (*visual.parameters(), *visual.buffers())):
        visual = build()  # non-persistent buffers are not in the file: initialise normally, then load
        visual.load_state_dict(state, strict=True)
    _disable_patch_dropout(visual)
    return visual.to(device=device, dtype=torch.float32).eval(), cfg.get("preprocess_cfg", {})


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
        self.vision_tower_name = vision_tower
        self.select_layer = _select_layer(args)
        self.select_feature = getattr(args, "mm_vision_select_feature", None) or "patch"
        if self.select_feature not in SELECT_FEATURES:
            raise ValueError(
                f"mm_vision_select_feature={self.select_feature!r}; expected one of {list(SELECT_FEATURES)}"
            )
        self.checkpoint = resolve_checkpoint(vision_tower)
        self.cfg_only = read_vision_config(self.checkpoint)
        self.hidden_state_index = _hidden_state_index(self.select_layer, self.cfg_only)
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

    def set_trainable(self, trainable: bool) -> None:
        """Freeze (upstream's default) or unfreeze every parameter of the encoder."""
        self._require_loaded("set_trainable")
        self.vision_tower.requires_grad_(trainable)
        self.vision_tower.train(self.training and trainable)

    @property
    def trainable(self) -> bool:
        """Whether any encoder parameter requires grad (then the forward builds a graph)."""
        return self.is_loaded and any(p.requires_grad for p in self.vision_tower.parameters())

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


def _hidden_state_index(select_layer: int, cfg: MMCLIPVisionConfig) -> int:
    """Map upstream's ``hidden_states[select_layer]`` to an index in 0..L (0 = embeddings, k = block k-1)."""
    n = cfg.num_hidden_layers
    index = select_layer if select_layer >= 0 else n + 1 + select_layer
    if not 0 <= index <= n:
        raise ValueError(
            f"mm_vision_select_layer={select_layer} is out of range for {cfg.checkpoint} with {n} blocks "
            f"({n + 1} hidden states): expected {-(n + 1)}..{n}"
        )
    return index


def _embedding_output(visual: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """``hidden_states[0]``: patch + position embeddings (and prefix tokens) after the pre-norm."""
    trunk = getattr(visual, "trunk", None)
    if trunk is not None:  # open_clip TimmModel around a timm VisionTransformer
        return trunk.norm_pre(trunk.patch_drop(trunk._pos_embed(trunk.patch_embed(pixels))))
    return visual._embeds(pixels)


def _disable_patch_dropout(visual: nn.Module) -> None:
    """Patch dropout would change the number of visual tokens LLaVA receives: the tower never uses it."""
    if hasattr(visual, "patch_dropout"):
        visual.patch_dropout = nn.Identity()
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "patch_drop"):
        trunk.patch_drop = nn.Identity()


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
