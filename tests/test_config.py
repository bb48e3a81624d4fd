"""TrainConfig: YAML + dotted overrides, type checks, unknown keys, validation, save/load round trip."""
from pathlib import Path

import pytest
import yaml

from mmclip_plugin.config import (
    ConfigError,
    DataConfig,
    OptimConfig,
    TrainConfig,
    build_config,
    config_to_dict,
    load_config,
    parse_overrides,
    save_config,
)
from mmgeolm_core.errors import InputError

TINY = Path(__file__).resolve().parents[1] / "mmclip_plugin" / "configs" / "tiny-cpu.yaml"


def test_shipped_tiny_config_loads_with_data_and_output_overrides(tmp_path):
    cfg = load_config(TINY, [f"data.train={tmp_path}", f"output_dir={tmp_path / 'out'}"])
    assert isinstance(cfg, TrainConfig)
    assert cfg.model.name == "mmclip-tiny-vit"
    assert cfg.device == "cpu"
    assert cfg.data.train == str(tmp_path)
    assert cfg.output_dir == str(tmp_path / "out")


def test_overrides_nest_and_convert_types(tmp_path):
    cfg = load_config(TINY, ["optim.lr=1e-3", "steps=7", "loss.image_negatives=null", "data.train=[a, b]",
                             "loss.text_kind_weights.rule=0.5", "model.force_image_size=32", "optim.warmup_ratio=0"])
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)
    assert cfg.steps == 7
    assert cfg.loss.image_negatives is None
    assert cfg.data.train_paths == ["a", "b"]
    assert cfg.loss.text_kind_weights["rule"] == 0.5 and cfg.loss.text_kind_weights["retrieval"] == 1.0
    assert cfg.model.force_image_size == 32
    assert cfg.optim.warmup_ratio == 0.0


def test_yaml_float_without_dot_is_read_as_float(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 2e-5\n")  # PyYAML reads this as the string "2e-5"
    assert load_config(path).optim.lr == pytest.approx(2e-5)


@pytest.mark.parametrize(
    "override, key, valid",
    [("data.trian=x", "data.trian", "train"), ("stepz=3", "stepz", "steps"), ("optim.learning_rate=1", "optim.learning_rate", "lr"),
     ("model.nam=x", "model.nam", "name"), ("loss.in_bach=softmax", "loss.in_bach", "in_batch")],
)
def test_unknown_key_names_the_key_and_the_valid_ones(override, key, valid):
    with pytest.raises(ConfigError) as err:
        load_config(TINY, [override])
    message = str(err.value)
    assert f"'{key}'" in message and valid in message and str(TINY) in message


@pytest.mark.parametrize(
    "override, fragment",
    [("steps=abc", "steps"), ("data.batch_size=2.5", "data.batch_size"), ("data.hard_batches=3", "data.hard_batches"),
     ("optim.betas=[0.9]", "betas"), ("data.sample=sometimes", "data.sample"), ("precision=fp8", "precision"),
     ("loss.in_batch=hinge", "in_batch"), ("data.batch_size=0", "batch_size"), ("device=tpu", "device")],
)
def test_bad_values_raise_naming_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(TINY, [override])


def test_malformed_override_and_section_clash():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["steps"])
    with pytest.raises(ConfigError, match="data"):
        parse_overrides(["data=1", "data.train=x"])


def test_non_mapping_section_and_bad_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: 3\n")
    with pytest.raises(ConfigError, match="key 'data': expected a mapping"):
        load_config(path)
    path.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(InputError, match="missing.yaml' is neither a file nor a shipped mmclip-config; shipped: .*tiny-cpu"):
        load_config(tmp_path / "missing.yaml")


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_config(TINY, ["data.train=/x/y", "optim.lr=3e-4", "data.hard_batches=true", "loss.in_batch=sigmoid"])
    path = save_config(cfg, tmp_path / "sub" / "train_config.yaml")
    assert yaml.safe_load(path.read_text())["optim"]["lr"] == pytest.approx(3e-4)
    again = load_config(path)
    assert config_to_dict(again) == config_to_dict(cfg)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_dataclass_validation():
    with pytest.raises(ConfigError):
        DataConfig(image_negatives=-1)
    with pytest.raises(ConfigError):
        OptimConfig(grad_accum_steps=0)
    with pytest.raises(ConfigError, match="steps"):
        TrainConfig(steps=None, epochs=None)
    cfg = build_config(TrainConfig, {"steps": 3, "data": {"train": "d"}})
    assert cfg.steps == 3 and cfg.data.train_paths == ["d"]


@pytest.mark.parametrize("term", ["image_negatives", "text_negatives"])
def test_hard_term_without_negatives_is_refused(term):
    with pytest.raises(ConfigError, match=f"data.{term}=0"):
        load_config(TINY, [f"data.{term}=0"])
    cfg = load_config(TINY, [f"data.{term}=0", f"loss.{term}=null"])
    assert term not in cfg.loss.active_terms


# training configs (the ablation recipes beside them are tested in test_ablation.py)
SHIPPED_CONFIGS = [p for p in sorted(TINY.parent.glob("*.yaml")) if "model" in yaml.safe_load(p.read_text())]


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_loads_and_names_a_real_open_clip_model(path, tmp_path):
    """A typo in a GPU config's model name or pretrained tag would only show on the cluster: catch it here."""
    import open_clip

    from mmclip_plugin.model import MODEL_CONFIG_DIR

    cfg = load_config(path, [f"data.train={tmp_path}", f"output_dir={tmp_path / 'out'}"])
    if cfg.model.name == "hf":  # a local transformers directory, converted at start (tests/test_hf_import.py)
        assert cfg.model.pretrained.startswith("hf:/")
        return
    shipped = {p.stem for p in MODEL_CONFIG_DIR.glob("*.json")}
    assert cfg.model.name in set(open_clip.list_models()) | shipped
    if cfg.model.pretrained:
        assert cfg.model.pretrained in open_clip.list_pretrained_tags_by_model(cfg.model.name)
