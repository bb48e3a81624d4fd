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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmclip_plugin.ablation.arms import Arm, get_arm
from mmclip_plugin.ablation.config import AblationConfig, arm_config, images_per_step
from mmclip_plugin.ablation.report import format_table, summarise_seeds
from mmclip_plugin.config import TrainConfig, build_config, config_to_dict, merge_dicts
from mmgeolm_core.errors import Interrupted
from mmgeolm_core.io import atomic_write_json, atomic_write_text


def prepare_data(ablation: AblationConfig, out: Path) -> Path:
    """The data-set directory: the given one, or the recipe built (or resumed) into ``out/data``."""
    if ablation.data is not None:
        return ablation.resolve(ablation.data)
    from data_recipes.build.recipe import build_recipe, load_recipe
    from data_recipes.build.runner import build_dataset as build_data

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
    from mmclip_plugin.model import create_model, is_checkpoint_dir

    if is_checkpoint_dir(directory):
        return directory
    import torch

    torch.manual_seed(seed)
    model = create_model(base.model, device="cpu")
    model.save_pretrained(directory, metadata={"ablation_init": True, "seed": seed, "model": base.model.name})
    return directory


def run_arm(ablation: AblationConfig, base: TrainConfig, arm: Arm, seed: int, out: Path, samples: Sequence[Any],
            progress: bool = True, bad: Sequence[Any] = ()) -> dict[str, Any]:
    """Train (unless done or not a training arm) and evaluate one arm for one seed; write its ``eval.json``."""
    from mmclip_plugin.checkpoint import find_latest
    from mmclip_plugin.distributed import resolve_device
    from mmclip_plugin.evaluate import EvalConfig, evaluate_model
    from mmclip_plugin.model import is_checkpoint_dir, load_checkpoint
    from mmclip_plugin.train import train

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
    result = evaluate_model(model, samples, eval_cfg, bad)
    result.update(checkpoint=str(model_dir), split=ablation.eval_split, **info)
    arm_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(eval_file, result)
    return result


def run_ablation(ablation: AblationConfig, out: str | os.PathLike, progress: bool = True) -> dict[str, Any]:
    """Run every (arm, seed) not yet evaluated, then write ``ablation.json``, ``ablation.md`` and ``ablation.png``.

    Returns:
        arm name -> its evaluation JSON averaged over seeds (with ``per_seed``).
    """
    import json

    from mmclip_plugin.evaluate import load_split
    from mmclip_plugin.plots import plot_results

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = ablation.base_config()
    data = prepare_data(ablation, out)
    samples, bad = load_split(data, ablation.eval_split)
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
            try:
                per_arm[arm_name][seed] = run_arm(ablation, base, arm, seed, out, samples, progress, bad)
            except KeyboardInterrupt as exc:
                raise Interrupted(f"arm {arm_name} seed {seed} stopped"
                                  + (f" ({str(exc).split(';')[0]})" if isinstance(exc, Interrupted) else "")
                                  + "; run the same command again to resume: finished arms are skipped and this one "
                                    "continues from its last checkpoint") from None
    results = {name: summarise_seeds(runs) for name, runs in per_arm.items()}
    atomic_write_json(out / "ablation.json", results)
    atomic_write_text(out / "ablation.md", format_table(ablation, results))
    plot_results(results, out / "ablation.png", title=f"{ablation.name}: held-out {ablation.eval_split} split")
    return results
