"""Rendering speed: the engine's fast path (cached canvas, pooled artists, PNG bytes) against the naive
baseline (a new pyplot figure and ``savefig`` per image), on the same scenes, in one run.

    python benchmarks/bench_render.py            # ~1 minute on a small machine
    python benchmarks/bench_render.py --full     # more scenes, both sizes

Prints images/s of each path and their ratio (goal: >= 4x).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from data_recipes.diagrams.engine import (
    candidate_negatives,
    encode_png,
    generate_diagram,
    list_families,
    render_array,
    render_naive,
)


def build_scenes(per_family: int, with_negatives: int) -> list:
    scenes = []
    for family in list_families():
        for seed in range(per_family):
            d = generate_diagram(family, np.random.default_rng(seed))
            scenes.append(d.scene)
            scenes += [n.diagram.scene for n in candidate_negatives(d, np.random.default_rng(seed))[:with_negatives]]
    return scenes


def time_both(scenes: list, size: int, out_dir: str) -> tuple[float, float]:
    """Seconds spent by each path; the two alternate scene by scene, so load changes hit both alike."""
    render_array(scenes[0], size)  # warm the cached canvas (one-off per process)
    fast = naive = 0.0
    for i, s in enumerate(scenes):
        t0 = time.perf_counter()
        png = encode_png(render_array(s, size, gray=True))  # the builder's path: one grey channel
        with open(os.path.join(out_dir, f"fast{i}.png"), "wb") as f:
            f.write(png)
        t1 = time.perf_counter()
        render_naive(s, os.path.join(out_dir, f"naive{i}.png"), size)
        t2 = time.perf_counter()
        fast, naive = fast + t1 - t0, naive + t2 - t1
    return fast, naive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-family", type=int, default=2, help="positives per family")
    parser.add_argument("--negatives", type=int, default=2, help="negatives per positive")
    parser.add_argument("--size", type=int, nargs="+", default=[336])
    parser.add_argument("--full", action="store_true", help="10 positives per family, 4 negatives, 224 and 336 px")
    args = parser.parse_args(argv)
    if args.full:
        args.per_family, args.negatives, args.size = 10, 4, [224, 336]
    scenes = build_scenes(args.per_family, args.negatives)
    with tempfile.TemporaryDirectory() as out:
        for size in args.size:
            fast, naive = time_both(scenes, size, out)
            n = len(scenes)
            print(f"{size}px, {n} images: fast {n / fast:.1f} img/s, naive {n / naive:.1f} img/s, "
                  f"ratio {naive / fast:.2f}x (goal >= 4x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
