"""``llava_patches.register``: the ``mmclip:`` builder at upstream's real binding, reversibly; bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import llava.model.llava_arch as llava_arch
import llava.model.multimodal_encoder.builder as upstream_builder
import pytest
import torch
from llava_fixtures import build_mmclip_checkpoint
from PIL import Image

from llava_patches import register as reg
from llava_patches.compat import SUPPORTED_LLAVA_VERSION, UpstreamIncompatibleError

ROOT = Path(__file__).resolve().parents[1]
ORIGINAL = upstream_builder.build_vision_tower


@pytest.fixture(autouse=True)
def pristine():
    """Every test starts and ends with upstream untouched."""
    reg.unregister()
    assert llava_arch.build_vision_tower is ORIGINAL and upstream_builder.build_vision_tower is ORIGINAL
    yield
    reg.unregister()
    assert llava_arch.build_vision_tower is ORIGINAL and upstream_builder.build_vision_tower is ORIGINAL


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return build_mmclip_checkpoint(tmp_path_factory.mktemp("register") / "mmclip")


def _args(name: str, **kw) -> SimpleNamespace:
    return SimpleNamespace(mm_vision_tower=name, mm_vision_select_layer=-2, mm_vision_select_feature="patch", **kw)


def test_register_patches_both_bindings_and_unregister_restores_the_same_objects():
    reg.register()
    assert reg.is_registered()
    assert llava_arch.build_vision_tower is not ORIGINAL
    assert upstream_builder.build_vision_tower is not ORIGINAL
    reg.unregister()
    assert not reg.is_registered()
    assert llava_arch.build_vision_tower is ORIGINAL and upstream_builder.build_vision_tower is ORIGINAL


def test_register_is_idempotent():
    reg.register()
    patched = llava_arch.build_vision_tower
    reg.register()
    assert llava_arch.build_vision_tower is patched, "a second register() must not wrap the dispatcher again"
    reg.unregister()
    assert llava_arch.build_vision_tower is ORIGINAL
    reg.unregister()  # a no-op when nothing is registered
    assert llava_arch.build_vision_tower is ORIGINAL


def test_registered_context_restores_on_exit_and_on_error():
    with reg.registered():
        assert reg.is_registered()
    assert llava_arch.build_vision_tower is ORIGINAL
    with pytest.raises(RuntimeError, match="boom"), reg.registered():
        raise RuntimeError("boom")
    assert llava_arch.build_vision_tower is ORIGINAL


def test_nested_context_leaves_an_outer_registration_in_place():
    reg.register()
    with reg.registered():
        pass
    assert reg.is_registered(), "leaving an inner block must not undo an explicit register()"
    with reg.registered(), reg.registered():
        pass
    assert reg.is_registered()


def test_unregister_refuses_to_drop_someone_elses_patch(monkeypatch):
    reg.register()
    foreign = lambda cfg, **kw: None  # noqa: E731
    monkeypatch.setattr(llava_arch, "build_vision_tower", foreign)
    with pytest.raises(RuntimeError, match="replaced"):
        reg.unregister()
    monkeypatch.undo()
    reg.unregister()


@pytest.mark.parametrize("name", ["not-a-tower", "my-mmclip:/tmp/x", "MMCLIP:/tmp/x", "mmclipx"])
def test_other_names_are_delegated_to_upstream(name):
    """Upstream's own error proves delegation; 'mmclip' inside another name is not ours (no substring match)."""
    with reg.registered(), pytest.raises(ValueError, match="Unknown vision tower"):
        llava_arch.build_vision_tower(_args(name))


def test_mmclip_names_build_our_tower_through_the_binding_upstream_uses(checkpoint):
    from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM

    from mmclip_plugin.tower.vision_tower import MMCLIPVisionTower

    config = LlavaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        mm_vision_tower=f"mmclip:{checkpoint}", mm_hidden_size=64, mm_projector_type="linear",
        mm_vision_select_layer=-2, mm_vision_select_feature="patch",
    )  # fmt: skip
    with pytest.raises(ValueError, match="Unknown vision tower"):
        LlavaLlamaForCausalLM(config)  # unpatched upstream rejects our name
    with reg.registered():
        model = LlavaLlamaForCausalLM(config)  # LlavaMetaModel.__init__ -> llava_arch.build_vision_tower
    tower = model.get_vision_tower()
    assert isinstance(tower, MMCLIPVisionTower)
    assert not tower.is_loaded, "a saved config builds the tower with delay_load=True"
    tower.load_model()
    features = model.encode_images(torch.zeros(2, 3, 64, 64))
    assert features.shape == (2, 16, 32)


def test_missing_upstream_symbol_is_named_before_anything_is_patched(monkeypatch):
    monkeypatch.delattr(upstream_builder, "build_vision_tower")
    with pytest.raises(UpstreamIncompatibleError, match="multimodal_encoder.builder.build_vision_tower") as err:
        reg.register()
    assert SUPPORTED_LLAVA_VERSION in str(err.value)
    assert llava_arch.build_vision_tower is ORIGINAL, "nothing may be patched when a symbol is missing"


def test_importing_llava_patches_has_no_side_effects():
    code = textwrap.dedent(
        """
        import sys
        import llava_patches, llava_patches.register, llava_patches.train, llava_patches.train_mem
        import llava_patches.loader, llava_patches.predict, llava_patches.trainer, llava_patches.save
        import llava_patches.dispatch, llava_patches.qwen_chat, llava_patches.tiny_llm, llava_patches.answer_questions
        assert "llava" not in sys.modules, "importing llava_patches must not even import llava"
        import llava_patches.qwen2, llava_patches.train_data  # these define subclasses of upstream classes
        import llava.conversation, transformers
        assert not {"qwen_2", "qwen_2_5", "qwen_1_5"} & set(llava.conversation.conv_templates)
        assert "llava_qwen" not in transformers.models.auto.configuration_auto.CONFIG_MAPPING
        import llava.model.llava_arch as arch, llava.model.multimodal_encoder.builder as builder
        assert arch.build_vision_tower is builder.build_vision_tower
        assert not hasattr(builder.build_vision_tower, "__mmclip_original__")
        import llava.train.train as train
        assert train.LLaVATrainer.__module__ == "llava.train.llava_trainer"
        assert train.safe_save_model_for_hf_trainer.__module__ == "llava.train.train"
        print("clean")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stderr[-3000:]


# ----------------------------------------------------------------------------- bad input
def test_missing_checkpoint_names_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with reg.registered(), pytest.raises(FileNotFoundError, match=str(missing)):
        llava_arch.build_vision_tower(_args(f"mmclip:{missing}"))


def test_hf_clip_directory_is_not_taken_for_an_mmclip_checkpoint(tmp_path):
    hf_dir = tmp_path / "clip-vit"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(json.dumps({"model_type": "clip_vision_model"}))
    with reg.registered(), pytest.raises(FileNotFoundError, match="not an MMCLIP checkpoint.*open_clip_config.json"):
        llava_arch.build_vision_tower(_args(f"mmclip:{hf_dir}"))


def test_checkpoint_of_another_architecture_is_rejected(checkpoint, tmp_path):
    resnet = tmp_path / "resnet"
    shutil.copytree(checkpoint, resnet)
    cfg_file = resnet / "open_clip_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["model_cfg"]["vision_cfg"]["layers"] = [1, 1, 1, 1]
    cfg_file.write_text(json.dumps(cfg))
    # a ResNet config is a valid tower now (conv towers serve LLaVA), but these are a ViT's weights
    with reg.registered(), pytest.raises(ValueError, match=r"open_clip_model\.safetensors: does not match the "
                                                               r"architecture in .*open_clip_config\.json: Missing key"):
        llava_arch.build_vision_tower(_args(f"mmclip:{resnet}"))


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (1, 3, 32, 32), (1, 4, 64, 64), (3, 64, 64)])
def test_images_of_the_wrong_shape_raise_with_the_expected_one(checkpoint, shape):
    with reg.registered():
        tower = llava_arch.build_vision_tower(_args(f"mmclip:{checkpoint}"))
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        tower(torch.zeros(shape))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_any_image_mode_and_size_is_converted_for_the_tower(checkpoint, tmp_path, mode):
    from llava.mm_utils import process_images

    from llava_patches.predict import load_image

    path = tmp_path / f"image-{mode.replace(';', '')}.png"
    Image.new(mode, (97, 41)).save(path)
    image = load_image(path)
    assert image.mode == "RGB"
    with reg.registered():
        tower = llava_arch.build_vision_tower(_args(f"mmclip:{checkpoint}"))
    pixels = process_images([image], tower.image_processor, SimpleNamespace(image_aspect_ratio="pad"))
    assert tower(pixels).shape == (1, 16, 64)


def test_unreadable_and_missing_image_files_raise_clearly(tmp_path):
    from llava_patches.predict import load_image

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="bad.png"):
        load_image(bad)


def test_unknown_conversation_template_lists_the_known_ones():
    from llava_patches.predict import build_prompt

    with pytest.raises(ValueError, match="known: .*v1"):
        build_prompt("hi", "no-such-template", mm_use_im_start_end=False)
    assert build_prompt("Which lines are parallel?", "v1", False).endswith("<image>\nWhich lines are parallel? ASSISTANT:")
