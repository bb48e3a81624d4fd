"""MMCLIP training data: both on-disk formats, K negatives with masks, bad records reported and skipped."""
import json
from pathlib import Path

import pytest
import torch
from mmclip_fixtures import caption, make_dataset_dir, make_reference_json, write_png
from PIL import Image
from torch.utils.data import DataLoader

from mmclip_plugin.config import DataConfig, ModelConfig
from mmclip_plugin.data import (
    TEXT_KINDS,
    Collate,
    ContrastiveDataset,
    build_dataset,
    read_samples,
)
from mmclip_plugin.model import create_model
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import FormatError


@pytest.fixture(scope="module")
def model():
    return create_model(ModelConfig(force_image_size=32))


def _dataset(samples, model, **kw):
    return ContrastiveDataset(samples, model.preprocess_val, model.tokenize, **kw)


def _collate(model, ki, kt):
    return Collate(ki, kt, model.image_size, model.model_cfg["text_cfg"]["context_length"])


def test_reads_dataset_dir_train_split_only(tmp_path):
    root = make_dataset_dir(tmp_path / "d", n=5, k_images=2, k_texts=3, val=2)
    samples, bad = read_samples(root)
    assert not bad
    assert [s.caption for s in samples] == [caption(i) for i in range(5)]
    assert all(Path(s.image).is_file() and len(s.image_negatives) == 2 for s in samples)
    assert [t.kind for t in samples[0].text_negatives] == ["rule", "retrieval", "perturbation"]
    assert samples[0].image_negatives[1].caption == caption(0, 2)
    val, _ = read_samples(root, split="val")
    assert [s.caption for s in val] == [caption(5), caption(6)]


def test_reads_reference_json_and_merges_image_and_text_files(tmp_path):
    image_json, text_json = make_reference_json(tmp_path / "ref", n=4, k_images=3, k_texts=2)
    only_images, bad = read_samples(image_json)
    assert not bad and len(only_images) == 4
    assert all(len(s.image_negatives) == 3 and not s.text_negatives for s in only_images)
    merged, bad = read_samples([image_json, text_json], reference_text_kind="retrieval")
    assert not bad and len(merged) == 4
    assert all(len(s.image_negatives) == 3 and len(s.text_negatives) == 2 for s in merged)
    assert {t.kind for s in merged for t in s.text_negatives} == {"retrieval"}
    assert merged[2].caption == caption(2)
    again, _ = read_samples([image_json, text_json, image_json])  # the same file twice adds no duplicate
    assert [len(s.image_negatives) for s in again] == [3] * 4


def test_records_the_format_refuses_are_reported_and_skipped(tmp_path):
    # The same rules as `mmgeolm-data` and `mmclip-eval`: a record naming a missing file or holding an empty
    # caption is refused whole (data_recipes.formats.dataset owns the format), the others are read.
    root = make_dataset_dir(tmp_path / "d", n=6, k_images=2, k_texts=2)
    lines = [json.loads(line) for line in (root / "samples.jsonl").read_text().splitlines()]
    lines[0]["image"] = "images/nope.png"
    lines[1]["caption"] = "  "
    lines[2]["negatives"][1]["image"] = "images/gone.png"
    lines[3]["text_negatives"][0]["caption"] = ""
    (root / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + "{not json\n")
    samples, bad = read_samples(root)
    assert [s.caption for s in samples] == [caption(4), caption(5)]
    found = {(b.record, b.field) for b in bad}
    assert found == {("line 1", "image"), ("line 2", "caption"), ("line 3", "negatives[1].image"),
                     ("line 4", "text_negatives[0].caption"), ("line 7", "")}
    assert all(b.file == str(root / "samples.jsonl") for b in bad)
    assert any("nope.png" in str(b) and b.field == "image" for b in bad)


def test_reference_bad_records(tmp_path):
    image_json, _ = make_reference_json(tmp_path / "ref", n=3)
    recs = json.loads(image_json.read_text())
    recs[0]["conversations"] = [{"from": "human", "value": "Q"}]  # no answer turn: no caption
    recs[1]["negative_image_path"][0] = "neg/missing.png"
    recs.append({"image": "x.png"})
    recs.append({"positive_image_path": "pos/2.png", "negative_image_path": [], "conversations": "oops"})
    image_json.write_text(json.dumps(recs))
    samples, bad = read_samples(image_json)
    assert len(samples) == 1
    assert {(b.record, b.field) for b in bad} == {
        ("record 0", "conversations"), ("record 1", "negative_image_path[0]"), ("record 3", "positive_image_path"),
        ("record 4", "conversations")}


def test_unknown_path_and_bad_file_raise(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_samples(tmp_path / "nothing")
    (tmp_path / "d").mkdir()
    with pytest.raises(FormatError, match="samples.jsonl"):
        read_samples(tmp_path / "d")
    (tmp_path / "x.json").write_text("[1, 2")
    with pytest.raises(FormatError, match="x.json"):
        read_samples(tmp_path / "x.json")
    (tmp_path / "latin1.json").write_bytes('[{"positive_image_path": "é"}]'.encode("latin-1"))
    with pytest.raises(FormatError, match=r"latin1.json: line 1: not UTF-8"):
        read_samples(tmp_path / "latin1.json")


@pytest.mark.parametrize("ki, kt", [(0, 0), (2, 1), (5, 6)])
def test_collate_pads_to_k_with_masks(tmp_path, model, ki, kt):
    root = make_dataset_dir(tmp_path / "d", n=3, k_images=3, k_texts=3)
    samples, _ = read_samples(root)
    samples[1].image_negatives = samples[1].image_negatives[:1]
    samples[2].text_negatives = []
    ds = _dataset(samples, model, image_negatives=ki, text_negatives=kt)
    batch = _collate(model, ki, kt)([ds[i] for i in range(3)])
    length = model.model_cfg["text_cfg"]["context_length"]
    assert batch["images"].shape == (3, 3, 32, 32) and batch["texts"].shape == (3, length)
    assert batch["neg_images"].shape == (3, ki, 3, 32, 32) and batch["neg_texts"].shape == (3, kt, length)
    assert batch["neg_image_mask"].sum(1).tolist() == [min(3, ki), min(1, ki), min(3, ki)]
    assert batch["neg_text_mask"].sum(1).tolist() == [min(3, kt), min(3, kt), 0]
    assert not batch["neg_images"][~batch["neg_image_mask"]].any()  # padding is zero
    assert not batch["neg_texts"][~batch["neg_text_mask"]].any()
    kinds = [TEXT_KINDS.index(t.kind) for t in samples[0].text_negatives][:kt]
    assert batch["neg_text_kind"][0, : len(kinds)].tolist() == kinds
    assert batch["neg_image_mask"].dtype == torch.bool and batch["neg_text_kind"].dtype == torch.long
    # the first negative image is the one from the file (fixed sampling keeps the order)
    if ki:
        with Image.open(samples[0].image_negatives[0].image) as img:
            assert torch.equal(batch["neg_images"][0, 0], model.preprocess_val(img.convert("RGB")))


def test_random_sampling_is_seeded_by_seed_epoch_index(tmp_path, model):
    root = make_dataset_dir(tmp_path / "d", n=2, k_images=6, k_texts=6)
    samples, _ = read_samples(root)

    def picked(seed, epoch):
        ds = _dataset(samples, model, image_negatives=2, text_negatives=3, sample="random", seed=seed)
        ds.set_epoch(epoch)
        return ds[0]["neg_texts"].tolist(), ds[0]["neg_images"].sum().item()

    assert picked(0, 0) == picked(0, 0)
    draws = {str(picked(s, e)) for s in (0, 1) for e in (0, 1, 2)}
    assert len(draws) > 1
    fixed = _dataset(samples, model, image_negatives=0, text_negatives=2)[0]
    first_two = model.tokenize([t.caption for t in samples[0].text_negatives[:2]])
    assert torch.equal(fixed["neg_texts"], first_two)


def test_corrupt_png_in_worker_is_dropped_and_counted(tmp_path, model):
    root = make_dataset_dir(tmp_path / "d", n=4, k_images=2, k_texts=1)
    (root / "images" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # positive of record 2
    (root / "images" / "2_neg0.png").write_bytes(b"not a png at all")  # a negative of record 3
    samples, bad = read_samples(root)
    assert not bad and len(samples) == 4  # cheap checks pass: the files exist
    ds = _dataset(samples, model, image_negatives=2, text_negatives=1)
    loader = DataLoader(ds, batch_size=4, num_workers=1, collate_fn=_collate(model, 2, 1))
    (batch,) = list(loader)
    assert batch["indices"].tolist() == [0, 2, 3]
    assert batch["images"].shape[0] == 3 and batch["neg_image_mask"].sum(1).tolist() == [2, 1, 2]
    assert sorted((b.record, b.field) for b in batch["bad"]) == [("id s1", "image"), ("id s2", "negatives[0]")]
    assert all(b.file.endswith("samples.jsonl") and "cannot load" in b.reason for b in batch["bad"])


def test_hard_batches_expose_negatives_as_items_with_groups(tmp_path, model):
    root = make_dataset_dir(tmp_path / "d", n=3, k_images=2, k_texts=2)
    samples, _ = read_samples(root)
    ds = _dataset(samples, model, image_negatives=2, text_negatives=2, hard_batches=True)
    assert len(ds) == 9 and ds.groups == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    pos, neg = ds.items[0], ds.items[1]
    assert neg.image == samples[0].image_negatives[0].image and neg.caption == caption(0, 1)
    # a negative item's negatives are the other members of its group (the positive first)
    assert neg.neg_images == [samples[0].image, samples[0].image_negatives[1].image]
    assert [c for c, _ in neg.neg_texts] == [caption(0), caption(0, 2)]
    assert pos.neg_images == [n.image for n in samples[0].image_negatives]


def test_hard_batch_twins_are_not_each_others_negatives(tmp_path, model):
    """Two negatives removing the same fact share a caption: neither is a negative of the other's caption."""
    root = make_dataset_dir(tmp_path / "d", n=2, k_images=3, k_texts=1)
    samples, _ = read_samples(root)
    twin = samples[0].image_negatives[1]
    samples[0].image_negatives[2] = type(twin)(samples[0].image_negatives[2].image, twin.caption, twin.type)
    ds = _dataset(samples, model, image_negatives=3, text_negatives=3, hard_batches=True)
    first, second = ds.items[2], ds.items[3]  # the twins: same caption, two images
    assert first.caption == second.caption and first.image != second.image
    assert second.image not in first.neg_images and first.caption not in [c for c, _ in second.neg_texts]
    assert first.neg_images == [samples[0].image, samples[0].image_negatives[0].image]
    assert first.pair_id[0] == second.pair_id[0] and first.pair_id[1] != second.pair_id[1]
    loader = DataLoader(ds, batch_sampler=[[0, 1, 2, 3]], collate_fn=_collate(model, 3, 3))
    ids = next(iter(loader))["pair_ids"]  # the loss leaves the twins' in-batch entries out
    assert ids.shape == (4, 2) and ids[2, 0] == ids[3, 0] and len(set(ids[:, 1].tolist())) == 4


def test_build_dataset_from_config(tmp_path, model):
    image_json, text_json = make_reference_json(tmp_path / "ref", n=3)
    root = make_dataset_dir(tmp_path / "d", n=2)
    ds, bad = build_dataset(DataConfig(train=[str(root), str(image_json), str(text_json)], image_negatives=1), model, seed=0)
    assert len(ds) == 5 and not bad
    with pytest.raises(InputError, match="data.train"):
        build_dataset(DataConfig(), model, seed=0)
    empty = tmp_path / "e"
    empty.mkdir()
    (empty / "samples.jsonl").write_text(json.dumps({"image": "x.png", "caption": "c"}) + "\n")
    with pytest.raises(InputError, match="no valid training samples"):
        build_dataset(DataConfig(train=str(empty)), model, seed=0)


def test_augmentation_is_reproducible(tmp_path, model):
    write_png(tmp_path / "a.png", 1, size=48)
    from mmclip_plugin.data import Sample

    samples = [Sample(str(tmp_path / "a.png"), "a caption")]
    ds = ContrastiveDataset(samples, model.preprocess_train, model.tokenize, augment=True, seed=3)
    first = ds[0]["image"]
    assert torch.equal(first, ds[0]["image"])
    ds.set_epoch(1)
    assert not torch.equal(first, ds[0]["image"])
