"""The tower's image processor reproduces open_clip's own eval preprocessing, pixel for pixel."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from mmclip_plugin.tower.image_processor import (
    MMCLIPImageProcessor,
    build_hf_image_processor,
    build_image_processor,
    processor_kwargs,
)
from mmclip_plugin.tower.protocol import ImageProcessorProtocol

PREPROCESS_CFGS = {
    "clip-64-bicubic": PreprocessCfg(size=64),
    "siglip-80-bilinear": PreprocessCfg(size=80, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear"),
    "squash-48": PreprocessCfg(size=48, resize_mode="squash"),
}
# (width, height): square, landscape, portrait, tiny, odd crop offsets (where HF and torchvision round differently)
SIZES = [(64, 64), (100, 37), (37, 100), (640, 480), (20, 20), (71, 64), (64, 75), (333, 222), (81, 80)]


def _image(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng([seed, width, height])
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return image if mode == "RGB" else image.convert(mode)


def _ours(processor, image) -> torch.Tensor:
    return processor.preprocess(image, return_tensors="pt")["pixel_values"][0]


@pytest.mark.parametrize("cfg_name", sorted(PREPROCESS_CFGS))
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_pixels_match_open_clip_preprocess_val(cfg_name, size):
    cfg = PREPROCESS_CFGS[cfg_name]
    processor = build_image_processor(dataclasses.asdict(cfg))
    reference = image_transform_v2(cfg, is_train=False)  # what MMCLIPModel.preprocess_val is
    image = _image(*size)
    ours = _ours(processor, image)
    expected = reference(image)
    assert ours.shape == expected.shape == (3, cfg.size, cfg.size)
    # same PIL resize on uint8, same crop; only float32 rescale/normalise order differs (~1e-6)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_plain_hf_processor_differs_only_by_the_crop_rounding():
    """Why MMCLIPImageProcessor exists: HF floors the crop offset, torchvision rounds it."""
    cfg = PREPROCESS_CFGS["clip-64-bicubic"]
    hf = build_hf_image_processor(dataclasses.asdict(cfg))
    reference = image_transform_v2(cfg, is_train=False)
    torch.testing.assert_close(_ours(hf, _image(100, 37)), reference(_image(100, 37)), atol=1e-5, rtol=0)
    odd = _image(71, 64)  # 7 extra columns: HF offset 3, torchvision round(3.5) = 4
    assert (_ours(hf, odd) - reference(odd)).abs().max() > 0.1


def test_tower_processor_matches_the_checkpoint_models_preprocess_val(tmp_path):
    """End to end: the processor a tower builds from a saved checkpoint vs MMCLIPModel.preprocess_val."""
    from types import SimpleNamespace

    from mmclip_plugin.config import ModelConfig
    from mmclip_plugin.model import create_model
    from mmclip_plugin.tower.vision_tower import MMCLIPVisionTower

    model = create_model(ModelConfig(name="mmclip-tiny-vit"))
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    processor = MMCLIPVisionTower(f"mmclip:{ckpt}", SimpleNamespace(mm_vision_select_layer=-2)).image_processor
    for size in [(90, 64), (64, 90), (65, 65)]:
        image = _image(*size, seed=4)
        torch.testing.assert_close(_ours(processor, image), model.preprocess_val(image), atol=1e-5, rtol=0)


def test_llava_reads_everything_it_needs():
    processor = build_image_processor(dataclasses.asdict(PREPROCESS_CFGS["clip-64-bicubic"]))
    assert isinstance(processor, ImageProcessorProtocol)
    assert processor.size["shortest_edge"] == 64
    assert (processor.crop_size["height"], processor.crop_size["width"]) == (64, 64)
    assert [int(x * 255) for x in processor.image_mean] == [122, 116, 104]  # LLaVA's pad colour
    batch = processor([_image(70, 50), _image(50, 70)], return_tensors="pt")["pixel_values"]  # process_images path
    assert batch.shape == (2, 3, 64, 64) and batch.dtype == torch.float32


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK", "1"])
def test_other_modes_are_converted_to_rgb_first(mode):
    processor = build_image_processor(dataclasses.asdict(PREPROCESS_CFGS["clip-64-bicubic"]))
    image = _image(90, 70, mode=mode)
    out = _ours(processor, image)
    assert out.shape == (3, 64, 64)
    torch.testing.assert_close(out, _ours(processor, image.convert("RGB")), atol=0, rtol=0)
    if mode == "L":  # per-channel resize: open_clip (resize, then convert) agrees exactly
        reference = image_transform_v2(PREPROCESS_CFGS["clip-64-bicubic"], is_train=False)
        torch.testing.assert_close(out, reference(image), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["I", "F", "I;16"])
def test_modes_that_would_clip_are_rejected(mode):
    processor = build_image_processor(dataclasses.asdict(PREPROCESS_CFGS["clip-64-bicubic"]))
    image = Image.fromarray(np.full((20, 20), 1000, dtype=np.int32)).convert(mode)
    with pytest.raises(ValueError, match=f"mode '{mode}'"):
        processor.preprocess([_image(30, 30), image], return_tensors="pt")


def test_save_and_reload_keeps_the_behaviour(tmp_path):
    processor = build_image_processor(dataclasses.asdict(PREPROCESS_CFGS["siglip-80-bilinear"]))
    processor.save_pretrained(tmp_path)
    reloaded = MMCLIPImageProcessor.from_pretrained(tmp_path)
    image = _image(83, 80)
    torch.testing.assert_close(_ours(reloaded, image), _ours(processor, image), atol=0, rtol=0)


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"size": 64, "resize_mode": "longest"}, "resize_mode"),
        ({"size": [64, 32]}, "square"),
        ({"size": 64, "interpolation": "cubic-spline"}, "interpolation"),
        ({"size": 64, "mean": [0.5, 0.5]}, "3 values"),
    ],
)
def test_unsupported_preprocess_configs_are_refused(cfg, match):
    with pytest.raises(ValueError, match=match):
        processor_kwargs(cfg)
