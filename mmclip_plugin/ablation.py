"""The ablation runner: the paper's comparison of negative types (its Table 3) on our own data.

Every **arm** is a set of overrides of one base training config, registered by name
(:func:`register_arm`). For each seed the starting model is created once, saved to
``OUT/init/seed_<s>`` and loaded by every arm, so arms differ only in their losses and batches.
Every arm is evaluated on the held-out split (the data build's ``val`` split: unseen seeds) with
:func:`~mmclip_plugin.evaluate.evaluate_model`.

Budget: ``match: images`` (default) gives every arm the same number of **encoded images**: the base
``steps`` are the steps of an arm that encodes ``1 + K`` images per caption, and an arm without image
negatives runs ``1 + K`` times as many steps (encoding images dominates the cost, so this is also
about equal time). ``match: steps`` gives every arm the base ``steps``.

Layout of ``OUT``::

    data/                          the data set, when the recipe builds its own (data_recipe)
    init/seed_<s>/                 the shared starting weights of seed s
    arms/<arm>/seed_<s>/train/     the training run (checkpoints, metrics.jsonl, final/)
    arms/<arm>/seed_<s>/eval.json  its evaluation; an arm whose eval.json exists is skipped on re-run
    ablation.json                  arm -> evaluation JSON averaged over seeds, with ``per_seed``
    ablation.md                    the table;  ablation.png: the chart
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .ablation_report import format_table, summarise_seeds
from .config import ConfigError, TrainConfig, build_config, config_to_dict, load_config, merge_dicts

MATCH_MODES = ("images", "steps")


# ------------------------------------------------------------------------------------- arms
@dataclass(frozen=True)
class Arm:
    """One ablation arm.

    Attributes:
        name: registry name (used in paths and the JSON).
        label: the table's row label.
        trains: False for the untrained starting model.
        overrides: base config -> nested overrides (a mapping merged onto the base config).
    """

    name: str
    label: str
    trains: bool
    overrides: Callable[[TrainConfig], dict[str, Any]]


_ARMS: dict[str, Arm] = {}


def register_arm(name: str, label: str, trains: bool = True) -> Callable[[Callable], Callable]:
    """Register ``fn(base: TrainConfig) -> overrides`` as arm ``name``; a duplicate name raises."""

    def decorator(fn: Callable[[TrainConfig], dict[str, Any]]) -> Callable[[TrainConfig], dict[str, Any]]:
        if name in _ARMS:
            raise ValueError(f"ablation arm {name!r} is already registered")
        _ARMS[name] = Arm(name, label, trains, fn)
        return fn

    return decorator


def list_arms() -> list[str]:
    """Registered arm names, in registration (table) order."""
    return list(_ARMS)


def get_arm(name: str) -> Arm:
    """The arm called ``name``; raises listing the known arms."""
    if name not in _ARMS:
        raise KeyError(f"unknown ablation arm {name!r}; known: {', '.join(_ARMS)}")
    return _ARMS[name]


def _kind(value: str | None, default: str) -> str:
    return value or default


def _terms(base: TrainConfig, image: bool, text: list[str] | None, hard_batches: bool = False) -> dict[str, Any]:
    """In-batch term always on; the image-/text-negative terms on or off, with the base's loss kinds."""
    loss = base.loss
    return {
        "loss": {
            "in_batch": _kind(loss.in_batch, "softmax"),
            "image_negatives": _kind(loss.image_negatives, "sigmoid") if image else None,
            "text_negatives": _kind(loss.text_negatives, "softmax") if text else None,
            "negclip_columns": loss.negclip_columns and (image or bool(text)),
        },
        "data": {
            "image_negatives": base.data.image_negatives if image else 0,
            "text_negatives": base.data.text_negatives if text else 0,
            "text_negative_kinds": text,
            "hard_batches": hard_batches,
        },
    }


@register_arm("no_finetune", "no fine-tuning (starting model)", trains=False)
def _no_finetune(base: TrainConfig) -> dict[str, Any]:
    return {}


@register_arm("in_batch", "in-batch only (random negatives)")
def _in_batch(base: TrainConfig) -> dict[str, Any]:
    return _terms(base, image=False, text=None)


@register_arm("retrieval", "+ retrieval text negatives")
def _retrieval(base: TrainConfig) -> dict[str, Any]:
    return _terms(base, image=False, text=["retrieval"])


@register_arm("rule", "+ rule text negatives")
def _rule(base: TrainConfig) -> dict[str, Any]:
    return _terms(base, image=False, text=["rule"])


@register_arm("image", "+ image negatives")
def _image(base: TrainConfig) -> dict[str, Any]:
    return _terms(base, image=True, text=None)


@register_arm("all", "all negative types")
def _all(base: TrainConfig) -> dict[str, Any]:
    return _terms(base, image=True, text=["perturbation", "rule", "retrieval"])


@register_arm("all_hard_batches", "all + hard-negative batches")
def _all_hard_batches(base: TrainConfig) -> dict[str, Any]:
    return _terms(base, image=True, text=["perturbation", "rule", "retrieval"], hard_batches=True)


# ------------------------------------------------------------------------------------- recipe
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
        arms: arm names in table order (default: every registered arm).
        match: ``images`` (equal encoded images per arm) or ``steps`` (equal optimizer steps).
        eval_split: the held-out split evaluated.
        eval_batch_size: images / captions per forward pass during evaluation.
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
    source: str = "<ablation>"

    def __post_init__(self) -> None:
        where = self.source
        if (self.data is None) == (self.data_recipe is None):
            raise ConfigError(f"{where}: set exactly one of 'data' (a data-set directory) or 'data_recipe' (built into OUT/data)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"{where}: seeds must be a non-empty list of distinct integers, got {self.seeds}")
        if self.match not in MATCH_MODES:
            raise ConfigError(f"{where}: match must be one of {MATCH_MODES}, got {self.match!r}")
        self.arms = list(self.arms) if self.arms is not None else list_arms()
        for arm in self.arms:
            if arm not in _ARMS:
                raise ConfigError(f"{where}: arms: unknown arm {arm!r}; known: {', '.join(_ARMS)}")
        if len(set(self.arms)) != len(self.arms):
            raise ConfigError(f"{where}: arms are listed twice: {self.arms}")
        if self.data_workers < 1 or self.eval_batch_size < 1:
            raise ConfigError(f"{where}: data_workers and eval_batch_size must be >= 1")

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
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read ablation recipe {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping")
    cfg = build_config(AblationConfig, {**raw, "source": str(path)}, str(path))
    cfg.base_config()  # fail now, not after building data, on a bad base or train override
    return cfg


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


# ------------------------------------------------------------------------------------- running
def prepare_data(ablation: AblationConfig, out: Path) -> Path:
    """The data-set directory: the given one, or the recipe built (or resumed) into ``out/data``."""
    if ablation.data is not None:
        return ablation.resolve(ablation.data)
    from data_recipes.build import build_dataset as build_data
    from data_recipes.recipe import build_recipe, load_recipe

    spec = ablation.data_recipe
    recipe = load_recipe(ablation.resolve(spec)) if isinstance(spec, str) else build_recipe(spec, f"{ablation.source} (data_recipe)")
    manifest = out / "data" / "manifest.json"
    if manifest.is_file() and (out / "data" / "samples.jsonl").is_file():
        import json

        # a finished build of the same recipe is reused even when the builder's code changed since
        if json.loads(json.dumps(recipe.to_dict())) == json.loads(manifest.read_text()).get("recipe"):
            print(f"data set {recipe.name}: reusing the finished build in {out / 'data'}", file=sys.stderr)
            return out / "data"
    print(f"building data set {recipe.name} into {out / 'data'}", file=sys.stderr)
    build_data(recipe, out / "data", workers=ablation.data_workers)
    return out / "data"


def save_initial_model(base: TrainConfig, seed: int, directory: Path) -> Path:
    """Create the starting model of ``seed`` once (seeded) and save it; reuse it when it exists."""
    from .model import create_model, is_checkpoint_dir

    if is_checkpoint_dir(directory):
        return directory
    import torch

    torch.manual_seed(seed)
    model = create_model(base.model, device="cpu")
    model.save_pretrained(directory, metadata={"ablation_init": True, "seed": seed, "model": base.model.name})
    return directory


def run_arm(ablation: AblationConfig, base: TrainConfig, arm: Arm, seed: int, out: Path, samples: Sequence[Any],
            progress: bool = True) -> dict[str, Any]:
    """Train (unless done or not a training arm) and evaluate one arm for one seed; write its ``eval.json``."""
    from .checkpoint import find_latest
    from .evaluate import EvalConfig, evaluate_model, resolve_device
    from .model import is_checkpoint_dir, load_checkpoint
    from .train import train, write_json

    arm_dir = out / "arms" / arm.name / f"seed_{seed}"
    eval_file = arm_dir / "eval.json"
    init_dir = save_initial_model(base, seed, out / "init" / f"seed_{seed}")
    info: dict[str, Any] = {"arm": arm.name, "label": arm.label, "seed": seed, "steps": 0, "images": 0, "train_seconds": 0.0}
    model_dir = init_dir
    if arm.trains:
        cfg = arm_config(ablation, base, arm, seed, init_dir, arm_dir / "train")
        cfg.progress = progress and cfg.progress
        model_dir = Path(cfg.output_dir) / "final"
        start = time.perf_counter()
        if not is_checkpoint_dir(model_dir):
            resume = "latest" if find_latest(cfg.output_dir) is not None else None
            train(cfg, resume=resume)
        info.update(steps=cfg.steps, images=cfg.steps * images_per_step(cfg),
                    train_seconds=round(time.perf_counter() - start, 1))
    eval_cfg = EvalConfig(split=ablation.eval_split, batch_size=ablation.eval_batch_size, device=base.device)
    model = load_checkpoint(model_dir, device=resolve_device(eval_cfg.device))
    result = evaluate_model(model, samples, eval_cfg)
    result.update(checkpoint=str(model_dir), split=ablation.eval_split, **info)
    arm_dir.mkdir(parents=True, exist_ok=True)
    write_json(eval_file, result)
    return result


def run_ablation(ablation: AblationConfig, out: str | os.PathLike, progress: bool = True) -> dict[str, Any]:
    """Run every (arm, seed) not yet evaluated, then write ``ablation.json``, ``ablation.md`` and ``ablation.png``.

    Returns:
        arm name -> its evaluation JSON averaged over seeds (with ``per_seed``).
    """
    import json

    from .evaluate import load_split
    from .plots import plot_results
    from .train import _atomic_write_text, write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = ablation.base_config()
    data = prepare_data(ablation, out)
    samples = load_split(data, ablation.eval_split)
    base = build_config(TrainConfig, merge_dicts(config_to_dict(base), {"data": {"train": str(data)}}), ablation.source)
    per_arm: dict[str, dict[int, dict[str, Any]]] = {}
    for arm_name in ablation.arms:
        arm = get_arm(arm_name)
        per_arm[arm_name] = {}
        for seed in ablation.seeds:
            eval_file = out / "arms" / arm_name / f"seed_{seed}" / "eval.json"
            if eval_file.is_file():
                print(f"arm {arm_name} seed {seed}: done, skipped ({eval_file})", file=sys.stderr)
                per_arm[arm_name][seed] = json.loads(eval_file.read_text())
                continue
            print(f"arm {arm_name} seed {seed}: running", file=sys.stderr)
            per_arm[arm_name][seed] = run_arm(ablation, base, arm, seed, out, samples, progress)
    results = {name: summarise_seeds(runs) for name, runs in per_arm.items()}
    write_json(out / "ablation.json", results)
    _atomic_write_text(out / "ablation.md", format_table(ablation, results))
    plot_results(results, out / "ablation.png", title=f"{ablation.name}: held-out {ablation.eval_split} split")
    return results
