"""Export to transformers CLIPVisionModel: same features as the MMCLIP tower, refused architectures."""
from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPVisionModel, CLIPVisionModelWithProjection

from mmclip_plugin.config import ModelConfig
from mmclip_plugin.model import create_model
from mmclip_plugin.tower.hf_export import EXPORT_INFO, export_hf_clip, main
from mmclip_plugin.tower.protocol import ImageProcessorProtocol, VisionTowerProtocol
from mmclip_plugin.tower.vision_tower import MMCLIPVisionTower

TEXT_CFG = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
# (quick_gelu, vision_cfg): the shipped tiny gelu ViT, and a quick_gelu one with other head/mlp/eps settings
ARCHS = {
    "gelu": None,
    "quick_gelu": (True, {"image_size": 48, "layers": 3, "width": 48, "head_width": 16, "patch_size": 12,
                          "mlp_ratio": 2.0, "norm_kwargs": {"eps": 1e-6}}),
}


def _arch_json(directory: Path, name: str, vision_cfg: dict, quick_gelu: bool = False) -> str:
    path = directory / f"{name}.json"
    path.write_text(json.dumps({"embed_dim": 32, "quick_gelu": quick_gelu, "vision_cfg": vision_cfg, "text_cfg": TEXT_CFG}))
    return str(path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """arch -> (MMCLIP checkpoint, exported HF dir)."""
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    result = {}
    for key, spec in ARCHS.items():
        if spec is None:
            cfg = ModelConfig(name="mmclip-tiny-vit")
        else:
            cfg = ModelConfig(name=f"mmclip-test-{key}", arch_json=_arch_json(root, f"mmclip-test-{key}", spec[1], spec[0]))
        ckpt = create_model(cfg).save_pretrained(root / key)
        result[key] = (ckpt, export_hf_clip(ckpt, root / f"{key}-hf"))
    return result


def _args(select_layer: int, select_feature: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(mm_vision_select_layer=select_layer, mm_vision_select_feature=select_feature)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_export_writes_a_loadable_hf_clip_with_the_right_activation(exported, arch):
    _, out = exported[arch]
    model = CLIPVisionModel.from_pretrained(out)
    assert model.config.hidden_act == ("quick_gelu" if arch == "quick_gelu" else "gelu")
    assert json.loads((out / EXPORT_INFO).read_text())["verified"] is True
    processor = CLIPImageProcessor.from_pretrained(out)
    side = model.config.image_size
    assert processor.crop_size == {"height": side, "width": side} and processor.size == {"shortest_edge": side}


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("select_layer", [-1, -2, 1, 0])
@pytest.mark.parametrize("select_feature", ["patch", "cls_patch"])
def test_tower_features_equal_hf_hidden_states(exported, arch, select_layer, select_feature):
    ckpt, out = exported[arch]
    tower = MMCLIPVisionTower(f"mmclip:{ckpt}", _args(select_layer, select_feature))
    hf = CLIPVisionModel.from_pretrained(out).eval()
    pixels = torch.randn(2, 3, tower.image_size, tower.image_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = hf(pixels, output_hidden_states=True).hidden_states[select_layer]
    if select_feature == "patch":
        expected = expected[:, 1:]
    ours = tower(pixels)
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max().item() < 1e-4


def test_upstream_llava_tower_on_the_export_matches_ours(exported):
    """Unpatched upstream CLIPVisionTower, loading the exported path, gives our tower's features."""
    clip_encoder = pytest.importorskip("llava.model.multimodal_encoder.clip_encoder")
    ckpt, out = exported["quick_gelu"]
    args = _args(-2, "patch")
    upstream = clip_encoder.CLIPVisionTower(str(out), args)
    ours = MMCLIPVisionTower(f"mmclip:{ckpt}", args)
    assert (upstream.hidden_size, upstream.num_patches) == (ours.hidden_size, ours.num_patches)
    # the Protocol is upstream's contract: upstream's own tower has every member but LLaVA-NeXT's image_size
    members = {n for n in vars(VisionTowerProtocol) if not n.startswith("_")} | set(VisionTowerProtocol.__annotations__)
    assert sorted(m for m in members if not hasattr(upstream, m)) == ["image_size"]
    assert isinstance(upstream.image_processor, ImageProcessorProtocol)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8))  # square: both crops agree
    up_pixels = upstream.image_processor.preprocess(image, return_tensors="pt")["pixel_values"]
    our_pixels = ours.image_processor.preprocess(image, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(up_pixels, our_pixels, atol=1e-6, rtol=0)
    assert (upstream(up_pixels) - ours(our_pixels)).abs().max().item() < 1e-4


def test_with_projection_reproduces_the_image_embedding(exported, tmp_path):
    ckpt, _ = exported["gelu"]
    out = export_hf_clip(ckpt, tmp_path / "proj", with_projection=True)
    hf = CLIPVisionModelWithProjection.from_pretrained(out).eval()
    model = create_model(ModelConfig(name=f"local-dir:{ckpt}"))
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.encode_image(pixels, normalize=False)
        got = hf(pixels).image_embeds
    assert (got - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize(
    "name,vision_cfg,match",
    [
        # a timm tower is exported only in SigLIP's layout (test_hf_roundtrip.py); this one has a linear projection
        ("timm", {"timm_model_name": "test_vit2", "image_size": 64}, "extra projection .timm_proj. has no SigLIP"),
        ("layerscale", {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8,
                        "ls_init_value": 0.1}, "ls_init_value"),
        ("avgpool", {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8,
                     "pool_type": "avg"}, "pool_type"),
    ],
)
def test_other_architectures_are_refused(tmp_path, name, vision_cfg, match):
    cfg = ModelConfig(name=f"mmclip-test-{name}", arch_json=_arch_json(tmp_path, f"mmclip-test-{name}", vision_cfg))
    ckpt = create_model(cfg).save_pretrained(tmp_path / name)
    with pytest.raises(ValueError, match=match if name == "timm" else f"OpenAI-CLIP.*{match}"):
        export_hf_clip(ckpt, tmp_path / f"{name}-hf")
    assert not (tmp_path / f"{name}-hf").exists()


def test_cli_exports_and_refuses_to_overwrite(exported, tmp_path, capsys):
    ckpt, _ = exported["gelu"]
    out = tmp_path / "cli-hf"
    assert main(["--checkpoint", str(ckpt), "--out", str(out)]) == 0
    assert (out / "config.json").is_file() and (out / "preprocessor_config.json").is_file()
    assert main(["--checkpoint", str(ckpt), "--out", str(out)]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(["--checkpoint", str(ckpt), "--out", str(out), "--overwrite", "--no-verify"]) == 0
    assert main(["--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "nope" in capsys.readouterr().err
