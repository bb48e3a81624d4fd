"""Recipes: the shipped ones load, defaults resolve, every bad key or value is refused by name."""
from pathlib import Path

import pytest
import yaml

from data_recipes.build.recipe import build_recipe, load_recipe, recipe_diff
from data_recipes.cli import main
from data_recipes.diagrams import engine
from mmgeolm_core.config import ConfigError

RECIPES = Path(__file__).resolve().parents[1] / "data_recipes" / "recipes"


@pytest.mark.parametrize("name", ["tiny", "demo", "full"])
def test_shipped_recipes_load_and_resolve(name):
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    assert recipe.name == name
    resolved = recipe.to_dict()
    assert set(resolved["families"]) == set(engine.list_families())
    # the resolved form rebuilds the same recipe (it is what the manifest stores)
    assert build_recipe(resolved).fingerprint == recipe.fingerprint


def test_family_forms_and_weights():
    families = engine.list_families()
    as_list = build_recipe({"name": "x", "families": families[:2]})
    assert as_list.family_names == families[:2] and as_list.family_probabilities == [0.5, 0.5]
    weighted = build_recipe({"name": "x", "families": {families[0]: 3, families[1]: 1}})
    assert weighted.family_probabilities == [0.75, 0.25]
    assert build_recipe({"name": "x"}).family_names == families


def test_overrides_change_the_fingerprint():
    recipe = load_recipe(RECIPES / "tiny.yaml")
    bigger = recipe.with_overrides(num=recipe.num + 1)
    assert bigger.num == recipe.num + 1 and bigger.fingerprint != recipe.fingerprint
    assert recipe.with_overrides().fingerprint == recipe.fingerprint
    assert recipe_diff(recipe.to_dict(), bigger.to_dict()) == [f"num: {recipe.num} != {recipe.num + 1}"]


def test_perturbation_kind_is_always_included():
    recipe = build_recipe({"name": "x", "text_negatives": {"num": 2, "kinds": ["rule"]}})
    assert recipe.text_negatives.kinds == ("perturbation", "rule")
    assert recipe.text_negatives.post_pass_kinds == ("rule",)


BAD = [
    # (recipe mapping, key named in the error, a valid choice or expectation named in the error)
    ({"name": "x", "sed": 1}, "sed", "seed"),
    ({"name": "x", "image": {"size": 64}}, "image.size", "size_px"),
    ({"name": "x", "negatives": {"k": 3}}, "negatives.k", "per_positive"),
    ({"name": "x", "text_negatives": {"count": 3}}, "text_negatives.count", "kinds"),
    ({"name": "x", "split": {"val": 0.1}}, "split.val", "val_fraction"),
    ({"name": "x", "families": ["no_such_family"]}, "families", "expected one of"),
    ({"name": "x", "families": {"no_such_family": 1.0}}, "families", "expected one of"),
    ({"name": "x", "negatives": {"types": ["no_such_type"]}}, "negatives.types", "expected one of"),
    ({"name": "x", "text_negatives": {"kinds": ["poetry"]}}, "text_negatives.kinds", "retrieval"),
    ({"name": "x", "num": 0}, "num", ">= 1"),
    ({"name": "x", "num": "ten"}, "num", "integer"),
    ({"name": "x", "seed": -1}, "seed", ">= 0"),
    ({"name": "x", "image": {"size_px": 8}}, "image.size_px", ">= 32"),
    ({"name": "x", "negatives": {"min_ssim": 2}}, "negatives.min_ssim", ">= -1"),
    ({"name": "x", "negatives": {"per_positive": 2.5}}, "negatives.per_positive", "integer"),
    ({"name": "x", "negatives": {"require_full_negatives": "yes"}}, "negatives.require_full_negatives", "true or false"),
    ({"name": "x", "split": {"val_fraction": 1.5}}, "split.val_fraction", ">= 0"),
    ({"name": "x", "split": {"val_fraction": 0.6, "dev_fraction": 0.5}}, "split.dev_fraction", "exceeds 1"),
    ({"name": "bad name!"}, "name", "letters"),
    ({"seed": 1}, "name", "missing"),
]


@pytest.mark.parametrize("data,key,expected", BAD, ids=[f"{k}-{i}" for i, (_, k, _) in enumerate(BAD)])
def test_bad_recipe_exits_2_naming_key_file_and_choices(tmp_path, capsys, data, key, expected):
    families = engine.list_families()
    if data.get("families") is None and "name" in data:
        data = {**data, "families": families[:1]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert str(path) in str(err.value) and f"'{key}'" in str(err.value) and expected in str(err.value)
    out = tmp_path / "out"
    assert main(["build", str(path), "--out", str(out)]) == 2
    stderr = capsys.readouterr().err
    assert str(path) in stderr and f"'{key}'" in stderr and expected in stderr
    assert not out.exists(), "a refused recipe must not create the output directory"


def test_dev_split_never_moves_a_sample_into_or_out_of_val():
    from data_recipes.build.sample import sample_split

    families = engine.list_families()[:1]
    plain = build_recipe({"name": "x", "families": families, "split": {"val_fraction": 0.2}})
    with_dev = build_recipe({"name": "x", "families": families, "split": {"val_fraction": 0.2, "dev_fraction": 0.3}})
    before = [sample_split(plain, i) for i in range(400)]
    after = [sample_split(with_dev, i) for i in range(400)]
    assert [s == "val" for s in before] == [s == "val" for s in after]
    assert {s for s, t in zip(before, after) if t == "dev"} == {"train"}  # dev comes out of train only
    assert 0.2 < after.count("dev") / 400 < 0.4 and 0.12 < after.count("val") / 400 < 0.28


@pytest.mark.parametrize("text", ["name: [unclosed", "- a list\n- not a mapping\n"])
def test_unreadable_recipe_file_exits_2(tmp_path, capsys, text):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    assert main(["build", str(path), "--out", str(tmp_path / "out")]) == 2
    assert str(path) in capsys.readouterr().err


def test_missing_recipe_file_exits_2(tmp_path, capsys):
    assert main(["build", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "out")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--shard", "2/2"], ["--shard", "x"], ["--workers", "0"]])
def test_bad_command_line_exits_2(tmp_path, argv):
    args = ["build", str(RECIPES / "tiny.yaml"), "--out", str(tmp_path / "out"), *argv]
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    assert code == 2
