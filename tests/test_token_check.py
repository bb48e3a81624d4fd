"""The caption tokenization check: data side (torch-free tokenizers, recipe option) and mmclip-train side."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hf_fixtures import clip_tokenizer, siglip_model_dir, siglip_tokenizer

from data_recipes.build.recipe import load_recipe
from data_recipes.build.runner import build_dataset
from data_recipes.diagrams.captions import symbols_as_words
from data_recipes.text_negatives.rules import generate_rule_negatives
from data_recipes.text_negatives.token_check import (
    CLEANED,
    CUT,
    clean_text,
    describe_change,
    find_token_collisions,
    load_tokenizer,
)
from mmgeolm_core.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """The shipped tiny recipe built twice with a SigLIP-style tokenizer named: symbols as unicode, as words."""
    root = tmp_path_factory.mktemp("token-check")
    siglip_tokenizer(root / "siglip-tok")
    out = {}
    for symbols in ("unicode", "words"):
        recipe = yaml.safe_load((ROOT / "data_recipes" / "recipes" / "tiny.yaml").read_text())
        recipe.update(name=f"tiny-{symbols}", num=8, captions={"symbols": symbols, "check_tokenizer": "siglip-tok"})
        (root / f"{symbols}.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True))
        manifest = build_dataset(load_recipe(root / f"{symbols}.yaml"), root / symbols)
        out[symbols] = (root / symbols, manifest)
    return out


def _samples(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "samples.jsonl").read_text().splitlines()]


def test_collisions_are_found_and_described():
    def encode(texts):  # a tokenizer that cannot see punctuation
        return [tuple(clean_text(t, "canonicalize").split()) for t in texts]

    items = [("s0", "AB > CD.", [("AB < CD.", "rule"), ("AB > CE.", "rule")]), ("s1", "x", [("y", "retrieval")])]
    report = find_token_collisions(items, encode, tokenizer="words")
    assert (report.samples, report.negatives, len(report.collisions)) == (2, 3, 1)
    assert report.collisions[0].change == "'>' -> '<'" and report.by_kind == {"rule": 1}
    assert "1 of 3 hard negatives" in report.summary() and report.to_dict()["by_change"] == {"'>' -> '<'": 1}
    assert describe_change("AB ∥ CD", "AB ⊥ CD") == "'∥' -> '⊥'"


def test_data_side_tokenizers_give_transformers_ids(built, tmp_path):
    """The torch-free tokenizers of the check give transformers' ids on the engine's captions."""
    from transformers import AutoTokenizer, CLIPTokenizerFast

    captions = [s["caption"] for s in _samples(built["unicode"][0])]
    captions += [t["caption"] for s in _samples(built["unicode"][0]) for t in s["text_negatives"]]
    siglip = siglip_tokenizer(tmp_path / "siglip")
    ours = load_tokenizer(siglip, context_length=64)
    assert ours.clean == "canonicalize"
    assert ours(captions) == AutoTokenizer.from_pretrained(siglip)(captions, max_length=64, truncation=True).input_ids
    clip = clip_tokenizer(tmp_path / "clip")
    CLIPTokenizerFast.from_pretrained(clip).save_pretrained(clip)  # writes tokenizer.json
    ours = load_tokenizer(clip / "tokenizer.json", context_length=20)
    expected = AutoTokenizer.from_pretrained(clip)(captions, max_length=20, truncation=True).input_ids
    assert ours(captions) == expected


def test_build_reports_collisions_in_the_manifest(built):
    for symbols in ("unicode", "words"):
        check = built[symbols][1]["tokenization_check"]
        assert check["samples"] == 8 and check["negatives"] > 0 and check["tokenizer"].endswith("siglip-tok")
        assert sum(check["by_cause"].values()) == check["collisions"]
        assert all(e["cause"] in (CUT, CLEANED) and e["negative"] != e["positive"] for e in check["examples"])
    samples = _samples(built["words"][0])
    assert not any(s in t["caption"] for x in samples for t in [x, *x["text_negatives"]] for s in "∥⊥∠△≅∼⊙°")
    assert any(t["kind"] == "rule" for x in samples for t in x["text_negatives"])  # the rules still edit words captions


def test_symbols_collide_for_a_vocabulary_without_them_and_words_do_not(tmp_path):
    tokenizer = load_tokenizer(siglip_tokenizer(tmp_path / "tok"), context_length=64)
    pairs = [("In the figure, AB ∥ CD.", "In the figure, AB ⊥ CD."),
             ("In the figure, △ABC ∼ △DEF.", "In the figure, △ABC ≅ △DEF."),
             ("In the figure, AB > CD.", "In the figure, AB < CD.")]  # ASCII punctuation: SigLIP deletes it
    report = find_token_collisions([(str(i), a, [(b, "rule")]) for i, (a, b) in enumerate(pairs)], tokenizer,
                                   encode_uncut=tokenizer.uncut)
    assert len(report.collisions) == 3 and report.by_cause == {CLEANED: 3}
    words = [(str(i), symbols_as_words(a), [(symbols_as_words(b), "rule")]) for i, (a, b) in enumerate(pairs)]
    assert not find_token_collisions(words, tokenizer).collisions
    long = "In the figure, " + "AB is a segment and " * 10
    cut = find_token_collisions([("x", long + "CD is 5.", [(long + "CD is 6.", "rule")])], tokenizer,
                                encode_uncut=tokenizer.uncut)
    assert cut.by_cause == {CUT: 1}


@pytest.mark.parametrize("caption,rule", [
    ("In the figure, AB ∥ CD and ∠ABC = 90°.", "parallel_perpendicular"),
    ("In the figure, △ABC ≅ △DEF.", "similar_congruent"),
    ("In the figure, ∠ABC = 40°.", "number_angle"),
])
def test_rule_negatives_work_on_captions_written_as_words(caption, rule):
    import numpy as np

    words = symbols_as_words(caption)
    negatives, _ = generate_rule_negatives(words, 8, np.random.default_rng(0))
    assert negatives and all(n.caption != words for n in negatives)
    assert not any(s in n.caption for n in negatives for s in "∥⊥∠△≅°")
    assert any(rule in n.rules for n in negatives)


def test_bad_tokenizer_paths(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(InputError, match="no tokenizer file"):
        load_tokenizer(tmp_path)
    (tmp_path / "broken.json").write_text("{}")
    with pytest.raises(InputError, match="not a readable tokenizer file"):
        load_tokenizer(tmp_path / "broken.json")


# ----------------------------------------------------------------------------- mmclip-train
@pytest.fixture(scope="module")
def siglip_ckpt(tmp_path_factory) -> Path:
    from mmclip_plugin.tower.hf_import import import_hf

    root = tmp_path_factory.mktemp("siglip-train")
    return import_hf(siglip_model_dir(root / "hf"), root / "ckpt")[0]


def _symbol_data(root: Path) -> Path:
    from mmclip_fixtures import make_dataset_dir

    data = make_dataset_dir(root, n=4, k_images=1, k_texts=2)
    lines = []
    for line in (data / "samples.jsonl").read_text().splitlines():
        sample = json.loads(line)
        sample["caption"] = f"In the figure, AB ∥ CD and {sample['caption']}."
        sample["text_negatives"] = [{"caption": sample["caption"].replace("∥", "⊥"), "kind": "rule", "rules": []},
                                    {"caption": sample["caption"].replace("AB", "EF"), "kind": "rule", "rules": []}]
        lines.append(json.dumps(sample))
    (data / "samples.jsonl").write_text("\n".join(lines) + "\n")
    return data


@pytest.mark.parametrize("mode", ["warn", "drop", "error"])
def test_mmclip_train_checks_with_the_models_tokenizer(siglip_ckpt, tmp_path, mode):
    from mmclip_plugin.config import load_config
    from mmclip_plugin.data import build_dataset as build_train_dataset
    from mmclip_plugin.model import load_checkpoint

    data = _symbol_data(tmp_path / "data")
    cfg = load_config(ROOT / "mmclip_plugin" / "configs" / "tiny-cpu.yaml",
                      [f"data.train={data}", f"data.tokenization_check={mode}", "data.num_workers=0"])
    model = load_checkpoint(siglip_ckpt)
    if mode == "error":
        with pytest.raises(InputError, match="4 of 12 hard negatives.*'∥' -> '⊥'.*tokenization_check=error"):
            build_train_dataset(cfg.data, model, 0)
        return
    dataset, _ = build_train_dataset(cfg.data, model, 0)
    report = dataset.token_check
    assert len(report.collisions) == 4 and report.by_change == {"'∥' -> '⊥'": 4}
    kept = [c for item in dataset.items for c, _ in item.neg_texts]
    assert any("⊥" in c for c in kept) == (mode == "warn")
    assert all("EF" in c or "⊥" in c for c in kept)
