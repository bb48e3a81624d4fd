"""Builder throughput vs the naive baseline, and worker scaling.

Measures, in one run and on the same diagrams, steady-state throughput: first every path warms up
on a small build of another seed (imports, font and glyph caches, the cached canvas, the worker
pool's forkserver, which later pools of the process reuse), and those cold starts are printed too.

1. the builder (`build_dataset`, 1 worker): images per second (positives + kept negatives, PNG and
   script written, candidates rendered, hardness measured, rejects included in the time);
2. the naive baseline: the same positives and kept negatives drawn with `engine.render_naive`
   (a new pyplot figure and `savefig` per image), only the drawing timed;
3. optionally, the reference's way: each generated script run in a fresh Python subprocess;
4. the builder with 2 workers, and the scaling efficiency rate(2) / (2 * rate(1)).

Usage:
    python benchmarks/bench_data.py              # under a minute on a 2-core machine
    python benchmarks/bench_data.py --full       # the full recipe's settings (336 px, K = 10), more samples
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from data_recipes.build.recipe import Recipe, build_recipe
from data_recipes.build.runner import BUILD_INFO_FILE, build_dataset
from data_recipes.diagrams import engine
from data_recipes.formats.dataset import read_samples
from mmgeolm_core.io import read_json


def make_recipe(num: int, size_px: int, per_positive: int, seed: int) -> Recipe:
    return build_recipe({
        "name": "bench", "seed": seed, "num": num, "image": {"size_px": size_px, "dpi": 100},
        "negatives": {"per_positive": per_positive},
    }, source="bench_data.py")


def time_builder(recipe: Recipe, out: Path, workers: int) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and images (positives + negatives) of one build from scratch.

    CPU = this process (aggregation, and the samples when workers = 1) + the workers' per-sample CPU
    time from build_info.json (worker start-up excluded: the forkserver forks them ready to work).
    """
    start, cpu = time.perf_counter(), time.process_time()
    manifest = build_dataset(recipe, out, workers=workers, relative_paths=True)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    if workers > 1:
        cpu += read_json(out / BUILD_INFO_FILE)["sample_cpu_seconds"]
    return wall, cpu, manifest["counts"]["images"]


def replay_scenes(recipe: Recipe, sample: dict) -> list:
    """The scenes of a built sample (positive, then its kept negatives), regenerated from its seed.

    Rendering draws no random numbers, so replaying the builder's draws (family, diagram, candidate
    rounds and their orders) gives back the very candidates it kept.
    """
    rng = np.random.default_rng([recipe.seed, sample["index"]])
    family = recipe.family_names[int(rng.choice(len(recipe.families), p=recipe.family_probabilities))]
    diagram = engine.generate_diagram(family, rng)
    wanted = [(n["type"], n["caption"], n["detail"]) for n in sample["negatives"]]
    if not wanted:
        return [diagram.scene]
    found = {}
    for _ in range(recipe.negatives.max_rounds):
        candidates = engine.iter_candidate_negatives(diagram, rng, list(recipe.negatives.types) or None, shuffle=rng)
        for c in candidates:
            found.setdefault((c.type, c.diagram.caption, c.detail), c.diagram.scene)
            if all(w in found for w in wanted):
                return [diagram.scene] + [found[w] for w in wanted]
    missing = [w for w in wanted if w not in found]
    raise RuntimeError(f"sample {sample['id']}: could not replay its negatives {missing}")


def time_naive(recipe: Recipe, samples: list[dict], out: Path) -> tuple[float, float, int]:
    scenes = [scene for s in samples for scene in replay_scenes(recipe, s)]
    out.mkdir(parents=True, exist_ok=True)
    start, cpu = time.perf_counter(), time.process_time()
    for i, scene in enumerate(scenes):
        engine.render_naive(scene, out / f"{i:06d}.png", size_px=recipe.image.size_px, dpi=recipe.image.dpi)
    return time.perf_counter() - start, time.process_time() - cpu, len(scenes)


def time_subprocess(root: Path, samples: list[dict], count: int, out: Path) -> tuple[float, int]:
    scripts = [s["script"] for s in samples][:count]
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i, script in enumerate(scripts):
        subprocess.run([sys.executable, str(root / script), str(out / f"{i}.png")], check=True,
                       env={**os.environ, "MPLBACKEND": "Agg"})
    return time.perf_counter() - start, len(scripts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=None, help="positives per build (default 240; 200 with --full)")
    parser.add_argument("--size", type=int, default=None, help="image size in px (default 224; 336 with --full)")
    parser.add_argument("--negatives", type=int, default=None, help="K per positive (default 4; 10 with --full)")
    parser.add_argument("--subprocess", type=int, default=5, help="scripts to run one subprocess each (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full", action="store_true", help="the full recipe's settings and more samples")
    args = parser.parse_args(argv)
    num = args.num or (200 if args.full else 240)
    size = args.size or (336 if args.full else 224)
    k = args.negatives if args.negatives is not None else (10 if args.full else 4)
    recipe = make_recipe(num, size, k, args.seed)
    print(f"{num} positives at {size} px, K = {k}, {len(recipe.families)} families, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    # Two clocks: wall time (what a user waits) and CPU time (robust when other jobs share the cores).
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        tmp = Path(tmp)
        # Warm-up (another seed): what a fresh process pays once, and not per image, on either path.
        warm = make_recipe(max(10, num // 10), size, k, args.seed + 1)
        w0, c0, n0 = time_builder(warm, tmp / "warm", workers=1)
        time_naive(warm, read_samples(tmp / "warm")[:3], tmp / "warm_naive")
        print(f"cold start        : {n0:5d} images, {w0:7.2f} s wall = {n0 / w0:6.1f} img/s "
              f"(the first build in a fresh process: imports, caches)")
        w0, c0, n0 = time_builder(warm, tmp / "warm2", workers=2)
        print(f"cold start, 2 w.  : {n0:5d} images, {w0:7.2f} s wall = {n0 / w0:6.1f} img/s "
              f"(the first pool: starting its forkserver, importing the engine there)")
        w1, c1, n1 = time_builder(recipe, tmp / "w1", workers=1)
        print(f"builder, 1 worker : {n1:5d} images, {w1:7.2f} s wall = {n1 / w1:6.1f} img/s; "
              f"{c1:7.2f} s CPU = {n1 / c1:6.1f} img/s per core")
        samples = read_samples(tmp / "w1")
        wn, cn, nn = time_naive(recipe, samples, tmp / "naive")
        print(f"naive pyplot      : {nn:5d} images, {wn:7.2f} s wall = {nn / wn:6.1f} img/s; "
              f"{cn:7.2f} s CPU = {nn / cn:6.1f} img/s per core")
        print(f"RATIO builder / naive per core: {(n1 / c1) / (nn / cn):.2f}x by CPU time, "
              f"{(n1 / w1) / (nn / wn):.2f}x by wall time (goal >= 3x)")
        if args.subprocess:
            ws, ns = time_subprocess(tmp / "w1", samples, args.subprocess, tmp / "subprocess")
            print(f"subprocess/script : {ns:5d} images, {ws:7.2f} s wall = {ns / ws:6.2f} img/s "
                  f"(the reference's way); builder is {(n1 / w1) / (ns / ws):.0f}x faster by wall time")
        w2, c2, n2 = time_builder(recipe, tmp / "w2", workers=2)
        print(f"builder, 2 workers: {n2:5d} images, {w2:7.2f} s wall = {n2 / w2:6.1f} img/s; "
              f"{c2:7.2f} s CPU = {n2 / c2:6.1f} img/s per core")
        print(f"SCALING 1 -> 2 workers: {(n2 / w2) / (n1 / w1):.2f}x by wall time, efficiency "
              f"{(n2 / w2) / (2 * n1 / w1):.2f} of linear (goal >= 0.8); per-core CPU efficiency "
              f"{(n2 / c2) / (n1 / c1):.2f} (parallel overhead only)")
        print(f"load average after: {os.getloadavg()[0]:.2f} (other processes share these {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
