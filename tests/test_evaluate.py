"""MMCLIP evaluation: known-answer metrics, the JSON schema, several checkpoints, an overfit model beats chance."""
import json

import pytest
import torch
from mmclip_fixtures import make_dataset_dir

from mmclip_plugin.cli import eval_main
from mmclip_plugin.config import ModelConfig, load_config
from mmclip_plugin.data import ImageNegative, Sample, TextNegative, read_samples
from mmclip_plugin.evaluate import (
    EvalConfig,
    checkpoint_names,
    compute_metrics,
    evaluate_checkpoints,
    evaluate_model,
    load_eval_model,
)
from mmclip_plugin.model import create_model
from mmclip_plugin.train import train

TINY = ["model.force_image_size=32", "data.batch_size=4", "data.num_workers=0", "progress=false", "plot=false",
        "data.image_negatives=2", "data.text_negatives=2", "log_every=5"]


def _unit(*values: float) -> torch.Tensor:
    v = torch.tensor(values, dtype=torch.float32)
    return v / v.norm()


def _known_case():
    """Two samples with hand-set 2-d embeddings; every score below is worked out by hand."""
    s0 = Sample("i0", "c0", [ImageNegative("i0n0", "c0n0", "move"), ImageNegative("i0n1", None, "swap")],
                [TextNegative("c0n0", "perturbation"), TextNegative("c0r", "rule")])
    s1 = Sample("i1", "c1", [ImageNegative("i1n0", "c1n0", "move")],
                [TextNegative("c1n0", "perturbation"), TextNegative("c1q", "retrieval"), TextNegative("c1r", "rule")])
    images = {"i0": _unit(1, 0), "i0n0": _unit(1, 0.5), "i0n1": _unit(-1, 0),  # c0 prefers i0 to both negatives
              "i1": _unit(0, 1), "i1n0": _unit(0.2, 1)}  # c1 = (0.3, 1) prefers its negative i1n0
    texts = {"c0": _unit(1, 0), "c0n0": _unit(1, 0.2), "c0r": _unit(1, -1),  # i0 prefers c0 to both
             "c1": _unit(0.3, 1), "c1n0": _unit(0, 1), "c1q": _unit(1, 0), "c1r": _unit(-1, 0)}  # i1 prefers c1n0
    img_row = {k: i for i, k in enumerate(images)}
    txt_row = {k: i for i, k in enumerate(texts)}
    return [s0, s1], torch.stack(list(images.values())), img_row, torch.stack(list(texts.values())), txt_row


def test_known_answer_metrics():
    samples, img, img_row, txt, txt_row = _known_case()
    r = compute_metrics(samples, img, img_row, txt, txt_row)
    assert r["t2i_hard_acc"] == 0.5 and r["i2t_hard_acc"] == 0.5
    assert r["chance"]["t2i_hard_acc"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert r["chance"]["i2t_hard_acc"] == pytest.approx((1 / 3 + 1 / 4) / 2)
    assert r["per_type"]["move"] == {"t2i_acc": 0.5, "t2i_n": 2, "i2t_acc": 0.5, "i2t_n": 2, "t2i_paired_acc": 0.0}
    assert r["per_type"]["swap"] == {"t2i_acc": 1.0, "t2i_n": 1, "i2t_acc": None, "i2t_n": 0,  # no caption
                                     "t2i_paired_acc": None}
    # pairs: c0 prefers i0 but c0n0 = (1, .2) also prefers i0 (.98) to its own i0n0 (.96); c1n0 = (0, 1)
    # prefers i1 (1.0) to i1n0 (.98): no negative caption picks its own image, so no pair is right
    assert (r["t2i_paired_acc"], r["t2i_negative_caption_acc"], r["counts"]["t2i_pairs"]) == (0.0, 0.0, 2)
    assert r["chance"]["t2i_paired_acc"] == 0.25
    assert r["hits"] == {"t2i_hard": [1, 0], "t2i_paired": [0, 0]}  # per row, for intervals
    assert list(r["per_kind"]) == ["perturbation", "rule", "retrieval"]
    assert r["per_kind"]["perturbation"]["acc"] == 0.5 and r["per_kind"]["perturbation"]["chance"] == 0.5
    assert r["per_kind"]["rule"]["acc"] == 1.0 and r["per_kind"]["rule"]["rows"] == 2
    assert r["per_kind"]["retrieval"] == {"acc": 1.0, "pairwise_acc": 1.0, "rows": 1, "negatives": 1, "chance": 0.5}
    assert r["counts"]["t2i_rows"] == 2 and r["counts"]["image_negatives"] == 3 and r["counts"]["text_negatives"] == 5
    # retrieval: i0 -> c0 (1.0 vs 0.29), i1 -> c1 (0.96 vs 0): both R@1 hits; chance 1/2 for R@1, capped at 1 for R@5
    assert r["retrieval"] == {"candidates": 2, "i2t_r1": 1.0, "i2t_r5": 1.0, "t2i_r1": 1.0, "t2i_r5": 1.0}
    assert r["chance"]["r1"] == 0.5 and r["chance"]["r5"] == 1.0
    # K limits: with one image negative each, sample 0 still wins and sample 1 still loses
    limited = compute_metrics(samples, img, img_row, txt, txt_row, image_negatives=1, text_negatives=1)
    assert limited["counts"]["image_negatives"] == 2 and "swap" not in limited["per_type"]
    assert limited["chance"]["t2i_hard_acc"] == 0.5


def test_paired_accuracy_is_zero_for_a_caption_blind_encoder_and_one_when_grounded():
    s = [Sample("p", "cp", [ImageNegative("n1", "c1", "move"), ImageNegative("n2", "c2", "drop")])]
    img = torch.stack([_unit(1, 0, 0), _unit(0, 1, 0), _unit(0, 0, 1)])
    rows = {"p": 0, "n1": 1, "n2": 2}
    blind = torch.stack([_unit(1, .1, .1)] * 3)  # every caption prefers the positive image
    r = compute_metrics(s, img, rows, blind, {"cp": 0, "c1": 1, "c2": 2})
    assert r["t2i_hard_acc"] == 1.0 and r["t2i_paired_acc"] == 0.0 and r["t2i_negative_caption_acc"] == 0.0
    grounded = torch.eye(3)  # each caption prefers its own image
    r = compute_metrics(s, img, rows, grounded, {"cp": 0, "c1": 1, "c2": 2})
    assert r["t2i_hard_acc"] == 1.0 and r["t2i_paired_acc"] == 1.0 and r["per_type"]["drop"]["t2i_paired_acc"] == 1.0


def test_ties_count_as_misses_and_same_caption_counts_as_retrieval_hit():
    same = _unit(1, 0)
    s = [Sample("a", "x", [ImageNegative("an", "y", "t")]), Sample("b", "x", [])]  # two images share caption "x"
    img = torch.stack([same, same, _unit(0, 1)])
    r = compute_metrics(s, img, {"a": 0, "an": 1, "b": 2}, torch.stack([same, _unit(0, 1)]), {"x": 0, "y": 1})
    assert r["t2i_hard_acc"] == 0.0  # the negative scores exactly as high: a miss
    assert r["retrieval"]["i2t_r1"] == 1.0  # image b's best caption is "x", its own text


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset_dir(tmp_path_factory.mktemp("evaldata") / "data", n=8, k_images=3, k_texts=3, val=4)


def test_untrained_model_schema_and_bounds(data):
    model = load_eval_model("none:mmclip-tiny-vit", seed=0)
    samples, _ = read_samples(data, split="val")
    r = evaluate_model(model, samples, EvalConfig(batch_size=5, device="cpu"))
    assert model.training  # evaluation restores the mode it found
    for key in ("i2t_hard_acc", "t2i_hard_acc"):
        assert 0.0 <= r[key] <= 1.0
    assert r["chance"]["t2i_hard_acc"] == pytest.approx(1 / 4) and r["chance"]["i2t_hard_acc"] == pytest.approx(1 / 4)
    assert r["chance"]["r1"] == pytest.approx(1 / 4) and r["chance"]["r5"] == 1.0
    assert set(r["per_type"]) == {n.type for s in samples for n in s.image_negatives}
    assert set(r["per_kind"]) == {t.kind for s in samples for t in s.text_negatives}
    assert r["counts"]["samples"] == 4 and r["counts"]["images_encoded"] == 16
    assert all(0 <= v <= 1 for k, v in r["retrieval"].items() if k != "candidates")
    json.dumps(r)  # JSON-safe


def test_untrained_spec_is_seeded():
    a, b = load_eval_model("none:mmclip-tiny-vit", seed=3), load_eval_model("none:mmclip-tiny-vit", seed=3)
    assert torch.equal(a.clip.visual.conv1.weight, b.clip.visual.conv1.weight)
    with pytest.raises(ValueError, match="none:<open_clip model name>"):
        load_eval_model("none:")


def test_checkpoint_names():
    assert checkpoint_names(["runs/a/final", "runs/b", "none:m"]) == ["a", "b", "none:m"]
    assert checkpoint_names(["x/run", "y/run"]) == ["x/run", "y/run"]  # ambiguous: full specs


@pytest.fixture(scope="module")
def overfit_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("overfit") / "run"
    cfg = load_config(None, ["model.name=mmclip-tiny-vit", f"data.train={data}", f"output_dir={out}", "steps=40",
                             "optim.lr=2e-3", "optim.warmup_ratio=0.0", "device=cpu", *TINY])
    torch.manual_seed(0)
    train(cfg)
    return out


def test_overfit_model_beats_chance_and_untrained(data, overfit_run):
    results = evaluate_checkpoints([str(overfit_run), "none:mmclip-tiny-vit"], data,
                                   EvalConfig(split="train", device="cpu"))
    trained, untrained = results["run"], results["none:mmclip-tiny-vit"]
    chance = trained["chance"]
    assert trained["t2i_hard_acc"] > chance["t2i_hard_acc"] + 0.25
    assert trained["i2t_hard_acc"] > chance["i2t_hard_acc"] + 0.25
    assert trained["retrieval"]["i2t_r1"] > chance["r1"] + 0.25
    assert trained["t2i_hard_acc"] + trained["i2t_hard_acc"] > untrained["t2i_hard_acc"] + untrained["i2t_hard_acc"]


def test_cli_several_checkpoints_json_and_plot(data, overfit_run, tmp_path, capsys):
    out, plot = tmp_path / "eval.json", tmp_path / "eval.png"
    rc = eval_main(["--checkpoint", str(overfit_run / "final"), "none:mmclip-tiny-vit", "--data", str(data),
                    "--out", str(out), "--plot", str(plot), "--batch-size", "7", "--device", "cpu"])
    assert rc == 0
    results = json.loads(out.read_text())
    assert list(results) == ["run", "none:mmclip-tiny-vit"]
    for r in results.values():
        assert {"i2t_hard_acc", "t2i_hard_acc", "per_type", "per_kind", "retrieval", "counts", "chance"} <= set(r)
        assert r["split"] == "val" and r["counts"]["samples"] == 4
    assert plot.stat().st_size > 5000
    printed = capsys.readouterr().out
    assert "t2i hard acc" in printed and "chance" in printed
    # one checkpoint: the result itself at top level
    rc = eval_main(["--checkpoint", str(overfit_run), "--data", str(data), "--out", str(out), "--quiet"])
    assert rc == 0
    single = json.loads(out.read_text())
    assert isinstance(single["i2t_hard_acc"], float) and isinstance(single["t2i_hard_acc"], float)
    assert single["t2i_hard_acc"] == results["run"]["t2i_hard_acc"]  # a run directory means its final/


def test_cli_errors(data, tmp_path, capsys):
    assert eval_main(["--checkpoint", str(tmp_path / "missing"), "--data", str(data)]) == 2
    assert "missing" in capsys.readouterr().err
    assert eval_main(["--checkpoint", "none:mmclip-tiny-vit", "--data", str(data), "--split", "nosuch"]) == 2
    assert "no valid samples" in capsys.readouterr().err


def test_eval_config_validation():
    with pytest.raises(ValueError, match="batch_size"):
        EvalConfig(batch_size=0)
    with pytest.raises(ValueError, match="image_negatives"):
        EvalConfig(image_negatives=-1)
    create_model(ModelConfig(name="mmclip-tiny-vit"))  # the architecture the tests rely on exists
