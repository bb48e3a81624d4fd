"""HF -> mmclip-import -> mmclip-train (a few real steps) -> mmclip-export -> transformers, for CLIP and SigLIP.

The exported model, loaded by transformers' own ``from_pretrained``, must give the trained MMCLIP model's
embeddings and hidden states (1e-4), and the SigLIP image tower must go to LLaVA's data path unpatched.
"""
from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch
from hf_fixtures import clip_model_dir, siglip_model_dir
from mmclip_fixtures import make_dataset_dir
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

from mmclip_plugin.config import load_config
from mmclip_plugin.model import load_checkpoint
from mmclip_plugin.tower.hf_export import export_hf
from mmclip_plugin.tower.hf_import import PARITY_CAPTIONS, import_hf
from mmclip_plugin.tower.vision_tower import MMCLIPVisionTower
from mmclip_plugin.train import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "mmclip_plugin" / "configs" / "tiny-cpu.yaml"
ATOL = 1e-4
STEPS = ["steps=3", "data.batch_size=4", "data.num_workers=0", "log_every=1", "progress=false", "plot=false",
         "optim.lr=1e-3", "optim.warmup_steps=1", "data.image_negatives=2", "data.text_negatives=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """family -> (original transformers directory, mmclip-train output directory)."""
    root = tmp_path_factory.mktemp("roundtrip")
    data = make_dataset_dir(root / "data", n=8, k_images=2, k_texts=2)
    out = {}
    for family in ("clip", "siglip"):
        hf_dir = (clip_model_dir if family == "clip" else siglip_model_dir)(root / family)
        if family == "siglip":  # start from the imported checkpoint directory, SigLIP's own sigmoid loss
            ckpt, _ = import_hf(hf_dir, root / "siglip-imported")
            model = [f"model.name=local-dir:{ckpt}", "model.pretrained=null", "loss.in_batch=sigmoid"]
        else:  # start from the transformers directory itself
            model = ["model.name=hf", f"model.pretrained=hf:{hf_dir}"]
        cfg = load_config(TINY, [f"data.train={data}", f"output_dir={root / f'{family}-run'}", *STEPS, *model])
        out[family] = (hf_dir, train(cfg).output_dir)
    return out


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_trained_model_round_trips_to_transformers(runs, family, tmp_path):
    hf_dir, run = runs[family]
    exported = export_hf(run, tmp_path / "hf", full=True)  # a run directory: its final/ is exported
    hf = AutoModel.from_pretrained(exported).eval()
    assert type(hf).__name__ == ("SiglipModel" if family == "siglip" else "CLIPModel")
    tokenizer = AutoTokenizer.from_pretrained(exported)
    trained = load_checkpoint(run / "final").eval()
    original = AutoModel.from_pretrained(hf_dir).eval()
    pixels = torch.randn(3, 3, 30, 30, generator=torch.Generator().manual_seed(7))
    ids = tokenizer(list(PARITY_CAPTIONS), padding="max_length", max_length=trained.tokenize(["x"]).shape[1],
                    truncation=True, return_tensors="pt").input_ids
    assert torch.equal(ids, trained.tokenize(list(PARITY_CAPTIONS)))
    with torch.no_grad():
        ours = (trained.encode_image(pixels, normalize=False), trained.encode_text(ids, normalize=False))
        theirs = (hf.get_image_features(pixel_values=pixels), hf.get_text_features(input_ids=ids))
        before = (original.get_image_features(pixel_values=pixels), original.get_text_features(input_ids=ids))
        hidden = hf.vision_model(pixels, output_hidden_states=True).hidden_states
    for a, b in zip(ours, theirs):
        assert (a - b).abs().max().item() < ATOL
    for a, b in zip(before, theirs):  # training moved both towers
        assert (a - b).abs().max().item() > 1e-3
    assert hf.logit_scale.item() == pytest.approx(trained.logit_scale.item(), abs=1e-6)
    args = types.SimpleNamespace(mm_vision_select_layer=-2, mm_vision_select_feature="patch")
    tower = MMCLIPVisionTower(f"mmclip:{run}", args)  # an mmclip-train output directory resolves to its final/
    expected = hidden[-2][:, 1:] if family == "clip" else hidden[-2]
    assert (tower(pixels) - expected).abs().max().item() < ATOL


def test_exported_siglip_tower_goes_to_llava_unpatched(runs, tmp_path):
    """The image-tower export loads with transformers' Auto classes (what LLaVA-NeXT's hf:<dir> tower uses), keeps
    every patch, and its processor serves upstream LLaVA's unpatched data path (crop_size, image_mean, pad)."""
    _, run = runs["siglip"]
    exported = export_hf(run, tmp_path / "siglip-vision")
    vision = AutoModel.from_pretrained(exported).eval()
    processor = AutoImageProcessor.from_pretrained(exported)
    assert type(vision).__name__ == "SiglipVisionModel"
    assert processor.crop_size == {"height": 30, "width": 30}
    args = types.SimpleNamespace(mm_vision_select_layer=-2, mm_vision_select_feature="patch")
    tower = MMCLIPVisionTower(f"mmclip:{run}", args)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 26, 3), dtype=np.uint8))
    mm_utils = pytest.importorskip("llava.mm_utils")
    config = types.SimpleNamespace(image_aspect_ratio="pad")
    pixels = mm_utils.process_images([image], processor, config)  # upstream code, unpatched
    ours = mm_utils.process_images([image], tower.image_processor, config)
    torch.testing.assert_close(pixels, ours, atol=1e-5, rtol=0)
    with torch.no_grad():
        states = vision(pixels, output_hidden_states=True).hidden_states[-2]
    assert states.shape[1] == tower.num_patches == 16  # no class token: every patch is a real one
    assert (tower(ours) - states).abs().max().item() < ATOL
    # upstream LLaVA-1.5 has no SigLIP class: by path it loads CLIP, which wants one more position (the 729 vs 730
    # of so400m-384), and says so; serve SigLIP to it as mmclip:<dir> (the tower above)
    clip_encoder = pytest.importorskip("llava.model.multimodal_encoder.clip_encoder")
    with pytest.raises(RuntimeError, match=r"position_embedding.*\[16, 48\].*\[17, 48\]"):
        clip_encoder.CLIPVisionTower(str(exported), args)
