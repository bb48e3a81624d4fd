"""Qwen's ChatML templates and label masking in upstream LLaVA: rendering, labels, tokenizer checks, workers.

Labels are produced by upstream's real ``LazySupervisedDataset`` (``preprocess_multimodal`` and
``preprocess``) inside our training patches, exactly as ``train()`` produces them, on a byte-level BPE
Qwen tokenizer trained in the test (``llava_patches.tiny_llm``). Every label run must decode to exactly
one answer plus ``<|im_end|>``.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import llava.conversation as conversation
import llava.train.train as upstream
import numpy as np
import pytest
import torch
from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava_fixtures import build_tiny_llama
from transformers import AutoTokenizer, CLIPImageProcessor, Qwen2TokenizerFast

from llava_patches.args import ExtraArguments
from llava_patches.qwen_chat import IM_END, get_template, templates
from llava_patches.train import training_patches

# ----------------------------------------------------------------------------- templates
MESSAGES = [("user", "<image>\nWhat shape is shown in the diagram?"), ("assistant", "The diagram shows square ABCD."),
            ("user", "Is it a polygon?")]  # fmt: skip


def _render(name: str) -> str:
    conv = get_template(name)
    for role, text in MESSAGES:
        conv.append_message(conv.roles[0 if role == "user" else 1], text)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


@pytest.mark.parametrize("name", ["qwen_2", "qwen_2_5", "qwen_1_5"])
def test_templates_render_what_apply_chat_template_renders_token_for_token(name, qwen_tokenizer):
    system = get_template(name).system.split("\n", 1)[1]
    messages = [{"role": "system", "content": system}] + [{"role": r, "content": t} for r, t in MESSAGES]
    chatml = qwen_tokenizer.default_chat_template  # transformers' own ChatML, independent of our templates
    expected = qwen_tokenizer.apply_chat_template(messages, chat_template=chatml, tokenize=False, add_generation_prompt=True)
    assert _render(name) == expected
    ids = qwen_tokenizer.apply_chat_template(messages, chat_template=chatml, tokenize=True, add_generation_prompt=True)
    assert qwen_tokenizer(_render(name)).input_ids == ids


def test_qwen_2_matches_the_tokenizer_own_chat_template_and_1_5_is_its_alias(qwen_tokenizer):
    messages = [{"role": r, "content": t} for r, t in MESSAGES]
    assert _render("qwen_2") == qwen_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert templates()["qwen_1_5"] is templates()["qwen_2"]
    assert "You are Qwen, created by Alibaba Cloud." in get_template("qwen_2_5").system
    with pytest.raises(ValueError, match="unknown conversation template 'qwen_3'.*qwen_2_5.*vicuna_v1"):
        get_template("qwen_3")


# ----------------------------------------------------------------------------- labels through upstream's dataset
def _dataset(tokenizer, records: list[dict], images: Path, tmp_path: Path, version: str):
    """Upstream's LazySupervisedDataset items for ``records``, preprocessed as train() would with ``version``."""
    path = tmp_path / f"records-{version}.json"
    path.write_text(json.dumps(records))
    data_args = upstream.DataArguments(data_path=str(path), lazy_preprocess=True, image_folder=str(images))
    data_args.image_processor = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    data_args.is_multimodal, data_args.mm_use_im_start_end = True, False
    with training_patches(ExtraArguments()):
        conversation.default_conversation = conversation.conv_templates[version]  # what train() does
        module = upstream.make_supervised_data_module(tokenizer=tokenizer, data_args=data_args)
        return [module["train_dataset"][i] for i in range(len(records))]


def _answers(record: dict) -> list[str]:
    return [t["value"] for t in record["conversations"] if t["from"] == "gpt"]


def _label_runs(labels: torch.Tensor) -> list[list[int]]:
    runs, current = [], []
    for t in labels.tolist():
        if t == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(t)
    return runs + ([current] if current else [])


@pytest.mark.parametrize("version", ["qwen_2", "qwen_2_5"])
def test_labels_are_exactly_each_answer_plus_im_end_for_1_2_3_turns(version, qwen_tokenizer, qwen_data, tmp_path, capsys):
    records = json.loads(qwen_data[0].read_text())
    text_only = {**copy.deepcopy(records[1]), "id": "text-only"}
    del text_only["image"]
    text_only["conversations"][0]["value"] = "What is a polygon?"
    records.append(text_only)
    assert {len(_answers(r)) for r in records} == {1, 2, 3}
    for record, item in zip(records, _dataset(qwen_tokenizer, records, qwen_data[1], tmp_path, version)):
        runs = [qwen_tokenizer.decode(run) for run in _label_runs(item["labels"])]
        assert runs == [a + IM_END for a in _answers(record)], record["id"]
        images = int((item["input_ids"] == IMAGE_TOKEN_INDEX).sum())
        assert images == ("image" in record), record["id"]
        # the ids are the whole ChatML conversation, with the image token where <image> was
        conv = get_template(version)
        for turn in record["conversations"]:
            conv.append_message(conv.roles[turn["from"] == "gpt"], turn["value"])
        text = qwen_tokenizer.decode([t if t != IMAGE_TOKEN_INDEX else qwen_tokenizer.pad_token_id for t in item["input_ids"]])
        assert text.replace("<|endoftext|>", "<image>") == conv.get_prompt(), record["id"]
    assert "mismatch" not in capsys.readouterr().out


def _shuffled_tokenizer(source: Path, directory: Path):
    """The same BPE with permuted ids and the special tokens at ids 0-2 (Qwen has them last, newline at 198)."""
    vocab = json.loads((source / "vocab.json").read_text())
    order = np.random.default_rng(0).permutation(len(vocab))
    shuffled = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    shuffled.update({token: int(order[i]) + 3 for i, token in enumerate(vocab)})
    directory.mkdir()
    (directory / "vocab.json").write_text(json.dumps(shuffled))
    (directory / "merges.txt").write_text((source / "merges.txt").read_text())
    fast = Qwen2TokenizerFast(vocab_file=str(directory / "vocab.json"), merges_file=str(directory / "merges.txt"),
                              unk_token=None, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>")  # fmt: skip
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    fast.save_pretrained(str(directory))
    return AutoTokenizer.from_pretrained(str(directory), use_fast=False)


def test_a_tokenizer_with_shuffled_ids_still_gets_the_right_labels(qwen_dir, qwen_tokenizer, qwen_data, tmp_path):
    shuffled = _shuffled_tokenizer(qwen_dir, tmp_path / "shuffled")
    newline = shuffled("\n").input_ids
    assert newline != qwen_tokenizer("\n").input_ids and newline != [198], "the newline must move"
    assert shuffled.convert_tokens_to_ids(IM_END) == 2
    records = json.loads(qwen_data[0].read_text())
    for record, item in zip(records, _dataset(shuffled, records, qwen_data[1], tmp_path, "qwen_2")):
        assert [shuffled.decode(r) for r in _label_runs(item["labels"])] == [a + IM_END for a in _answers(record)]


def test_a_system_turn_replaces_the_default_prompt_and_bad_turn_order_is_refused(qwen_tokenizer, qwen_data, tmp_path):
    record = json.loads(qwen_data[0].read_text())[0]
    record["conversations"].insert(0, {"from": "system", "value": "Answer tersely."})
    (item,) = _dataset(qwen_tokenizer, [record], qwen_data[1], tmp_path, "qwen_2")
    assert qwen_tokenizer.decode(item["input_ids"][:20]).startswith("<|im_start|>system\nAnswer tersely.<|im_end|>")
    record["conversations"] = record["conversations"][1:2] * 2  # two human turns in a row
    with pytest.raises(ValueError, match="turn 1: 'from' is 'human', expected 'gpt'"):
        _dataset(qwen_tokenizer, [record], qwen_data[1], tmp_path, "qwen_2")


def test_template_and_tokenizer_mismatches_are_refused(qwen_root, qwen_tokenizer, qwen_data, tmp_path):
    records = json.loads(qwen_data[0].read_text())[:1]
    with pytest.raises(ValueError, match="'v1' masks labels assuming a Llama SentencePiece tokenizer"):
        _dataset(qwen_tokenizer, records, qwen_data[1], tmp_path, "v1")
    llama_tokenizer = AutoTokenizer.from_pretrained(str(build_tiny_llama(qwen_root / "tiny-llama")), use_fast=False)
    llama_tokenizer.pad_token = llama_tokenizer.unk_token
    with pytest.raises(ValueError, match="splits '<\\|im_start\\|>' into .* tokens"):
        _dataset(llama_tokenizer, records, qwen_data[1], tmp_path, "qwen_2")


def test_pad_token_is_restored_only_where_upstream_erased_it(qwen_root, qwen_tokenizer):
    from llava_patches.train_data import restore_pad_token

    qwen = copy.deepcopy(qwen_tokenizer)
    qwen.pad_token = qwen.unk_token  # upstream train(): Qwen has no unk, so pad becomes None
    assert qwen.pad_token is None and restore_pad_token(qwen)
    assert qwen.pad_token == "<|endoftext|>"
    llama = AutoTokenizer.from_pretrained(str(build_tiny_llama(qwen_root / "tiny-llama")), use_fast=False)
    llama.pad_token = llama.unk_token
    assert not restore_pad_token(llama) and llama.pad_token == "<unk>"


def test_a_spawned_dataloader_worker_preprocesses_with_the_run_template(qwen_tokenizer, qwen_data, tmp_path):
    records = json.loads(qwen_data[0].read_text())[:2]
    in_process = _dataset(qwen_tokenizer, records, qwen_data[1], tmp_path, "qwen_2")
    path = tmp_path / "records-qwen_2.json"
    data_args = upstream.DataArguments(data_path=str(path), lazy_preprocess=True, image_folder=str(qwen_data[1]))
    data_args.image_processor = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    data_args.is_multimodal, data_args.mm_use_im_start_end = True, False
    with training_patches(ExtraArguments()):
        conversation.default_conversation = conversation.conv_templates["qwen_2"]
        dataset = upstream.make_supervised_data_module(tokenizer=qwen_tokenizer, data_args=data_args)["train_dataset"]
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=1, multiprocessing_context="spawn")
        from_worker = list(loader)
    for a, b in zip(in_process, from_worker):
        assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["input_ids"], b["input_ids"])
