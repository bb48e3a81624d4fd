"""Qwen2 in upstream LLaVA without training runs: model parity, dispatch, patches, generation, the tiny Qwen2.

Everything is built here: a 2-layer random Qwen2 with random q/k/v biases and a byte-level BPE tokenizer
trained on the tests' texts (``llava_patches.tiny_llm``), a random MMCLIP tower, Pillow diagrams.
Templates and label masking are in ``test_llava_qwen_chat.py``.
"""
from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import llava.conversation as conversation
import llava.train.train as upstream
import pytest
import torch
from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM
from llava_fixtures import build_mmclip_checkpoint, build_tiny_qwen2
from transformers import AutoTokenizer, Qwen2ForCausalLM

from llava_patches.args import ExtraArguments
from llava_patches.qwen2 import LlavaQwen2ForCausalLM
from llava_patches.qwen_chat import IM_END
from llava_patches.register import registered
from llava_patches.train import PATCHED_NAMES, check_arguments, training_patches

TEXT = "<|im_start|>user\nWhat shape is shown in the diagram?<|im_end|>\n<|im_start|>assistant\nThe diagram"


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(ids).logits


# ----------------------------------------------------------------------------- the model class
def test_llava_qwen_logits_equal_qwen2_with_the_biases_kept(qwen_dir, qwen_tokenizer):
    ids = qwen_tokenizer(TEXT, return_tensors="pt").input_ids
    reference = Qwen2ForCausalLM.from_pretrained(str(qwen_dir))
    ours = LlavaQwen2ForCausalLM.from_pretrained(str(qwen_dir))
    bias = ours.get_model().layers[0].self_attn.q_proj.bias
    assert bias is not None and bias.abs().mean() > 0.1, "the tiny Qwen2 must have real (non-zero) q/k/v biases"
    assert torch.equal(bias, reference.model.layers[0].self_attn.q_proj.bias)
    torch.testing.assert_close(_logits(ours, ids), _logits(reference, ids), rtol=0, atol=1e-6)


def test_guard_upstream_llama_class_drops_the_biases_so_dispatch_matters(qwen_dir, qwen_tokenizer):
    ids = qwen_tokenizer(TEXT, return_tensors="pt").input_ids
    as_llama = LlavaLlamaForCausalLM.from_pretrained(str(qwen_dir))
    assert as_llama.model.layers[0].self_attn.q_proj.bias is None
    gap = (_logits(as_llama, ids) - _logits(Qwen2ForCausalLM.from_pretrained(str(qwen_dir)), ids)).abs().max()
    assert gap > 1e-2, f"upstream's Llama path now matches Qwen2 (max |diff| {gap}); revisit the dispatch"


def test_tied_embeddings_survive_resize_save_and_reload(qwen_root, tmp_path):
    tied = LlavaQwen2ForCausalLM.from_pretrained(str(build_tiny_qwen2(qwen_root / "tiny-qwen2-tied", tie_word_embeddings=True)))
    assert tied.lm_head.weight is tied.get_input_embeddings().weight
    tied.resize_token_embeddings(tied.config.vocab_size + 1)  # what --mm_use_im_patch_token True does
    assert tied.lm_head.weight is tied.get_input_embeddings().weight
    tied.save_pretrained(str(tmp_path / "saved"))
    again = LlavaQwen2ForCausalLM.from_pretrained(str(tmp_path / "saved"))
    assert again.lm_head.weight is again.get_input_embeddings().weight
    assert torch.equal(again.get_input_embeddings().weight, tied.get_input_embeddings().weight)


def test_patch_token_resize_warns(qwen_dir, qwen_tokenizer):
    model = LlavaQwen2ForCausalLM.from_pretrained(str(qwen_dir))
    args = SimpleNamespace(mm_use_im_patch_token=True, mm_use_im_start_end=False, tune_mm_mlp_adapter=False,
                           pretrain_mm_mlp_adapter=None)  # fmt: skip
    tok = copy.deepcopy(qwen_tokenizer)
    with pytest.warns(UserWarning, match="mm_use_im_patch_token True adds a token"):
        model.initialize_vision_tokenizer(args, tok)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)


# ----------------------------------------------------------------------------- dispatch and patches
@pytest.mark.parametrize(
    ("requested", "model_type", "expected"),
    [("LlavaLlamaForCausalLM", "qwen2", "LlavaQwen2ForCausalLM"), ("LlavaLlamaForCausalLM", "llava_qwen", "LlavaQwen2ForCausalLM"),
     ("LlavaMptForCausalLM", "llava_qwen", "LlavaQwen2ForCausalLM"), ("LlavaLlamaForCausalLM", "llama", "LlavaLlamaForCausalLM"),
     ("LlavaLlamaForCausalLM", "mistral", "LlavaLlamaForCausalLM"), ("LlavaMistralForCausalLM", "llava_llama", "LlavaMistralForCausalLM"),
     ("LlavaMptForCausalLM", "mpt", "LlavaMptForCausalLM")],
)  # fmt: skip
def test_the_class_follows_the_model_type(requested, model_type, expected):
    import llava.model.builder as builder

    from llava_patches.dispatch import resolve_model_class

    assert resolve_model_class(getattr(builder, requested), model_type, "here").__name__ == expected


@pytest.mark.parametrize(("requested", "model_type", "match"), [
    ("LlavaLlamaForCausalLM", "mpt", "upstream chose LlavaLlamaForCausalLM .* 'mpt'"),
    ("LlavaMptForCausalLM", "llama", "Rename the path"),
    ("LlavaLlamaForCausalLM", "gemma", "'gemma' is not a language model.*llava_qwen.*qwen2"),
])  # fmt: skip
def test_a_class_that_cannot_hold_the_model_type_raises(requested, model_type, match):
    import llava.model.builder as builder

    from llava_patches.dispatch import resolve_model_class

    with pytest.raises(ValueError, match=match):
        resolve_model_class(getattr(builder, requested), model_type, "here")


def test_train_builds_the_class_from_the_checkpoint_config(qwen_dir):
    with training_patches(ExtraArguments()):
        model = upstream.LlavaLlamaForCausalLM.from_pretrained(str(qwen_dir))  # the name train() calls
    assert type(model) is LlavaQwen2ForCausalLM


def test_training_patches_are_all_undone_on_exit_even_after_an_error():
    from transformers import AutoConfig

    originals = {name: getattr(upstream, name) for name in PATCHED_NAMES}
    default = conversation.default_conversation
    with pytest.raises(RuntimeError, match="boom"), training_patches(ExtraArguments()):
        assert all(getattr(upstream, name) is not originals[name] for name in PATCHED_NAMES)
        assert "qwen_2" in conversation.conv_templates
        conversation.default_conversation = conversation.conv_templates["qwen_2"]
        raise RuntimeError("boom")
    assert all(getattr(upstream, name) is originals[name] for name in PATCHED_NAMES)
    assert conversation.default_conversation is default
    assert not {"qwen_2", "qwen_2_5", "qwen_1_5"} & set(conversation.conv_templates)
    with pytest.raises(ValueError, match="llava_qwen"):
        AutoConfig.for_model("llava_qwen")


def test_register_adds_the_qwen_names_idempotently_and_refuses_to_replace_others():
    from transformers import AutoConfig, AutoModelForCausalLM

    from llava_patches.qwen2 import LlavaQwen2Config
    from llava_patches.register import register, unregister

    with registered(), registered():
        config = AutoConfig.for_model("llava_qwen", vocab_size=32, hidden_size=16, intermediate_size=32,
                                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
        assert type(config) is LlavaQwen2Config
        assert type(AutoModelForCausalLM.from_config(config)) is LlavaQwen2ForCausalLM
    assert "qwen_2" not in conversation.conv_templates
    conversation.conv_templates["qwen_2"] = conversation.conv_templates["v1"]
    try:
        with pytest.raises(ValueError, match="qwen_2.*already defined by someone else"):
            register()
        with pytest.raises(ValueError, match="llava_qwen"):
            AutoConfig.for_model("llava_qwen")  # nothing left half-registered
    finally:
        del conversation.conv_templates["qwen_2"]
        unregister()


def test_arguments_upstream_would_mishandle_are_refused(qwen_dir, qwen_root):
    with pytest.raises(ValueError, match="--version 'qwen2' is not a conversation template.*qwen_2_5"):
        check_arguments(["--version", "qwen2"])
    mpt_named = qwen_root / "attempt-qwen"  # "mpt" in the path: upstream would build an MPT model
    mpt_named.symlink_to(qwen_dir)
    with pytest.raises(ValueError, match="contains 'mpt'"):
        check_arguments(["--model_name_or_path", str(mpt_named), "--vision_tower", "mmclip:x", "--version=qwen_2"])
    with pytest.raises(ValueError, match="without --vision_tower"):
        check_arguments(["--model_name_or_path", str(qwen_dir)])
    check_arguments(["--model_name_or_path", str(qwen_dir), "--vision_tower", "mmclip:x", "--version", "qwen_1_5"])


# ----------------------------------------------------------------------------- generation
@pytest.fixture(scope="module")
def tiny_llava_qwen(qwen_dir, qwen_root):
    """A random LLaVA-Qwen2 with an MMCLIP tower, as upstream train() leaves it."""
    model_args = SimpleNamespace(
        vision_tower=f"mmclip:{build_mmclip_checkpoint(qwen_root / 'mmclip')}", mm_vision_select_layer=-2,
        mm_vision_select_feature="patch", pretrain_mm_mlp_adapter=None, mm_patch_merge_type="flat",
        mm_projector_type="mlp2x_gelu",
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlavaQwen2ForCausalLM.from_pretrained(str(qwen_dir)).eval()
    with registered():
        model.get_model().initialize_vision_modules(model_args)
    model.config.tokenizer_padding_side = "right"  # what training stores
    return model, model.get_vision_tower().image_processor


def test_answers_carry_no_bos_stand_in_and_batches_pad_left(tiny_llava_qwen, qwen_tokenizer, qwen_data):
    from llava_patches.predict import answer, answer_batch, build_prompt, default_conv_mode, load_image

    model, processor = tiny_llava_qwen
    assert default_conv_mode(model) == "qwen_2" and model.config.bos_token_id == qwen_tokenizer.pad_token_id
    images = [load_image(qwen_data[1] / f"000{i}.png") for i in range(3)]
    queries = ["What shape is shown in the diagram?", "Is it a polygon?", "Which letter is written in the corner of it?"]
    single = [answer(qwen_tokenizer, model, processor, im, q, max_new_tokens=5) for im, q in zip(images, queries)]
    assert all(single), single
    assert answer_batch(qwen_tokenizer, model, processor, images, queries, max_new_tokens=5) == single
    assert model.config.tokenizer_padding_side == "right", "left padding is only for the generate call"
    from llava.mm_utils import process_images, tokenizer_image_token

    ids = tokenizer_image_token(build_prompt(queries[0], "qwen_2", False), qwen_tokenizer, return_tensors="pt")[None]
    out = model.generate(ids, images=process_images(images[:1], processor, model.config), max_new_tokens=5,
                         do_sample=False, pad_token_id=qwen_tokenizer.pad_token_id)  # fmt: skip
    assert out.shape[1] == 5 and out[0, 0] != model.config.bos_token_id, "output is only the generated tokens"
    model.generation_config.bos_token_id = model.config.bos_token_id = None  # a Qwen config without one
    try:
        assert answer(qwen_tokenizer, model, processor, images[0], queries[0], max_new_tokens=5) == single[0]
    finally:
        model.generation_config.bos_token_id = model.config.bos_token_id = qwen_tokenizer.pad_token_id


def test_answers_stop_at_im_end(tiny_llava_qwen, qwen_tokenizer, qwen_data):
    from llava_patches.predict import answer, build_prompt, load_image, stop_token_ids

    model, processor = tiny_llava_qwen
    im_end = qwen_tokenizer.convert_tokens_to_ids(IM_END)
    assert stop_token_ids(qwen_tokenizer, "qwen_2")[0] == im_end and stop_token_ids(qwen_tokenizer, "v1") is None
    image, query = load_image(qwen_data[1] / "0000.png"), "What shape is shown in the diagram?"
    free = answer(qwen_tokenizer, model, processor, image, query, max_new_tokens=6)
    from llava.mm_utils import process_images, tokenizer_image_token

    ids = tokenizer_image_token(build_prompt(query, "qwen_2", False), qwen_tokenizer, return_tensors="pt")[None]
    first = model.generate(ids, images=process_images([image], processor, model.config), max_new_tokens=2,
                           do_sample=False, pad_token_id=qwen_tokenizer.pad_token_id)[0]  # fmt: skip
    saved = model.lm_head.weight[im_end].clone()
    with torch.no_grad():  # make <|im_end|> outscore the second token the model would pick
        model.lm_head.weight[im_end] = 2 * model.lm_head.weight[first[1]]
    try:
        stopped = answer(qwen_tokenizer, model, processor, image, query, max_new_tokens=6)
    finally:
        with torch.no_grad():
            model.lm_head.weight[im_end] = saved
    assert len(qwen_tokenizer(stopped).input_ids) < len(qwen_tokenizer(free).input_ids)
    assert IM_END not in stopped and free.startswith(stopped)


# ----------------------------------------------------------------------------- the tiny Qwen2 itself
def test_tiny_qwen2_tokenizer_is_qwen_shaped(qwen_dir, qwen_tokenizer):
    from llava_patches.tiny_llm import get_tiny_llm, is_tiny_llm, list_tiny_llms

    fast = AutoTokenizer.from_pretrained(str(qwen_dir))
    assert (qwen_tokenizer.bos_token, qwen_tokenizer.unk_token, qwen_tokenizer.pad_token, qwen_tokenizer.eos_token) == (
        None, None, "<|endoftext|>", "<|im_end|>")  # fmt: skip
    text = TEXT + " Zürich 12°\n\n<|im_end|>\n"
    assert qwen_tokenizer(text).input_ids == fast(text).input_ids
    assert qwen_tokenizer.decode(qwen_tokenizer(text).input_ids) == text
    specials = qwen_tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    assert specials == [len(qwen_tokenizer) - 3, len(qwen_tokenizer) - 2, len(qwen_tokenizer) - 1]  # after the vocabulary, as in Qwen
    assert list_tiny_llms() == ["tiny", "tiny-llama", "tiny-qwen2"] and is_tiny_llm("tiny-qwen2")
    with pytest.raises(KeyError, match="unknown tiny LLM 'tiny-gpt'; known: tiny, tiny-llama, tiny-qwen2"):
        get_tiny_llm("tiny-gpt")


def test_tiny_llm_cli_builds_tiny_qwen2_from_the_run_texts(qwen_data, tmp_path, capsys):
    from llava_patches.tiny_llm import main

    assert main(["--model", "tiny-qwen2", "--corpus", str(qwen_data[0]), "--out", str(tmp_path / "llm"),
                 "--hidden-size", "32", "--vocab-size", "512"]) == 0  # fmt: skip
    config = json.loads((tmp_path / "llm" / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["hidden_size"] == 32
    assert "tiny-qwen2 written to" in capsys.readouterr().out
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "llm"), use_fast=False)
    assert len(tok("The diagram shows").input_ids) == 3, "the tokenizer learned the run's own texts"
