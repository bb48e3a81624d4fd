"""LLaVA's implicit vision-tower contract, written down as ``typing.Protocol`` classes.

Upstream LLaVA (``llava/model/multimodal_encoder/clip_encoder.py``) has no base class for towers:
``llava_arch.py``, ``train.py`` and ``builder.py`` duck-type whatever ``build_vision_tower`` returns.
These protocols list every member that upstream code reads, so a tower (ours, or upstream's own
``CLIPVisionTower``) can be checked with ``isinstance`` and the tests can exercise each member.

Both protocols are ``runtime_checkable``: ``isinstance`` only checks that the members exist, so the
tests also check their behaviour (shapes, dtypes, idempotence).
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class ImageProcessorProtocol(Protocol):
    """What LLaVA's data path and inference read from ``vision_tower.image_processor``.

    Attributes:
        image_mean: per-channel mean in [0, 1]; ``--image_aspect_ratio pad`` pads with it (times 255).
        crop_size: ``{'height': H, 'width': W}``; text-only samples get a zero image of this size.
        size: ``{'shortest_edge': S}``; LLaVA-NeXT's ``anyres`` reads it.
    """

    image_mean: list[float]
    crop_size: dict[str, int]
    size: dict[str, int]

    def preprocess(self, images: Any, return_tensors: str | None = None, **kwargs: Any) -> Any:
        """``preprocess(pil_image, return_tensors='pt')['pixel_values']`` -> (B, 3, H, W) tensor."""
        ...

    def __call__(self, images: Any, **kwargs: Any) -> Any:
        """Same as :meth:`preprocess` (``llava.mm_utils.process_images`` calls the processor)."""
        ...


@runtime_checkable
class VisionTowerProtocol(Protocol):
    """What upstream LLaVA reads from the object ``build_vision_tower`` returns.

    Construction is ``Tower(vision_tower_name, args, delay_load=False)`` where ``args`` carries
    ``mm_vision_select_layer``, ``mm_vision_select_feature`` and optionally
    ``unfreeze_mm_vision_tower`` (a Protocol cannot express constructors, the tests check it).

    Attributes:
        is_loaded: False until :meth:`load_model` has run (``delay_load=True`` defers it).
        image_processor: an :class:`ImageProcessorProtocol`, available once loaded.
    """

    is_loaded: bool

    def load_model(self, device_map: Any = None) -> None:
        """Load weights; idempotent (a second call is a no-op)."""
        ...

    def forward(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """(B, C, H, W) -> (B, N, D), or a list of (C, H, W) -> a list of (1, N, D), in the input's dtype."""
        ...

    def __call__(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        ...

    def to(self, *args: Any, **kwargs: Any) -> Any:
        """``train.py`` moves the tower with ``.to(dtype=..., device=...)``."""
        ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def config(self) -> Any:
        """An object with ``image_size``, ``patch_size`` and ``hidden_size``; cheap when delay-loaded."""
        ...

    @property
    def hidden_size(self) -> int: ...

    @property
    def num_patches(self) -> int: ...

    @property
    def num_patches_per_side(self) -> int: ...

    @property
    def image_size(self) -> int:
        """Read by LLaVA-NeXT; upstream 1.5 reads ``config.image_size`` instead."""
        ...

    @property
    def dummy_feature(self) -> torch.Tensor:
        """(1, hidden_size) zeros on the tower's device and dtype."""
        ...
