"""The ablation runner: the paper's comparison of negative types (its Table 3) on our own data.

Every **arm** is a set of overrides of one base training config, registered by name
(:func:`register_arm`). For each seed the starting model is created once, saved to
``OUT/init/seed_<s>`` and loaded by every arm, so arms differ only in their losses and batches.
With a ``pretrain`` section the start is instead one encoder trained with in-batch negatives on a
pool of diagrams disjoint from the data (checked image by image), shared by every arm and seed.
Every arm is evaluated on the held-out split (the data build's ``val`` split: unseen seeds) with
:func:`~mmclip_plugin.evaluate.evaluate_model`.

Budget: ``match: images`` (default) gives every arm the same number of **encoded images**: the base
``steps`` are the steps of an arm that encodes ``1 + K`` images per caption, and an arm without image
negatives runs ``1 + K`` times as many steps (encoding images dominates the cost, so this is also
about equal time). ``match: steps`` gives every arm the base ``steps``.

Layout of ``OUT``::

    data/                          the data set, when the recipe builds its own (data_recipe)
    init/seed_<s>/                 the shared starting weights of seed s (no pretrain section)
    pretrain/data/                 the pool, when pretrain.data_recipe builds it
    pretrain/pool/samples.jsonl    the pool minus the samples whose picture also appears in the data
    pretrain/train/final/          the pretrained start;  pretrain/pretrain.json: its run and the overlap check
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
    return _build_data(ablation, ablation.data_recipe, out / "data", "data_recipe")


def _build_data(ablation: AblationConfig, spec: str | dict[str, Any], folder: Path, key: str) -> Path:
    """Build (or resume, or reuse) the ``mmgeolm-data`` recipe ``spec`` into ``folder``."""
    from data_recipes.build.recipe import build_recipe, load_recipe
    from data_recipes.build.runner import build_dataset as build_data

    recipe = load_recipe(ablation.resolve(spec)) if isinstance(spec, str) else build_recipe(spec, f"{ablation.source} ({key})")
    manifest = folder / "manifest.json"
    if manifest.is_file() and (folder / "samples.jsonl").is_file():
        import json

        # a finished build of the same recipe is reused even when the builder's code changed since
        if json.loads(json.dumps(recipe.to_dict())) == json.loads(manifest.read_text()).get("recipe"):
            print(f"data set {recipe.name}: reusing the finished build in {folder}", file=sys.stderr)
            return folder
    print(f"building data set {recipe.name} into {folder}", file=sys.stderr)
    build_data(recipe, folder, workers=ablation.data_workers)
    return folder


def write_disjoint_pool(pool: Path, data: Path, folder: Path) -> dict[str, int]:
    """``folder/samples.jsonl``: the pool's samples whose image appears nowhere in ``data`` (any split).

    Low-freedom families (squares, regular polygons) come out pixel-identical from different seeds, so a
    pool built with another seed still shares some pictures with the data; those samples are left out.
    The pictures stay where they are: ``folder/images`` links to the pool's ``images/``.
    """
    import json

    from mmclip_plugin.overlap import file_digest, image_digests
    from mmgeolm_core.io import iter_jsonl

    seen = image_digests(data, ("train", "dev", "val"))
    kept, total = [], 0
    for _, record in iter_jsonl(pool / "samples.jsonl"):
        if record.get("split", "train") != "train":
            continue
        total += 1
        if file_digest(str(pool / record["image"])) in seen:
            continue
        # the pool's own record; in-batch training reads no negative
        kept.append({**record, "script": None, "negatives": [], "text_negatives": []})
    dropped = total - len(kept)
    if not kept:
        raise ValueError(f"every image of the pretraining pool {pool} also appears in {data}")
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "images"
    if not link.exists():
        link.symlink_to((pool / "images").resolve(), target_is_directory=True)
    atomic_write_text(folder / "samples.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    return {"pool_samples": total, "kept": len(kept), "dropped_shared_with_data": dropped}


def prepare_pretrained(ablation: AblationConfig, base: TrainConfig, data: Path, out: Path,
                       progress: bool = True) -> Path | None:
    """The pretrained start (trained, or resumed, once): ``out/pretrain/train/final``; None without ``pretrain``.

    The pool is made disjoint from the data first (:func:`write_disjoint_pool`).
    """
    from mmclip_plugin.ablation.config import pretrain_config
    from mmclip_plugin.checkpoint import find_latest
    from mmclip_plugin.model import is_checkpoint_dir
    from mmclip_plugin.train import train

    pre = ablation.pretrain
    if not pre.enabled:
        return None
    folder = out / "pretrain"
    pool = ablation.resolve(pre.data) if pre.data is not None else _build_data(
        ablation, pre.data_recipe, folder / "data", "pretrain.data_recipe")
    cfg = pretrain_config(ablation, base, folder / "pool", folder / "train")
    cfg.progress = progress and cfg.progress
    final = Path(cfg.output_dir) / "final"
    if is_checkpoint_dir(final):
        return final
    overlap = write_disjoint_pool(pool, data, folder / "pool")
    start = time.perf_counter()
    train(cfg, resume="latest" if find_latest(cfg.output_dir) is not None else None)
    atomic_write_json(folder / "pretrain.json", {"pool": str(pool), "steps": cfg.steps, "seed": cfg.seed,
                                          "images": cfg.steps * images_per_step(cfg), "overlap": overlap,
                                          "train_seconds": round(time.perf_counter() - start, 1)})
    return final


def held_out_samples(data: Path, split: str) -> tuple[list[Any], list[Any], int]:
    """The valid samples of ``split`` whose picture appears nowhere in ``train`` (positives and negatives), the
    records refused when reading (reported by the evaluation), and how many samples were left out because
    their picture is in train: the engine draws some identical pictures from different seeds (see
    :mod:`mmclip_plugin.overlap`)."""
    from mmclip_plugin.evaluate import load_split
    from mmclip_plugin.overlap import drop_seen, image_digests

    samples, bad = load_split(data, split)
    if split == "train":
        return samples, bad, 0
    kept, leaked = drop_seen(samples, image_digests(data, ("train",)))
    if leaked:
        print(f"split {split}: {leaked} of {len(samples)} samples left out, their picture is also in train",
              file=sys.stderr)
    return kept, bad, leaked


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
            progress: bool = True, start: Path | None = None, left_out: int = 0,
            bad: Sequence[Any] = ()) -> dict[str, Any]:
    """Train (unless done or not a training arm) and evaluate one arm for one seed; write its ``eval.json``.

    ``start``: the pretrained start every arm begins from (None: the seed's random initial weights);
    ``left_out``: held-out samples not evaluated because their picture is in train (recorded);
    ``bad``: records of the split refused when reading (counted and listed in the result).
    """
    from mmclip_plugin.checkpoint import find_latest
    from mmclip_plugin.distributed import resolve_device
    from mmclip_plugin.evaluate import EvalConfig, evaluate_model
    from mmclip_plugin.model import is_checkpoint_dir, load_checkpoint
    from mmclip_plugin.train import train

    arm_dir = out / "arms" / arm.name / f"seed_{seed}"
    eval_file = arm_dir / "eval.json"
    init_dir = start if start is not None else save_initial_model(base, seed, out / "init" / f"seed_{seed}")
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
    result.update(checkpoint=str(model_dir), split=ablation.eval_split, left_out_seen_in_train=left_out, **info)
    arm_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(eval_file, result)
    return result


def _run_arm_job(ablation: AblationConfig, base: TrainConfig, arm_name: str, seed: int, out: Path,
                 samples: Sequence[Any], start: Path | None, left_out: int, bad: Sequence[Any]) -> dict[str, Any]:
    """:func:`run_arm` in a worker process of its own, on one intra-op thread (see :func:`run_ablation`)."""
    import torch

    torch.set_num_threads(1)
    return run_arm(ablation, base, get_arm(arm_name), seed, out, samples, False, start, left_out, bad)


def run_ablation(ablation: AblationConfig, out: str | os.PathLike, progress: bool = True,
                 jobs: int = 1) -> dict[str, Any]:
    """Run every (arm, seed) not yet evaluated, then write ``ablation.json``, ``ablation.md`` and ``ablation.png``.

    Args:
        ablation: the recipe.
        out: the output folder (resumed when it exists).
        progress: tqdm bars (single process only).
        jobs: (arm, seed) runs trained side by side in worker processes, one intra-op thread each: on a
            small CPU two single-threaded runs finish sooner than two multi-threaded ones in turn. Every run
            is seeded on its own, so the results do not depend on ``jobs``.

    Returns:
        arm name -> its evaluation JSON averaged over seeds (with ``per_seed``).
    """
    import json

    from mmclip_plugin.plots import plot_results

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = ablation.base_config()
    data = prepare_data(ablation, out)
    samples, bad, leaked = held_out_samples(data, ablation.eval_split)
    start = prepare_pretrained(ablation, base, data, out, progress)
    base = build_config(TrainConfig, merge_dicts(config_to_dict(base), {"data": {"train": str(data)}}), ablation.source)
    per_arm: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in ablation.arms}
    todo = []
    for arm_name in ablation.arms:
        get_arm(arm_name)  # an unknown name fails before anything trains
        for seed in ablation.seeds:
            eval_file = out / "arms" / arm_name / f"seed_{seed}" / "eval.json"
            if eval_file.is_file():
                print(f"arm {arm_name} seed {seed}: done, skipped ({eval_file})", file=sys.stderr)
                per_arm[arm_name][seed] = json.loads(eval_file.read_text())
            else:
                todo.append((arm_name, seed))
    if jobs > 1 and len(todo) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        print(f"{len(todo)} runs, {jobs} at a time", file=sys.stderr)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {job: pool.submit(_run_arm_job, ablation, base, *job, out, samples, start, leaked, bad)
                       for job in todo}
            for (arm_name, seed), future in futures.items():
                per_arm[arm_name][seed] = future.result()
                print(f"arm {arm_name} seed {seed}: done", file=sys.stderr)
    else:
        for arm_name, seed in todo:
            print(f"arm {arm_name} seed {seed}: running", file=sys.stderr)
            try:
                per_arm[arm_name][seed] = run_arm(ablation, base, get_arm(arm_name), seed, out, samples, progress,
                                                  start, leaked, bad)
            except KeyboardInterrupt as exc:
                raise Interrupted(f"arm {arm_name} seed {seed} stopped"
                                  + (f" ({str(exc).split(';')[0]})" if isinstance(exc, Interrupted) else "")
                                  + "; run the same command again to resume: finished arms are skipped and this one "
                                    "continues from its last checkpoint") from None
    results = {name: summarise_seeds({s: runs[s] for s in ablation.seeds}) for name, runs in per_arm.items()}
    atomic_write_json(out / "ablation.json", results)
    atomic_write_text(out / "ablation.md", format_table(ablation, results))
    plot_results(results, out / "ablation.png", title=f"{ablation.name}: held-out {ablation.eval_split} split")
    return results
