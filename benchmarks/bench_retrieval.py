"""Retrieval negatives at scale: ours (blocked top-k) vs a dense all-pairs baseline, on one core.

Captions are synthetic but geometry-like (templated clauses with random labels, shapes, relations and
numbers). Each measurement runs in its own subprocess with OMP/MKL/OpenBLAS limited to one thread and
reports wall time, CPU time and peak resident memory (ru_maxrss). Timings include the TF-IDF fit.

    python benchmarks/bench_retrieval.py            # ours at 100,000, both at 10,000 (about 2 minutes)
    python benchmarks/bench_retrieval.py --n 20000 --baseline-n 5000   # quicker

Goals (issue 3): 100,000 captions, K = 10 in <= 60 s and <= 2 GiB on one core; >= 5x faster than the
dense baseline at a size where the baseline fits.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")

SHAPES = ["square", "rectangle", "rhombus", "parallelogram", "trapezoid", "kite", "quadrilateral"]
TRIANGLES = ["equilateral", "isosceles", "scalene", "right", "acute", "obtuse"]
CEVIANS = ["median", "altitude", "angle bisector", "perpendicular bisector"]
CLAUSES = [
    "{A}{B}{C}{D} is a {shape} with side {n} cm",
    "in {tri} triangle {A}{B}{C}, {D} is the {div} of {A}{B}",
    "{A}{B} is the {chord} of circle {O}",
    "point {C} lies {pos} circle {O}",
    "∠{A}{B}{C} = {deg}°",
    "line {A}{B} is {par} to {C}{D}",
    "{E}{F} {verb} {A}{B} at {G}",
    "{A}{E}:{E}{B} = {n}:{m}",
    "triangle {A}{B}{C} is {sim} to triangle {D}{E}{F}",
    "circle {O} is {insc} triangle {A}{B}{C}",
    "{P}{A} is {tan} to circle {O} at {A}",
    "{A}{D} is the {cevian} from {A} to side {B}{C}",
    "the diagonals {A}{C} and {B}{D} meet at {O}",
    "{G} is the {center} of triangle {A}{B}{C}",
    "the radius of circle {O} is {n}",
    "the area of {shape} {A}{B}{C}{D} is {nn} square units",
]
OPENERS = ["", "In the figure, ", "As shown, ", "In the diagram, "]


def make_captions(n: int, seed: int = 0) -> list[str]:
    """``n`` geometry-like captions of 2-4 templated clauses each (cheap, deterministic)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = list("ABCDEFGHKMNPQRST")
    out = []
    for _ in range(n):
        picks = rng.choice(len(CLAUSES), size=int(rng.integers(2, 5)), replace=False)
        names = rng.choice(letters, size=9, replace=False)
        fill = dict(zip("ABCDEFGOP", names))
        clauses = []
        for p in picks:
            clauses.append(CLAUSES[p].format(
                **fill, shape=rng.choice(SHAPES), tri=rng.choice(TRIANGLES), cevian=rng.choice(CEVIANS),
                div=rng.choice(["midpoint", "trisection point"]), chord=rng.choice(["diameter", "chord"]),
                pos=rng.choice(["on", "inside", "outside"]), par=rng.choice(["parallel", "perpendicular"]),
                verb=rng.choice(["intersects", "bisects", "meets"]), sim=rng.choice(["similar", "congruent"]),
                insc=rng.choice(["inscribed in", "circumscribed about"]), tan=rng.choice(["tangent", "secant"]),
                center=rng.choice(["centroid", "incenter", "circumcenter", "orthocenter"]),
                deg=5 * int(rng.integers(2, 34)), n=int(rng.integers(1, 30)), m=int(rng.integers(1, 30)),
                nn=int(rng.integers(10, 400)),
            ))
        text = rng.choice(OPENERS) + ", and ".join(clauses) + "."
        out.append(text[0].upper() + text[1:])
    return out


def _ours(captions: list[str], k: int) -> list[list[float]]:
    from data_recipes.text_negatives.retrieval import retrieve_neighbours

    return [r.scores for r in retrieve_neighbours(captions, k)]


def _dense(captions: list[str], k: int, dtype: str = "float64") -> list[list[float]]:
    """The baseline: scikit-learn's TF-IDF (its default float64 unless told) and the full N x N cosine
    matrix (``cosine_similarity``), then the top-k of each row by argpartition, with the same exclusions."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    from data_recipes.text_negatives.retrieval import STOP_WORDS, TOKEN_PATTERN, normalise_caption

    x = TfidfVectorizer(dtype=np.dtype(dtype), stop_words=list(STOP_WORDS), token_pattern=TOKEN_PATTERN).fit_transform(captions)
    sims = cosine_similarity(x)  # (N, N) dense
    np.fill_diagonal(sims, -np.inf)
    sims[sims > 0.98] = -np.inf
    groups: dict[str, int] = {}
    group = np.array([groups.setdefault(normalise_caption(c), len(groups)) for c in captions])
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.r_[True, group[order][1:] != group[order][:-1]])
    for members in np.split(order, starts[1:]):
        if len(members) > 1:
            sims[np.ix_(members, members)] = -np.inf
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    values = np.take_along_axis(sims, top, axis=1)
    values = -np.sort(-values, axis=1)
    return [[float(v) for v in row if v > 0] for row in values]


def child(mode: str, n: int, k: int, seed: int, dtype: str) -> None:
    """Run one measurement in this (fresh) process and print one JSON line."""
    import resource
    import time

    import sklearn.metrics.pairwise  # noqa: F401

    import data_recipes.text_negatives.retrieval  # noqa: F401  (imports are not part of the measurement)

    captions = make_captions(n, seed)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall, cpu = time.perf_counter(), time.process_time()
    scores = _ours(captions, k) if mode == "ours" else _dense(captions, k, dtype)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    sample = [scores[i] for i in range(0, n, max(1, n // 200))]
    print(json.dumps({"mode": mode, "n": n, "wall_s": wall, "cpu_s": cpu, "peak_mib": peak / 1024,
                      "start_mib": rss_before / 1024, "sample": sample}))


def measure(mode: str, n: int, k: int, seed: int, dtype: str) -> dict:
    env = dict(os.environ, **{v: "1" for v in THREAD_VARS})
    cmd = [sys.executable, __file__, "--child", mode, "--n", str(n), "--k", str(k), "--seed", str(seed),
           "--baseline-dtype", dtype]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} at n={n} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="captions for the scale run of ours")
    parser.add_argument("--baseline-n", type=int, default=10_000,
                        help="size at which ours and the dense baseline are compared (its N x N matrix must fit)")
    parser.add_argument("--baseline-dtype", choices=["float64", "float32"], default="float64",
                        help="TF-IDF dtype of the baseline (float64 is scikit-learn's default)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=["ours", "dense"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.n, args.k, args.seed, args.baseline_dtype)
        return

    print(f"retrieval negatives, K = {args.k}, one thread; wall / CPU seconds, peak RSS; "
          f"dense baseline: {args.baseline_dtype} TF-IDF, N x N cosine_similarity, argpartition top-k")
    rows = []
    for mode, n in (("ours", args.baseline_n), ("dense", args.baseline_n), ("ours", args.n)):
        r = measure(mode, n, args.k, args.seed, args.baseline_dtype)
        rows.append(r)
        print(f"  {mode:5s} N={n:>7,d}: {r['wall_s']:7.2f} s wall  {r['cpu_s']:7.2f} s CPU  "
              f"{r['peak_mib']:8.1f} MiB peak ({r['start_mib']:.1f} MiB before retrieval)")
    ours_small, dense_small, ours_big = rows
    agree = all(len(a) == len(b) and all(abs(x - y) < 1e-4 for x, y in zip(a, b))
                for a, b in zip(ours_small["sample"], dense_small["sample"]))
    print(f"same top-{args.k} similarities as the baseline on sampled rows: {agree}")
    print(f"speed ratio dense / ours at N={args.baseline_n:,}: {dense_small['wall_s'] / ours_small['wall_s']:.1f}x wall, "
          f"{dense_small['cpu_s'] / ours_small['cpu_s']:.1f}x CPU (goal >= 5x)")
    print(f"memory ratio dense / ours at N={args.baseline_n:,}: {dense_small['peak_mib'] / ours_small['peak_mib']:.1f}x peak RSS")
    ok_time = ours_big["cpu_s"] <= 60
    ok_mem = ours_big["peak_mib"] <= 2048
    print(f"ours at N={args.n:,}: {ours_big['cpu_s']:.1f} s CPU, {ours_big['wall_s']:.1f} s wall "
          f"(goal <= 60 s on one core, judged on CPU time: {'met' if ok_time else 'NOT met'}), "
          f"{ours_big['peak_mib']:.0f} MiB (goal <= 2048: {'met' if ok_mem else 'NOT met'})")


if __name__ == "__main__":
    main()
