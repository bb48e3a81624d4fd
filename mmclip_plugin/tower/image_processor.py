"""A ``transformers.CLIPImageProcessor`` that reproduces an MMCLIP encoder's own preprocessing.

LLaVA's data path reads ``preprocess(image, return_tensors='pt')['pixel_values']``, ``image_mean``,
``crop_size['height'/'width']`` and ``size['shortest_edge']`` from the tower's ``image_processor``.
A plain ``CLIPImageProcessor`` configured from the checkpoint's ``preprocess_cfg`` (size, mean, std,
interpolation, resize mode) does all of that and matches open_clip's eval transform
(``Resize(shortest) -> CenterCrop -> ToTensor -> Normalize``) except in one detail: HF centres the
crop with ``(h - crop) // 2`` where torchvision uses ``round((h - crop) / 2)``, so for some odd
differences the crop window sits one pixel apart. :class:`MMCLIPImageProcessor` overrides only
``center_crop`` to use torchvision's rounding; everything else is upstream HF code.

It also converts any PIL mode to RGB *before* resizing (open_clip converts after resizing, which
for palette images means a nearest-neighbour resize) and rejects modes whose RGB conversion would
silently clip (32-bit integer and float images).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image
from transformers import CLIPImageProcessor
from transformers.image_processing_utils import get_size_dict
from transformers.image_utils import ChannelDimension, PILImageResampling, infer_channel_dimension_format

INTERPOLATIONS: dict[str, PILImageResampling] = {
    "bicubic": PILImageResampling.BICUBIC,
    "bilinear": PILImageResampling.BILINEAR,
    "nearest": PILImageResampling.NEAREST,
    "lanczos": PILImageResampling.LANCZOS,
}
RESIZE_MODES = ("shortest", "squash")
# PIL modes whose convert("RGB") clips values instead of scaling them: refuse rather than guess.
REJECTED_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class MMCLIPImageProcessor(CLIPImageProcessor):
    """``CLIPImageProcessor`` with torchvision's centre-crop rounding and strict image-mode handling."""

    def center_crop(
        self,
        image: np.ndarray,
        size: dict[str, int],
        data_format: str | ChannelDimension | None = None,
        input_data_format: str | ChannelDimension | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Crop the centre ``size`` window with ``round((h - crop_h) / 2)`` offsets, like torchvision."""
        size = get_size_dict(size)
        crop_h, crop_w = size["height"], size["width"]
        fmt = ChannelDimension(input_data_format) if input_data_format else infer_channel_dimension_format(image)
        channels_first = fmt == ChannelDimension.FIRST
        height, width = image.shape[-2:] if channels_first else image.shape[:2]
        if height < crop_h or width < crop_w:
            # Never reached after a shortest-edge resize to the crop size; keep HF's padding behaviour.
            return super().center_crop(image, size, data_format=data_format, input_data_format=input_data_format)
        top = int(round((height - crop_h) / 2.0))
        left = int(round((width - crop_w) / 2.0))
        if channels_first:
            out = image[..., top : top + crop_h, left : left + crop_w]
        else:
            out = image[top : top + crop_h, left : left + crop_w, ...]
        if data_format is not None and ChannelDimension(data_format) != fmt:
            out = np.moveaxis(out, 0, -1) if channels_first else np.moveaxis(out, -1, 0)
        return out

    def preprocess(self, images: Any, **kwargs: Any) -> Any:
        """Validate and convert PIL images to RGB, then run ``CLIPImageProcessor.preprocess``.

        Raises:
            ValueError: a PIL image whose mode cannot be converted to RGB faithfully.
        """
        if isinstance(images, (list, tuple)):
            images = [_to_rgb(image, index) for index, image in enumerate(images)]
        else:
            images = _to_rgb(images, 0)
        return super().preprocess(images, **kwargs)


def _to_rgb(image: Any, index: int) -> Any:
    if not isinstance(image, Image.Image):
        return image
    if image.mode in REJECTED_MODES:
        raise ValueError(
            f"image {index} has PIL mode {image.mode!r}, which cannot be converted to RGB without clipping; "
            f"expected an 8-bit mode such as 'RGB', 'RGBA', 'L', 'LA' or 'P' (convert it to 'RGB' first)"
        )
    # convert("RGB") drops alpha (keeps the stored colour under transparent pixels) and expands palettes.
    return image if image.mode == "RGB" else image.convert("RGB")


def processor_kwargs(preprocess_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``CLIPImageProcessor`` keyword arguments equivalent to an open_clip ``preprocess_cfg``.

    Args:
        preprocess_cfg: open_clip's dict with ``size``, ``mean``, ``std``, ``interpolation`` and
            ``resize_mode`` (as saved in ``open_clip_config.json``).

    Raises:
        ValueError: a non-square size, an unknown interpolation or an unsupported resize mode.
    """
    size = preprocess_cfg.get("size", 224)
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(f"preprocess_cfg.size={list(size)}: LLaVA towers need a square input size")
        size = size[0]
    size = int(size)
    interpolation = str(preprocess_cfg.get("interpolation", "bicubic"))
    if interpolation == "random":  # open_clip's train-only option; its eval transform is bicubic
        interpolation = "bicubic"
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"preprocess_cfg.interpolation={interpolation!r}; expected one of {sorted(INTERPOLATIONS)}")
    resize_mode = str(preprocess_cfg.get("resize_mode", "shortest"))
    if resize_mode not in RESIZE_MODES:
        raise ValueError(
            f"preprocess_cfg.resize_mode={resize_mode!r} is not supported by the LLaVA image processor; "
            f"expected one of {list(RESIZE_MODES)} (for letterboxing use LLaVA's --image_aspect_ratio pad)"
        )
    mean = [float(m) for m in preprocess_cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))]
    std = [float(s) for s in preprocess_cfg.get("std", (0.26862954, 0.26130258, 0.27577711))]
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"preprocess_cfg mean/std must have 3 values each, got mean={mean} std={std}")
    kwargs: dict[str, Any] = dict(
        do_resize=True,
        resample=INTERPOLATIONS[interpolation],
        crop_size={"height": size, "width": size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=mean,
        image_std=std,
        do_convert_rgb=True,
    )
    if resize_mode == "shortest":
        kwargs.update(size={"shortest_edge": size}, do_center_crop=True)
    else:  # squash: resize both sides, nothing to crop
        kwargs.update(size={"height": size, "width": size}, do_center_crop=False)
    return kwargs


def build_image_processor(preprocess_cfg: Mapping[str, Any]) -> MMCLIPImageProcessor:
    """The tower's image processor, matching open_clip's eval transform for ``preprocess_cfg``."""
    return MMCLIPImageProcessor(**processor_kwargs(preprocess_cfg))


def build_hf_image_processor(preprocess_cfg: Mapping[str, Any]) -> CLIPImageProcessor:
    """A plain ``CLIPImageProcessor`` (for exports read by unpatched LLaVA; HF centre-crop rounding)."""
    return CLIPImageProcessor(**processor_kwargs(preprocess_cfg))
