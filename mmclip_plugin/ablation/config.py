"""The ablation recipe (``mmclip-ablate RECIPE.yaml``), each arm's training config and its budget."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmclip_plugin.ablation.arms import _ARMS, PAPER_ARMS, Arm
from mmclip_plugin.config import TrainConfig, load_config
from mmgeolm_core.config import (
    ConfigError,
    build_config,
    check,
    check_choice,
    check_number,
    config_to_dict,
    internal_field,
    load_yaml_mapping,
    merge_dicts,
)
from mmgeolm_core.resources import resolve_shipped

MATCH_MODES = ("images", "steps")


@dataclass
class PretrainConfig:
    """The pretrained start (the paper fine-tunes a pretrained CLIP; a tower from scratch is another question).

    One encoder is trained with in-batch negatives only on a pool of diagrams disjoint from the ablation's
    data; every arm and seed then starts from it, and ``no_finetune`` evaluates it as it is. Off unless
    ``data`` or ``data_recipe`` is set.

    Attributes:
        data: a data-set directory holding the pool (relative paths: to the recipe's folder).
        data_recipe: a ``mmgeolm-data`` recipe (path or mapping) built into ``OUT/pretrain/data`` instead.
        steps: optimizer steps of the in-batch training.
        seed: its seed (initialisation and data order).
        train: nested overrides of the base config for this run only (``optim.lr``, ``data.batch_size``, ...).
    """

    data: str | None = None
    data_recipe: str | dict[str, Any] | None = None
    steps: int = 500
    seed: int = 0
    train: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.data is not None and self.data_recipe is not None:
            raise ConfigError("set at most one of 'data' (a data-set directory) or 'data_recipe' (built into "
                              "OUT/pretrain/data)", key="data")
        check_number(self.steps, "steps", ge=1, integer=True)
        check_number(self.seed, "seed", ge=0, integer=True)

    @property
    def enabled(self) -> bool:
        return self.data is not None or self.data_recipe is not None


@dataclass
class AblationConfig:
    """An ablation recipe (``mmclip-ablate RECIPE.yaml``).

    Attributes:
        name: the ablation's name (table title).
        base: training config YAML the arms override (relative to the recipe's folder); None: defaults.
        train: nested overrides of ``base`` shared by every arm (steps, model, batch size, lr ...).
        data: an existing data-set directory (relative paths: to the recipe's folder).
        data_recipe: a ``mmgeolm-data`` recipe (path or mapping) built into ``OUT/data`` instead.
        data_workers: worker processes of that build.
        seeds: one run per arm and seed; the table gives the mean and each seed.
        arms: arm names in table order (default: the paper's, :data:`~mmclip_plugin.ablation.arms.PAPER_ARMS`).
        match: ``images`` (equal encoded images per arm) or ``steps`` (equal optimizer steps).
        eval_split: the held-out split evaluated.
        eval_batch_size: images / captions per forward pass during evaluation.
        pretrain: the arms' shared pretrained start (off: each seed starts from random weights).
        source: where the recipe came from (error messages, relative paths).
    """

    name: str = "ablation"
    base: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    data_recipe: str | dict[str, Any] | None = None
    data_workers: int = 1
    seeds: list[int] = field(default_factory=lambda: [0])
    arms: list[str] | None = None
    match: str = "images"
    eval_split: str = "val"
    eval_batch_size: int = 64
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    source: str = internal_field("<ablation>")

    def __post_init__(self) -> None:
        if (self.data is None) == (self.data_recipe is None):
            raise ConfigError("set exactly one of 'data' (a data-set directory) or 'data_recipe' (built into OUT/data)",
                              key="data")
        check(bool(self.seeds) and len(set(self.seeds)) == len(self.seeds), "seeds",
              "a non-empty list of distinct integers", self.seeds)
        check_choice(self.match, "match", MATCH_MODES)
        self.arms = list(self.arms) if self.arms is not None else list(PAPER_ARMS)
        for arm in self.arms:
            check_choice(arm, "arms", _ARMS.names())
        check(len(set(self.arms)) == len(self.arms), "arms", "each arm once", self.arms)
        check_number(self.data_workers, "data_workers", ge=1, integer=True)
        check_number(self.eval_batch_size, "eval_batch_size", ge=1, integer=True)

    @property
    def folder(self) -> Path:
        """The recipe's folder: base of relative paths."""
        return Path(self.source).parent if self.source != "<ablation>" else Path.cwd()

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.folder / p

    def base_config(self) -> TrainConfig:
        """The base training config with ``train`` applied (validated)."""
        base = load_config(self.resolve(self.base) if self.base else None)
        return build_config(TrainConfig, merge_dicts(config_to_dict(base), self.train), f"{self.source} (train)")


def load_ablation(path: str | os.PathLike) -> AblationConfig:
    """Read an ablation recipe YAML.

    Raises:
        ConfigError: unreadable YAML, unknown key, wrong type or invalid value (naming the file and key).
    """
    path = resolve_shipped("mmclip-config", path)
    raw = load_yaml_mapping(path, "ablation recipe")
    cfg = build_config(AblationConfig, raw, str(path), internal={"source": str(path)})
    cfg.base_config()  # fail now, not after building data, on a bad base or train override
    return cfg


def pretrain_config(ablation: AblationConfig, base: TrainConfig, data: Path, output_dir: Path) -> TrainConfig:
    """The pretraining run: the base config as the ``in_batch`` arm, on the pool, with ``pretrain.train``."""
    from mmclip_plugin.ablation.arms import get_arm

    pre = ablation.pretrain
    raw = merge_dicts(config_to_dict(base), get_arm("in_batch").overrides(base))
    raw = merge_dicts(raw, {"seed": pre.seed, "steps": pre.steps, "output_dir": str(output_dir), "plot": False,
                            "data": {"train": str(data), "split": "train", "hard_batches": False}})
    raw = merge_dicts(raw, pre.train)
    return build_config(TrainConfig, raw, f"{ablation.source} (pretrain)")


def arm_config(ablation: AblationConfig, base: TrainConfig, arm: Arm, seed: int, init_dir: Path,
               output_dir: Path) -> TrainConfig:
    """The training config of ``arm`` for ``seed``: base + arm overrides + shared start + budget."""
    raw = merge_dicts(config_to_dict(base), arm.overrides(base))
    model = {"name": f"local-dir:{init_dir.resolve()}", "pretrained": None, "arch_json": None, "force_image_size": None}
    raw = merge_dicts(raw, {"model": model, "seed": seed, "output_dir": str(output_dir), "plot": False})
    cfg = build_config(TrainConfig, raw, f"{ablation.source} (arm {arm.name}, seed {seed})")
    cfg.steps = arm_steps(ablation, base, cfg)
    return cfg


def images_per_step(cfg: TrainConfig) -> int:
    """Images encoded per optimizer step: each caption's image plus its K image negatives."""
    k = cfg.data.image_negatives if cfg.data.image_negatives else 0
    return cfg.data.batch_size * cfg.optim.grad_accum_steps * (1 + k)


def arm_steps(ablation: AblationConfig, base: TrainConfig, cfg: TrainConfig) -> int:
    """Steps of an arm: the base's, or (``match: images``) as many as encode the same number of images."""
    if base.steps is None:
        raise ConfigError(f"{ablation.source}: train.steps must be set (the budget of an arm with image negatives)")
    if ablation.match == "steps":
        return base.steps
    budget = base.steps * images_per_step(base)
    return max(1, round(budget / images_per_step(cfg)))

