"""mmclip-import: tiny random transformers CLIPModel / SiglipModel -> MMCLIP, checked against transformers.

The configs (tests/hf_fixtures.py) have odd widths, projection widths that differ from both towers and,
for SigLIP, a patch grid that does not tile the image, so a transposed or misplaced tensor cannot pass.
"""
from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from hf_fixtures import clip_model_dir, siglip_model_dir
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoImageProcessor, CLIPModel, SiglipModel

from mmclip_plugin.config import ConfigError, ModelConfig
from mmclip_plugin.model import create_model, load_checkpoint
from mmclip_plugin.tower import hf_weights
from mmclip_plugin.tower.hf_import import PARITY_CAPTIONS, ParityError, compare_with_hf, import_hf, main
from mmclip_plugin.tower.timm_vit import TimmViTSpec, parse_name
from mmclip_plugin.tower.vision_tower import MMCLIPVisionTower
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import FormatError

ATOL = 1e-4


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {
        "clip": clip_model_dir(root / "clip"),  # legacy eos_token_id 2: pooled at argmax(ids), quick_gelu
        "clip-eos": clip_model_dir(root / "clip-eos", legacy_eos=False, act="gelu", seed=1),  # first-EOS pooling
        "siglip": siglip_model_dir(root / "siglip"),
    }


@pytest.fixture(scope="module")
def imported(hf_dirs, tmp_path_factory) -> dict[str, tuple[Path, object]]:
    root = tmp_path_factory.mktemp("imported")
    return {name: import_hf(path, root / name) for name, path in hf_dirs.items()}


@pytest.mark.parametrize("name", ["clip", "clip-eos", "siglip"])
def test_import_reproduces_both_towers(imported, hf_dirs, name):
    ckpt, parity = imported[name]
    assert parity.tokens_equal and parity.image < ATOL and parity.text < ATOL
    info = json.loads((ckpt / "mmclip_config.json").read_text())["metadata"]
    assert info["parity"]["image"] == parity.image and info["imported_from"] == str(hf_dirs[name].resolve())
    # the written checkpoint, loaded back the ordinary way, is still transformers' model
    reloaded = load_checkpoint(ckpt)
    again = compare_with_hf(reloaded, hf_dirs[name])
    assert again.tokens_equal and max(again.image, again.text) < ATOL
    hf = (SiglipModel if name == "siglip" else CLIPModel).from_pretrained(hf_dirs[name])
    assert reloaded.logit_scale.item() == pytest.approx(hf.logit_scale.item())
    if name == "siglip":
        assert reloaded.logit_bias.item() == pytest.approx(hf.logit_bias.item())


def test_geometry_symbols_tokenize_as_transformers_does(imported, hf_dirs):
    """SigLIP's tokenizer travels with the checkpoint: same ids, same unknown symbols."""
    from transformers import AutoTokenizer

    model = load_checkpoint(imported["siglip"][0])
    hf_tok = AutoTokenizer.from_pretrained(hf_dirs["siglip"])
    ids = model.tokenize(list(PARITY_CAPTIONS)).tolist()
    assert ids == hf_tok(list(PARITY_CAPTIONS), padding="max_length", max_length=16, truncation=True).input_ids
    parallel, perpendicular = model.tokenize(["AB ∥ CD", "AB ⊥ CD"]).tolist()
    assert parallel == perpendicular  # this vocabulary has neither symbol: both become <unk>


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_image_preprocessing_travels(imported, hf_dirs, name):
    model = load_checkpoint(imported[name][0])
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (45, 45, 3), dtype=np.uint8))
    expected = AutoImageProcessor.from_pretrained(hf_dirs[name])(image, return_tensors="pt")["pixel_values"][0]
    assert model.preprocess_cfg["resize_mode"] == ("squash" if name == "siglip" else "shortest")
    torch.testing.assert_close(model.preprocess_val(image), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_tower_serves_imported_checkpoints_like_transformers_hidden_states(imported, hf_dirs, name):
    """hidden_states[-2]; CLIP drops its class token for 'patch', SigLIP has none and keeps every patch."""
    hf = (SiglipModel if name == "siglip" else CLIPModel).from_pretrained(hf_dirs[name]).eval()
    pixels = torch.randn(2, 3, 30, 30, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        states = hf.vision_model(pixels, output_hidden_states=True).hidden_states[-2]
    for feature in ("patch", "cls_patch"):
        args = types.SimpleNamespace(mm_vision_select_layer=-2, mm_vision_select_feature=feature)
        tower = MMCLIPVisionTower(f"mmclip:{imported[name][0]}", args)
        expected = states[:, 1:] if name == "clip" and feature == "patch" else states
        assert tower.num_patches == (25 if name == "clip" else 16)  # SigLIP: 30 px / 7 px -> a 4 x 4 grid
        got = tower(pixels)
        assert got.shape == expected.shape
        assert (got - expected).abs().max().item() < ATOL


def test_pretrained_hf_builds_the_same_model_in_memory(imported, hf_dirs):
    model = create_model(ModelConfig(name="hf", pretrained=f"hf:{hf_dirs['clip-eos']}"))
    parity = compare_with_hf(model, hf_dirs["clip-eos"])
    assert max(parity.image, parity.text) < ATOL
    with pytest.raises(ConfigError, match="name"):
        ModelConfig(pretrained=f"hf:{hf_dirs['clip']}")  # name left at an open_clip architecture
    with pytest.raises(ConfigError, match="name"):
        ModelConfig(name="hf")


def test_a_transposed_projection_cannot_load(hf_dirs):
    """The projection widths (20) differ from the towers' (36, 40): mapping without the transpose fails by shape."""
    rules = [hf_weights.Rule(r.hf, r.oc, "same") if r.op == "t" else r for r in hf_weights.clip_rules(2, 2)]
    state, origin = hf_weights.read_hf_state(hf_dirs["clip"])
    target = create_model(ModelConfig(name="hf", pretrained=f"hf:{hf_dirs['clip']}")).clip.state_dict()
    with pytest.raises(FormatError, match=r"model\.safetensors: key 'visual_projection\.weight': shape \(20, 36\)"):
        hf_weights.convert(rules, state, target, to_hf=False, origin=origin)


def test_so400m_geometry_gives_729_patches_and_no_class_token(tmp_path):
    """google/siglip-so400m-patch14-384's config, imported: 384 px / 14 px patches -> 27 x 27, nothing dropped."""
    from transformers import SiglipConfig

    from mmclip_plugin.model import OPEN_CLIP_CONFIG, WEIGHTS_FILE
    from mmclip_plugin.tower.hf_config import open_clip_config_from_hf

    wide = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16)
    config = SiglipConfig(text_config=dict(wide, vocab_size=32000, max_position_embeddings=64),
                          vision_config=dict(wide, image_size=384, patch_size=14))
    model_cfg = open_clip_config_from_hf("siglip", config, "config.json", "tokenizer")
    (tmp_path / OPEN_CLIP_CONFIG).write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {"size": 384}}))
    (tmp_path / WEIGHTS_FILE).write_bytes(b"")  # the geometry is read without weights (delay_load)
    tower = MMCLIPVisionTower(f"mmclip:{tmp_path}", types.SimpleNamespace(mm_vision_select_layer=-2), delay_load=True)
    assert (tower.num_patches, tower.hidden_size, tower.config.num_prefix_tokens) == (729, 1152, 0)
    assert tower.config.num_hidden_layers == 27 and not tower.config.has_class_token


def test_timm_names_round_trip():
    spec = TimmViTSpec(image_size=384, patch_size=14, width=1152, depth=27, heads=16, mlp_width=4304, eps=1e-6)
    assert "." not in spec.name and parse_name(spec.name) == spec
    with pytest.raises(ValueError, match="not of the form"):
        parse_name("mmclip_vit_i384_p14")


# ----------------------------------------------------------------------------- bad input
def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_not_a_clip_directory(tmp_path):
    with pytest.raises(InputError, match="no config.json"):
        import_hf(tmp_path, tmp_path / "out")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(FormatError, match=r"config\.json: key 'model_type': model_type 'bert' is not a CLIP or SigLIP"):
        import_hf(tmp_path, tmp_path / "out")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "siglip_vision_model"}))
    with pytest.raises(FormatError, match="SiglipVisionModel .image tower only."):
        import_hf(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_weight_names_file_and_key(hf_dirs, tmp_path):
    bad = _copy(hf_dirs["siglip"], tmp_path / "siglip")
    state = load_file(bad / "model.safetensors")
    del state["vision_model.head.probe"]
    save_file(state, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(FormatError, match=r"siglip/model\.safetensors: key 'vision_model\.head\.probe': missing weight"):
        import_hf(bad, tmp_path / "out")


def test_shape_mismatch_names_file_and_key(hf_dirs, tmp_path, capsys):
    bad = _copy(hf_dirs["clip"], tmp_path / "clip")
    state = load_file(bad / "model.safetensors")
    state["text_model.embeddings.token_embedding.weight"] = state["text_model.embeddings.token_embedding.weight"][:-3]
    save_file(state, bad / "model.safetensors", metadata={"format": "pt"})
    assert main(["--from-hf", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "clip/model.safetensors: key 'text_model.embeddings.token_embedding.weight': shape (516, 40)" in err
    assert not (tmp_path / "out").exists()


def test_parity_failure_refuses_to_write(hf_dirs, tmp_path, monkeypatch):
    import mmclip_plugin.tower.hf_import as hf_import

    original = hf_import.build_model_from_hf

    def perturbed(*args, **kwargs):
        model = original(*args, **kwargs)
        with torch.no_grad():
            model.clip.ln_final.bias.add_(0.01)  # a wrong tensor somewhere in the text tower
        return model

    monkeypatch.setattr(hf_import, "build_model_from_hf", perturbed)
    with pytest.raises(ParityError, match=r"text embeddings [0-9.e-]+ \(> 0.0001\); nothing was written"):
        import_hf(hf_dirs["clip"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_imports_and_refuses_to_overwrite(hf_dirs, tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert main(["--from-hf", str(hf_dirs["siglip"]), "--out", str(out)]) == 0
    assert "max abs difference: image" in capsys.readouterr().out
    assert main(["--from-hf", str(hf_dirs["siglip"]), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
