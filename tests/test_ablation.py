"""The ablation runner: arm registry and overrides, the images budget, a micro run end to end, resume/skip."""
import json
from pathlib import Path

import pytest
import yaml
from mmclip_fixtures import make_dataset_dir, write_png

from mmclip_plugin.ablation.arms import PAPER_ARMS as ARMS_IN_TABLE_ORDER
from mmclip_plugin.ablation.arms import get_arm, list_arms, register_arm
from mmclip_plugin.ablation.config import AblationConfig, arm_config, images_per_step, load_ablation
from mmclip_plugin.ablation.report import mean_tree, summarise_seeds
from mmclip_plugin.cli import ablate_main
from mmclip_plugin.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PAPER_ARMS = ["no_finetune", "in_batch", "retrieval", "rule", "image", "all", "all_hard_batches"]
TRAIN = {"steps": 4, "device": "cpu", "log_every": 1, "progress": False,
         "model": {"name": "mmclip-tiny-vit", "force_image_size": 32},
         "data": {"batch_size": 4, "image_negatives": 2, "text_negatives": 2, "num_workers": 0},
         "optim": {"lr": 1e-3}}


def _ablation(tmp_path, **kw) -> AblationConfig:
    values = {"base": None, "train": TRAIN, "data": str(tmp_path / "data"), "seeds": [0], "source": str(tmp_path / "a.yaml")}
    values.update(kw)
    return AblationConfig(**values)


def test_registry_has_the_paper_arms_and_rejects_duplicates():
    assert set(PAPER_ARMS) <= set(list_arms()) and list_arms() == sorted(list_arms())
    assert list(ARMS_IN_TABLE_ORDER) == PAPER_ARMS
    with pytest.raises(ValueError, match="already registered"):
        register_arm("image", "again")(lambda base: {})
    with pytest.raises(KeyError, match="known: all, all_hard_batches, image, in_batch, no_finetune"):
        get_arm("imgae")


@pytest.mark.parametrize("name", [a for a in PAPER_ARMS if a != "no_finetune"])
def test_arm_overrides(tmp_path, name):
    ablation = _ablation(tmp_path)
    base = ablation.base_config()
    init = tmp_path / "init"
    cfg = arm_config(ablation, base, get_arm(name), seed=1, init_dir=init, output_dir=tmp_path / "out")
    image = name in ("image", "all", "all_hard_batches")
    all_kinds = ["perturbation", "rule", "retrieval"]
    kinds = {"retrieval": ["retrieval"], "rule": ["rule"], "all": all_kinds, "all_hard_batches": all_kinds}.get(name)
    assert cfg.loss.in_batch == "softmax"
    assert (cfg.loss.image_negatives == "sigmoid") == image
    assert cfg.data.image_negatives == (2 if image else 0)
    assert (cfg.loss.text_negatives == "softmax") == (kinds is not None)
    assert cfg.data.text_negatives == (2 if kinds else 0) and cfg.data.text_negative_kinds == kinds
    assert cfg.data.hard_batches == (name == "all_hard_batches")
    # every arm starts from the same saved weights, with the seed and output of this run
    assert cfg.model.name == f"local-dir:{init.resolve()}" and cfg.model.force_image_size is None
    assert cfg.seed == 1 and cfg.output_dir == str(tmp_path / "out")
    # equal images: 4 steps x 4 captions x 3 images for every arm
    assert cfg.steps * images_per_step(cfg) == 4 * 4 * 3
    steps = arm_config(_ablation(tmp_path, match="steps"), base, get_arm(name), 1, init, tmp_path / "o").steps
    assert steps == 4


@pytest.mark.parametrize("bad, match", [
    ({"data": None}, "exactly one of 'data'"),
    ({"data_recipe": {"name": "x"}}, "exactly one of 'data'"),
    ({"arms": ["in_batch", "nope"]}, r"key 'arms': expected one of \[.*'in_batch'.*\], got 'nope'"),
    ({"seeds": []}, "key 'seeds': expected a non-empty list"),
    ({"match": "time"}, r"key 'match': expected one of \['images', 'steps'\]"),
])
def test_ablation_config_validation(tmp_path, bad, match):
    with pytest.raises(ConfigError, match=match):
        _ablation(tmp_path, **bad)


def test_load_ablation_names_file_and_key(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump({"data": "d", "trian": {}}))
    with pytest.raises(ConfigError, match=r"a\.yaml: key 'trian': unknown key"):
        load_ablation(path)
    path.write_text(yaml.safe_dump({"data": "d", "train": {"optim": {"lr": "fast"}}}))
    with pytest.raises(ConfigError, match="optim.lr"):
        load_ablation(path)


def test_shipped_cpu_recipe_loads():
    ablation = load_ablation(ROOT / "mmclip_plugin" / "configs" / "ablation-cpu.yaml")
    assert ablation.arms == PAPER_ARMS and ablation.seeds == [0, 1] and ablation.data_recipe is not None
    base = ablation.base_config()
    assert base.model.name == "mmclip-tiny-resnet" and base.steps and base.data.image_negatives > 0


def test_mean_tree_and_seed_summary():
    a = {"x": 0.2, "n": 4, "none": None, "half": None, "d": {"y": 1.0}, "s": "a"}
    b = {"x": 0.4, "n": 4, "none": None, "half": 0.5, "d": {"y": 0.0}, "s": "b"}
    assert mean_tree([a, b]) == {"x": pytest.approx(0.3), "n": 4, "none": None, "half": 0.5, "d": {"y": 0.5}, "s": "a"}
    summary = summarise_seeds({0: a, 1: b})
    assert summary["seeds"] == [0, 1] and summary["per_seed"]["1"] == b


def _recipe(tmp_path, data, arms, seeds=(0,)) -> Path:
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump({"name": "micro", "train": TRAIN, "data": str(data), "seeds": list(seeds),
                                    "arms": arms, "eval_batch_size": 8}))
    return path


def test_micro_ablation_runs_and_resumes(tmp_path, capsys):
    data = make_dataset_dir(tmp_path / "data", n=8, k_images=2, k_texts=2, val=3)
    recipe = _recipe(tmp_path, data, ["no_finetune", "image"], seeds=[0, 1])
    out = tmp_path / "out"
    assert ablate_main([str(recipe), "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "ablation.json").read_text())
    assert list(results) == ["no_finetune", "image"]
    for r in results.values():
        assert 0 <= r["t2i_hard_acc"] <= 1 and 0 <= r["i2t_hard_acc"] <= 1
        assert r["seeds"] == [0, 1] and set(r["per_seed"]) == {"0", "1"}
        per_seed = [r["per_seed"][s]["t2i_hard_acc"] for s in ("0", "1")]
        assert r["t2i_hard_acc"] == pytest.approx(sum(per_seed) / 2)
    assert results["image"]["steps"] == 4 and results["no_finetune"]["steps"] == 0
    assert (out / "arms" / "image" / "seed_1" / "train" / "final").is_dir()
    assert not (out / "arms" / "no_finetune" / "seed_0" / "train").exists()
    # the untrained arm is the shared starting model itself
    assert results["no_finetune"]["per_seed"]["0"]["checkpoint"] == str(out / "init" / "seed_0")
    table = (out / "ablation.md").read_text()
    assert "| + image negatives (`image`) | 4 |" in table and "chance" in table
    assert (out / "ablation.png").stat().st_size > 5000
    assert "+ image negatives" in capsys.readouterr().out

    # re-run: a finished arm is not trained or evaluated again; a new arm runs
    marker = out / "arms" / "image" / "seed_0" / "eval.json"
    saved = json.loads(marker.read_text())
    saved["t2i_hard_acc"] = 0.123
    marker.write_text(json.dumps(saved))
    recipe = _recipe(tmp_path, data, ["no_finetune", "image", "in_batch"], seeds=[0])
    assert ablate_main([str(recipe), "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "arm image seed 0: done, skipped" in err and "arm in_batch seed 0: running" in err
    results = json.loads((out / "ablation.json").read_text())
    assert results["image"]["t2i_hard_acc"] == 0.123
    assert results["in_batch"]["steps"] == 12  # 3x the steps of 4 images: the same 48 images


def test_pretrained_start_is_shared_disjoint_from_the_data_and_held_out_leaks_are_left_out(tmp_path, capsys):
    import shutil

    data = make_dataset_dir(tmp_path / "data", n=8, k_images=2, k_texts=2, val=3)
    shutil.copy(data / "images" / "0.png", data / "images" / "8.png")  # a val picture that is also in train
    pool = make_dataset_dir(tmp_path / "pool", n=6, k_images=0, k_texts=0)
    for i in range(6):  # the fixture draws the same pictures for the same indices: make the pool's its own
        write_png(pool / "images" / f"{i}.png", seed=50_000 + i)
    shutil.copy(data / "images" / "3.png", pool / "images" / "2.png")  # a pool picture that is also in the data
    path = tmp_path / "pre.yaml"
    path.write_text(yaml.safe_dump({"name": "pre", "train": TRAIN, "data": str(data), "seeds": [0, 1],
                                    "arms": ["no_finetune", "in_batch"], "eval_batch_size": 8,
                                    "pretrain": {"data": str(pool), "steps": 2, "train": {"data": {"batch_size": 2}}}}))
    out = tmp_path / "out"
    assert ablate_main([str(path), "--out", str(out), "--no-progress"]) == 0
    start = out / "pretrain" / "train" / "final"
    info = json.loads((out / "pretrain" / "pretrain.json").read_text())
    assert info["overlap"] == {"pool_samples": 6, "kept": 5, "dropped_shared_with_data": 1} and info["steps"] == 2
    pool_ids = [json.loads(line)["id"] for line in (out / "pretrain" / "pool" / "samples.jsonl").read_text().splitlines()]
    assert pool_ids == ["s0", "s1", "s3", "s4", "s5"]
    results = json.loads((out / "ablation.json").read_text())
    for seed in ("0", "1"):  # one start for every seed, evaluated as it is by no_finetune
        assert results["no_finetune"]["per_seed"][seed]["checkpoint"] == str(start)
        trained = yaml.safe_load((out / "arms" / "in_batch" / f"seed_{seed}" / "train" / "final" / "train_config.yaml").read_text())
        assert trained["model"]["name"] == f"local-dir:{start.resolve()}"
    assert not (out / "init").exists()
    assert results["in_batch"]["counts"]["samples"] == 2 and results["in_batch"]["left_out_seen_in_train"] == 1
    assert "2 samples; 1 more left out, their picture also in train" in (out / "ablation.md").read_text()
    assert "1 of 3 samples left out" in capsys.readouterr().err


def test_runs_side_by_side_give_the_same_arms_and_files(tmp_path, capsys):
    data = make_dataset_dir(tmp_path / "data", n=8, k_images=2, k_texts=2, val=3)
    recipe = _recipe(tmp_path, data, ["no_finetune", "in_batch", "image"], seeds=[0, 1])
    assert ablate_main([str(recipe), "--out", str(tmp_path / "out"), "--no-progress", "--jobs", "2"]) == 0
    assert "6 runs, 2 at a time" in capsys.readouterr().err
    results = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert list(results) == ["no_finetune", "in_batch", "image"]
    for arm in ("in_batch", "image"):
        assert results[arm]["seeds"] == [0, 1] and set(results[arm]["per_seed"]) == {"0", "1"}
        for seed in (0, 1):
            assert (tmp_path / "out" / "arms" / arm / f"seed_{seed}" / "train" / "final").is_dir()
    assert results["in_batch"]["steps"] == 12 and results["image"]["steps"] == 4
    assert ablate_main([str(recipe), "--out", str(tmp_path / "o"), "--jobs", "0"]) == 2


def test_cli_lists_arms_and_rejects_bad_arm(tmp_path, capsys):
    assert ablate_main(["x.yaml", "--out", str(tmp_path), "--list-arms"]) == 0
    assert "all_hard_batches" in capsys.readouterr().out
    data = make_dataset_dir(tmp_path / "data", n=2, k_images=1, k_texts=1, val=1)
    assert ablate_main([str(_recipe(tmp_path, data, ["in_batch"])), "--out", str(tmp_path / "o"), "--arms", "nope"]) == 2
    assert "unknown ablation arm 'nope'" in capsys.readouterr().err


def test_text_negative_kinds_filters_caption_negatives(tmp_path):
    from mmclip_plugin.config import load_config
    from mmclip_plugin.data import TEXT_KINDS, build_dataset
    from mmclip_plugin.model import create_model

    data = make_dataset_dir(tmp_path / "data", n=3, k_images=1, k_texts=3)
    model = create_model(load_config(None).model)
    for kinds in (["rule"], ["retrieval", "perturbation"], None):
        cfg = load_config(None, [f"data.train={data}", f"data.text_negative_kinds={json.dumps(kinds)}"]).data
        dataset, _ = build_dataset(cfg, model, seed=0)
        seen = {TEXT_KINDS[k] for item in dataset.items for _, k in item.neg_texts}
        assert seen == set(kinds or TEXT_KINDS)
    with pytest.raises(ConfigError, match="text_negative_kinds"):
        load_config(None, ["data.text_negative_kinds=[rules]"])
