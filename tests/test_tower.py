"""MMCLIPVisionTower against LLaVA's tower contract (mmclip_plugin.tower.protocol), on tiny random towers.

Three ViT architectures: an open_clip ViT with a class token, a timm ViT with no class token but one
register token (mmclip-tiny-vit-noclass), and a timm ViT with no prefix token at all (SigLIP-style,
registered with timm by this test); and two conv towers: a timm ResNet (mmclip-tiny-resnet, timm's
``test_resnet``) and open_clip's ModifiedResNet, whose feature maps become the patch tokens.
"""
from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import timm
import torch
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer, _create_vision_transformer

from mmclip_plugin.config import ModelConfig
from mmclip_plugin.model import OPEN_CLIP_CONFIG, WEIGHTS_FILE, create_model, load_checkpoint
from mmclip_plugin.tower.protocol import ImageProcessorProtocol, VisionTowerProtocol
from mmclip_plugin.tower.vision_tower import (
    CHECKPOINT_ENV,
    CONFIG_ENV,
    MMCLIPVisionTower,
    is_mmclip_name,
    read_vision_config,
    resolve_checkpoint,
)

NOPREFIX_TIMM = "mmclip_test_vit_noprefix"

if not timm.is_model(NOPREFIX_TIMM):

    @register_model
    def mmclip_test_vit_noprefix(pretrained: bool = False, **kwargs) -> VisionTransformer:
        """A 2-block ViT without class or register tokens, like SigLIP's tower."""
        model_args = dict(img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=2, class_token=False,
                          global_pool="avg")
        return _create_vision_transformer(NOPREFIX_TIMM, pretrained=pretrained, **dict(model_args, **kwargs))


TEXT_CFG = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}


def _write_arch(directory: Path, name: str, vision_cfg: dict) -> Path:
    path = directory / f"{name}.json"
    path.write_text(json.dumps({"embed_dim": 32, "vision_cfg": vision_cfg, "text_cfg": TEXT_CFG}))
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """name -> checkpoint dir, for the three architectures (+ one with patch dropout)."""
    root = tmp_path_factory.mktemp("towers")
    arch = root / "arch"
    arch.mkdir()
    configs = {
        "class_token": ModelConfig(name="mmclip-tiny-vit"),
        "register_token": ModelConfig(name="mmclip-tiny-vit-noclass"),
        "no_prefix": ModelConfig(
            name="mmclip-test-noprefix",
            arch_json=str(_write_arch(arch, "mmclip-test-noprefix", {"timm_model_name": NOPREFIX_TIMM, "image_size": 64})),
        ),
        "timm_resnet": ModelConfig(name="mmclip-tiny-resnet"),
        "open_clip_resnet": ModelConfig(
            name="mmclip-test-rn",
            arch_json=str(_write_arch(arch, "mmclip-test-rn", {"layers": [1, 1, 1, 1], "width": 16, "image_size": 64,
                                                                "head_width": 16})),
        ),
        "patch_dropout": ModelConfig(
            name="mmclip-test-patchdrop",
            arch_json=str(_write_arch(arch, "mmclip-test-patchdrop", {
                "image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8, "patch_dropout": 0.5,
            })),
        ),
    }
    torch.manual_seed(0)
    return {key: create_model(cfg).save_pretrained(root / key) for key, cfg in configs.items()}


ARCHS = ["class_token", "register_token", "no_prefix"]
PREFIX_TOKENS = {"class_token": 1, "register_token": 1, "no_prefix": 0}


def _args(select_layer: int = -2, select_feature: str = "patch", **extra) -> types.SimpleNamespace:
    return types.SimpleNamespace(mm_vision_select_layer=select_layer, mm_vision_select_feature=select_feature, **extra)


def _tower(ckpt: Path, delay_load: bool = False, **args) -> MMCLIPVisionTower:
    return MMCLIPVisionTower(f"mmclip:{ckpt}", _args(**args), delay_load=delay_load)


def _pixels(batch: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def reference_hidden_states(checkpoints) -> dict[str, list[torch.Tensor]]:
    """arch -> all L + 1 hidden states of ``_pixels(2, seed=1)``, from model.load_checkpoint, block by block."""
    return {arch: _hidden_states(checkpoints[arch], _pixels(2, seed=1)) for arch in ARCHS}


@torch.no_grad()
def _hidden_states(ckpt: Path, pixels: torch.Tensor) -> list[torch.Tensor]:
    visual = load_checkpoint(ckpt).clip.visual.eval()
    trunk = getattr(visual, "trunk", None)
    if trunk is not None:
        h, blocks = trunk.norm_pre(trunk._pos_embed(trunk.patch_embed(pixels))), trunk.blocks
    else:
        patches = visual.conv1(pixels).flatten(2).transpose(1, 2)  # (B, N, D)
        cls = visual.class_embedding.expand(patches.shape[0], 1, -1)
        h, blocks = visual.ln_pre(torch.cat([cls, patches], 1) + visual.positional_embedding), visual.transformer.resblocks
    states = [h]
    for block in blocks:
        h = block(h)
        states.append(h)
    return states


# ----------------------------------------------------------------------------- contract
@pytest.mark.parametrize("arch", ARCHS)
def test_delay_load_then_load_model_twice(checkpoints, arch):
    tower = _tower(checkpoints[arch], delay_load=True)
    assert isinstance(tower, VisionTowerProtocol)
    assert not tower.is_loaded
    assert list(tower.parameters()) == []  # nothing loaded: only the JSON was read
    cfg = tower.config
    assert (cfg.image_size, cfg.patch_size, cfg.hidden_size) == (64, 16, 64)
    assert (tower.num_patches_per_side, tower.num_patches, tower.image_size) == (4, 16, 64)
    assert tower.dummy_feature.shape == (1, 64)
    with pytest.raises(RuntimeError, match="load_model"):
        tower(_pixels(1))

    tower.load_model()
    assert tower.is_loaded and isinstance(tower, VisionTowerProtocol)
    assert isinstance(tower.image_processor, ImageProcessorProtocol)
    params = {k: v.clone() for k, v in tower.state_dict().items()}
    module = tower.vision_tower
    tower.load_model()  # idempotent: same module, same weights
    assert tower.vision_tower is module
    assert all(torch.equal(params[k], v) for k, v in tower.state_dict().items())
    assert tower.config == cfg


@pytest.mark.parametrize("arch", ARCHS)
def test_tensor_and_list_inputs_agree(checkpoints, arch):
    tower = _tower(checkpoints[arch])
    pixels = _pixels(3)
    batched = tower(pixels)
    assert batched.shape == (3, 16, 64) and batched.dtype == torch.float32
    listed = tower(list(pixels))
    assert isinstance(listed, list) and len(listed) == 3
    for i, feature in enumerate(listed):
        assert feature.shape == (1, 16, 64)
        torch.testing.assert_close(feature[0], batched[i], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["class_token", "register_token"])
def test_bf16_tower_casts_inside_and_returns_the_input_dtype(checkpoints, arch):
    reference = _tower(checkpoints[arch])
    tower = _tower(checkpoints[arch]).to(dtype=torch.bfloat16)
    assert tower.dtype == torch.bfloat16 and tower.dummy_feature.dtype == torch.bfloat16
    pixels = _pixels(2)
    out = tower(pixels)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference(pixels), atol=0.15, rtol=0.05)  # bf16 rounding only
    assert tower(pixels.to(torch.bfloat16)).dtype == torch.bfloat16
    assert tower([pixels[0]])[0].dtype == torch.float32


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("select_layer", [-1, -2, 1, 0, -3])
def test_select_layer_matches_upstream_hidden_states_indexing(checkpoints, reference_hidden_states, arch, select_layer):
    expected = reference_hidden_states[arch][select_layer]
    tower = _tower(checkpoints[arch], select_layer=select_layer, select_feature="cls_patch")
    torch.testing.assert_close(tower(_pixels(2, seed=1)), expected, atol=1e-5, rtol=1e-5)


def test_last_and_penultimate_layers_differ(checkpoints):
    pixels = _pixels(1)
    last = _tower(checkpoints["class_token"], select_layer=-1)(pixels)
    penultimate = _tower(checkpoints["class_token"], select_layer=-2)(pixels)
    assert not torch.allclose(last, penultimate)


@pytest.mark.parametrize("arch", ARCHS)
def test_select_feature_never_drops_a_real_patch(checkpoints, arch):
    pixels = _pixels(2)
    patch = _tower(checkpoints[arch], select_feature="patch")(pixels)
    cls_patch = _tower(checkpoints[arch], select_feature="cls_patch")(pixels)
    prefix = PREFIX_TOKENS[arch]
    assert patch.shape == (2, 16, 64)  # every one of the 4 x 4 patches
    assert cls_patch.shape[1] == 16 + prefix
    torch.testing.assert_close(cls_patch[:, prefix:], patch)
    assert read_vision_config(checkpoints[arch]).num_prefix_tokens == prefix


def test_select_layer_is_stop_early(checkpoints, monkeypatch):
    """Blocks after the selected one never run."""
    tower = _tower(checkpoints["register_token"], select_layer=2)  # 8 blocks; hidden_states[2] = block 1
    calls = []
    for i, block in enumerate(tower.vision_tower.trunk.blocks):
        block.register_forward_hook(lambda *_, i=i: calls.append(i))
    tower(_pixels(1))
    assert calls == [0, 1]


# ----------------------------------------------------------------------------- frozen / trainable
@pytest.mark.parametrize("arch", ["class_token", "no_prefix"])
def test_frozen_by_default(checkpoints, arch):
    tower = _tower(checkpoints[arch])
    assert not tower.trainable
    assert not any(p.requires_grad for p in tower.parameters())
    tower.train()
    assert not tower.vision_tower.training  # a frozen encoder stays in eval mode
    pixels = _pixels(2).requires_grad_(True)
    with torch.enable_grad():
        out = tower(pixels)
    assert not out.requires_grad


@pytest.mark.parametrize("arch", ["class_token", "no_prefix"])
def test_unfrozen_tower_gets_gradients(checkpoints, arch):
    # like upstream, delay_load with unfreeze_mm_vision_tower loads at once
    tower = _tower(checkpoints[arch], delay_load=True, unfreeze_mm_vision_tower=True)
    assert tower.is_loaded and tower.trainable
    tower.train()
    assert tower.vision_tower.training
    tower(_pixels(2)).pow(2).mean().backward()
    visual = tower.vision_tower
    patch_embed = visual.trunk.patch_embed.proj.weight if arch == "no_prefix" else visual.conv1.weight
    assert patch_embed.requires_grad and patch_embed.grad is not None and patch_embed.grad.abs().sum() > 0

    tower.set_trainable(False)
    assert not tower(_pixels(1)).requires_grad


def test_trainer_setting_requires_grad_unfreezes(checkpoints):
    """LLaVA-NeXT unfreezes with vision_tower.requires_grad_(True): the forward must follow it."""
    tower = _tower(checkpoints["class_token"])
    tower.requires_grad_(True)
    assert tower(_pixels(1)).requires_grad


@pytest.mark.parametrize("arch", ["class_token", "no_prefix"])
def test_gradient_checkpointing_follows_transformers_flag_and_keeps_gradients(checkpoints, arch):
    pixels = _pixels(2)
    grads = []
    for checkpointing in (False, True):
        tower = _tower(checkpoints[arch], select_layer=-1, unfreeze_mm_vision_tower=True)
        # what PreTrainedModel._set_gradient_checkpointing does to every submodule with the attribute
        tower.gradient_checkpointing = checkpointing
        visual = tower.vision_tower
        assert (visual.trunk.grad_checkpointing if arch == "no_prefix" else visual.transformer.grad_checkpointing) \
            is checkpointing
        tower(pixels).pow(2).mean().backward()
        grads.append([p.grad.clone() for p in tower.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for plain, recomputed in zip(*grads):
        torch.testing.assert_close(plain, recomputed, atol=1e-6, rtol=1e-5)


def test_patch_dropout_never_changes_the_token_count(checkpoints):
    tower = _tower(checkpoints["patch_dropout"], delay_load=True, unfreeze_mm_vision_tower=True)
    tower.train()
    assert tower(_pixels(2, size=32)).shape == (2, 16, 32)


# ----------------------------------------------------------------------------- names and errors
@pytest.mark.parametrize(
    "name,expected",
    [("mmclip", True), ("mmclip:/x/y", True), ("mmclip:", True), ("mmclipx", False), ("my-mmclip:/x", False),
     ("openai/clip-vit-large-patch14-336", False), ("MMCLIP:/x", False), ("", False)],
)
def test_is_mmclip_name_is_exact(name, expected):
    assert is_mmclip_name(name) is expected


def test_bare_mmclip_resolves_from_env_then_config_file(checkpoints, tmp_path, monkeypatch):
    ckpt = checkpoints["class_token"]
    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(FileNotFoundError, match=CHECKPOINT_ENV) as err:
        resolve_checkpoint("mmclip")
    assert "missing.yaml" in str(err.value)

    config = tmp_path / "config.yaml"
    config.write_text(f"checkpoint: {ckpt}\n")
    monkeypatch.setenv(CONFIG_ENV, str(config))
    assert resolve_checkpoint("mmclip") == ckpt

    monkeypatch.setenv(CHECKPOINT_ENV, str(checkpoints["no_prefix"]))
    assert resolve_checkpoint("mmclip") == checkpoints["no_prefix"]
    assert MMCLIPVisionTower("mmclip", _args(), delay_load=True).config.backend == "timm_vit"

    config.write_text("checkpoint: [unclosed\n")
    monkeypatch.delenv(CHECKPOINT_ENV)
    with pytest.raises(ValueError, match="config.yaml"):
        resolve_checkpoint("mmclip")


def test_relative_names_resolve_once_to_absolute_paths(checkpoints, monkeypatch):
    ckpt = checkpoints["class_token"]
    monkeypatch.chdir(ckpt.parent)
    tower = MMCLIPVisionTower(f"mmclip:{ckpt.name}", _args(), delay_load=True)
    assert tower.checkpoint == ckpt and tower.checkpoint.is_absolute()
    monkeypatch.chdir(ckpt.parent.parent)
    tower.load_model()  # still finds it
    assert tower.is_loaded


def test_missing_and_incomplete_checkpoints_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        resolve_checkpoint(f"mmclip:{tmp_path / 'does-not-exist'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=f"{OPEN_CLIP_CONFIG}.*{WEIGHTS_FILE}"):
        resolve_checkpoint(f"mmclip:{tmp_path / 'empty'}")
    with pytest.raises(ValueError, match="empty checkpoint path"):
        resolve_checkpoint("mmclip:")
    with pytest.raises(ValueError, match="not an MMCLIP tower name"):
        resolve_checkpoint("openai/clip-vit-large-patch14")


def _fake_checkpoint(root: Path, name: str, config_text: str) -> Path:
    path = root / name
    path.mkdir()
    (path / WEIGHTS_FILE).write_bytes(b"")
    (path / OPEN_CLIP_CONFIG).write_text(config_text)
    return path


@pytest.mark.parametrize(
    "config_text,match",
    [
        (json.dumps({"model_cfg": {"text_cfg": TEXT_CFG}}), "no 'vision_cfg'"),
        (json.dumps({"model_cfg": {"vision_cfg": {"layers": [1, 1, 1, 1], "width": 64, "image_size": 80}}}),
         "not a multiple of the tower's coarsest stride 32"),
        (json.dumps({"model_cfg": {"vision_cfg": {"layers": [1, 1, 1, 1], "image_size": 64}},
                     "preprocess_cfg": {"size": 96}}), "attention pool fits 64 px"),
        (json.dumps({"model_cfg": {"vision_cfg": {"image_size": 8, "patch_size": 16}}}), "patch_size 16 > image_size 8"),
        (json.dumps({"model_cfg": {"vision_cfg": {}}, "preprocess_cfg": {"size": [64, 32]}}), "square"),
        (json.dumps({"model_cfg": {"vision_cfg": {"image_size": 64}}, "preprocess_cfg": {"size": 32}}), "differs"),
        ("{not json", "not valid JSON"),
    ],
)
def test_checkpoints_of_other_architectures_are_refused(tmp_path, config_text, match):
    ckpt = _fake_checkpoint(tmp_path, "other", config_text)
    with pytest.raises(ValueError, match=match):
        MMCLIPVisionTower(f"mmclip:{ckpt}", _args(), delay_load=True)


def test_unreadable_or_mismatched_weights_name_the_file(checkpoints, tmp_path):
    import shutil

    corrupt = tmp_path / "corrupt"
    shutil.copytree(checkpoints["class_token"], corrupt)
    (corrupt / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=f"{WEIGHTS_FILE}: not a complete safetensors file"):
        _tower(corrupt)
    swapped = tmp_path / "swapped"
    shutil.copytree(checkpoints["class_token"], swapped)
    shutil.copy(checkpoints["no_prefix"] / WEIGHTS_FILE, swapped / WEIGHTS_FILE)
    with pytest.raises(ValueError, match=f"{WEIGHTS_FILE}: does not match the architecture"):
        _tower(swapped)


@pytest.mark.parametrize("select_layer", [3, -4])
def test_select_layer_out_of_range(checkpoints, select_layer):
    with pytest.raises(ValueError, match=r"expected -3\.\.2"):
        _tower(checkpoints["class_token"], delay_load=True, select_layer=select_layer)


def test_bad_select_feature_and_missing_select_layer(checkpoints):
    with pytest.raises(ValueError, match="cls_patch"):
        _tower(checkpoints["class_token"], delay_load=True, select_feature="cls")
    with pytest.raises(ValueError, match="mm_vision_select_layer"):
        MMCLIPVisionTower(f"mmclip:{checkpoints['class_token']}", types.SimpleNamespace(), delay_load=True)


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 1, 64, 64), (3, 64, 64), (2, 3, 64, 48)])
def test_wrong_image_size_names_the_expected_shape(checkpoints, shape):
    tower = _tower(checkpoints["class_token"])
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)|\(3, 64, 64\)"):
        tower(torch.zeros(shape))
    with pytest.raises(ValueError, match="64"):
        tower([torch.zeros(3, 32, 32)])


def test_loading_inside_an_empty_weights_context_fails_clearly(checkpoints):
    accelerate = pytest.importorskip("accelerate")
    with accelerate.init_empty_weights(), pytest.raises(RuntimeError, match="delay_load=True"):
        _tower(checkpoints["class_token"])


def test_device_map_auto_and_dict(checkpoints):
    tower = _tower(checkpoints["class_token"], delay_load=True)
    tower.load_model(device_map={"": "cpu"})
    assert tower.device == torch.device("cpu")
    with pytest.raises(ValueError, match="splits the tower"):
        _tower(checkpoints["class_token"], delay_load=True).load_model(device_map={"a": "cpu", "b": "meta"})


def test_a_training_run_directory_resolves_to_its_model(checkpoints, tmp_path, caplog):
    """mmclip:<mmclip-train output dir>: final/ when there is one, else the newest complete checkpoint; logged."""
    import logging
    import shutil

    run = tmp_path / "run"
    for step in (2, 4):
        shutil.copytree(checkpoints["class_token"], run / "checkpoints" / f"step_{step:06d}")
        (run / "checkpoints" / f"step_{step:06d}" / "trainer_state.pt").write_bytes(b"")
    shutil.copytree(checkpoints["class_token"], run / "checkpoints" / "step_000006")  # incomplete: no trainer state
    with caplog.at_level(logging.INFO, logger="mmclip_plugin"):
        assert resolve_checkpoint(f"mmclip:{run}") == run / "checkpoints" / "step_000004"
    assert "is a training run; using" in caplog.text and "step_000004" in caplog.text
    shutil.copytree(checkpoints["class_token"], run / "final")
    assert resolve_checkpoint(f"mmclip:{run}") == run / "final"
    (run / "final" / WEIGHTS_FILE).unlink()
    shutil.rmtree(run / "checkpoints")
    with pytest.raises(FileNotFoundError, match="without a model yet"):
        resolve_checkpoint(f"mmclip:{run}")


# ----------------------------------------------------------------------------- conv towers
CONV_ARCHS = ["timm_resnet", "open_clip_resnet"]
# (channels, stride) of each hidden state: the stem's feature map, then the four stages
CONV_STATES = {
    "timm_resnet": [(32, 2), (32, 4), (48, 8), (192, 16), (96, 32)],  # timm test_resnet
    "open_clip_resnet": [(16, 4), (64, 4), (128, 8), (256, 16), (512, 32)],  # width 16, bottleneck x4
}


@torch.no_grad()
def _feature_maps(ckpt: Path, pixels: torch.Tensor) -> list[torch.Tensor]:
    """Every (B, C, h, w) feature map of a conv tower, stage by stage, from model.load_checkpoint."""
    visual = load_checkpoint(ckpt).clip.visual.eval()
    trunk = getattr(visual, "trunk", None)
    if trunk is not None:  # timm ResNet: the stem's activation before the max pool, then layer1..4
        h = trunk.act1(trunk.bn1(trunk.conv1(pixels)))
        maps, h = [h], trunk.maxpool(h)
        stages = [trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4]
    else:  # ModifiedResNet: the 3-conv stem with its average pool, then layer1..4
        h = visual.stem(pixels)
        maps, stages = [h], [visual.layer1, visual.layer2, visual.layer3, visual.layer4]
    for stage in stages:
        h = stage(h)
        maps.append(h)
    return maps


@pytest.mark.parametrize("arch", CONV_ARCHS)
@pytest.mark.parametrize("select_layer", [-1, -2, 0, 2, -5])
def test_conv_tower_serves_the_selected_stage_as_patch_tokens(checkpoints, arch, select_layer):
    channels, stride = CONV_STATES[arch][select_layer]
    side = 64 // stride
    tower = _tower(checkpoints[arch], delay_load=True, select_layer=select_layer)
    assert isinstance(tower, VisionTowerProtocol) and not tower.is_loaded
    cfg = tower.config  # what LLaVA sizes its projector with (mm_hidden_size), before any weight is read
    assert (cfg.hidden_size, cfg.patch_size, cfg.image_size, cfg.num_prefix_tokens) == (channels, stride, 64, 0)
    assert (tower.hidden_size, tower.num_patches_per_side, tower.num_patches) == (channels, side, side * side)
    assert tower.dummy_feature.shape == (1, channels)
    tower.load_model()
    pixels = _pixels(2, seed=3)
    expected = _feature_maps(checkpoints[arch], pixels)[select_layer]  # (2, C, side, side)
    assert expected.shape == (2, channels, side, side)
    out = tower(pixels)
    # token i * side + j is cell (i, j) of the feature map: row-major, like a ViT's patches
    torch.testing.assert_close(out, expected.flatten(2).transpose(1, 2), atol=1e-5, rtol=1e-5)
    listed = tower(list(pixels))
    torch.testing.assert_close(listed[1][0], out[1], atol=1e-5, rtol=1e-5)
    # a conv tower has no prefix token: cls_patch gives the same tokens
    torch.testing.assert_close(_tower(checkpoints[arch], select_layer=select_layer, select_feature="cls_patch")(pixels), out)


@pytest.mark.parametrize("arch", CONV_ARCHS)
def test_conv_tower_never_runs_the_stages_after_the_selected_one(checkpoints, arch):
    tower = _tower(checkpoints[arch], select_layer=-2)
    visual = tower.vision_tower
    body = getattr(visual, "trunk", visual)
    calls = []
    for name in ("layer3", "layer4"):
        getattr(body, name).register_forward_hook(lambda *_, name=name: calls.append(name))
    tower(_pixels(1))
    assert calls == ["layer3"]


@pytest.mark.parametrize("arch", CONV_ARCHS)
def test_conv_tower_frozen_by_default_and_trainable_when_asked(checkpoints, arch):
    frozen = _tower(checkpoints[arch])
    frozen.train()
    assert not frozen.vision_tower.training  # batch-norm statistics stay those of the checkpoint
    with torch.enable_grad():
        assert not frozen(_pixels(2)).requires_grad
    trainable = _tower(checkpoints[arch], unfreeze_mm_vision_tower=True)
    trainable.train()
    trainable(_pixels(2)).pow(2).mean().backward()
    grads = [p.grad for p in trainable.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_conv_select_layer_out_of_range_names_the_stages(checkpoints):
    with pytest.raises(ValueError, match=r"4 stages after the first feature map.*expected -5\.\.4"):
        _tower(checkpoints["timm_resnet"], delay_load=True, select_layer=5)
