"""Scripts per second: our sandbox (persistent warm workers) vs one fresh `python script.py` per script.

The reference renders each LLM-written diagram script in a fresh Python subprocess. Both sides here
render the same generated matplotlib scripts (triangles, circles, labels, numbers) in the same run;
the ratio compares one sandbox worker with one subprocess at a time, and the pool with W workers
with W subprocesses at a time. Goal: >= 20x.

    python benchmarks/bench_sandbox.py            # 24 scripts, about a minute on 2 cores
    python benchmarks/bench_sandbox.py --full     # 400 scripts
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from data_recipes.external.sandbox import Sandbox

TEMPLATE = """
import sys
import matplotlib.pyplot as plt
from matplotlib.patches import Circle

A, B, C = ({ax:.2f}, {ay:.2f}), ({bx:.2f}, {by:.2f}), ({cx:.2f}, {cy:.2f})
fig, ax = plt.subplots(figsize=(3, 3), dpi=80)
for P, Q in [(A, B), (B, C), (C, A)]:
    ax.plot([P[0], Q[0]], [P[1], Q[1]], 'k-', lw=1.5)
ax.plot([C[0], C[0]], [C[1], {ay:.2f}], 'k--', lw=1)
ax.add_patch(Circle(({ox:.2f}, {oy:.2f}), {r:.2f}, fill=False))
for name, P in zip('ABC', (A, B, C)):
    ax.text(P[0] + 0.1, P[1] + 0.1, name, fontsize=12)
ax.text({lx:.2f}, {ly:.2f}, '{n} cm', fontsize=10)
ax.set_aspect('equal')
ax.axis('off')
plt.savefig(sys.argv[1])
"""


def make_scripts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    scripts = []
    for _ in range(n):
        ax, ay = rng.uniform(-1, 0, 2)
        values = dict(ax=ax, ay=ay, bx=rng.uniform(3, 5), by=ay, cx=rng.uniform(0.5, 2.5), cy=rng.uniform(2, 4),
                      ox=rng.uniform(1, 2), oy=rng.uniform(0.5, 1.5), r=rng.uniform(0.3, 0.8),
                      lx=rng.uniform(1, 2), ly=ay - 0.4, n=int(rng.integers(2, 12)))
        scripts.append(TEMPLATE.format(**values))
    return scripts


def run_subprocesses(paths: list[Path], out: Path, parallel: int) -> float:
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}

    def one(path: Path) -> None:
        subprocess.run([sys.executable, str(path), str(out / f"{path.stem}.png")], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, paths))
    return time.perf_counter() - start


def run_sandbox(sandbox: Sandbox, scripts: list[str]) -> float:
    start = time.perf_counter()
    results = list(sandbox.map(scripts))
    elapsed = time.perf_counter() - start
    failed = [r for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} scripts failed in the sandbox, e.g. {failed[0]}")
    return elapsed


def compare(scripts: list[str], paths: list[Path], out: Path, workers: int, chunk: int) -> tuple[float, float, float]:
    """Chunks of scripts alternate between the two ways, so both see the same machine load."""
    start = time.perf_counter()
    with Sandbox(workers=workers, timeout=60) as sandbox:
        startup = time.perf_counter() - start
        base = ours = 0.0
        for i in range(0, len(scripts), chunk):
            base += run_subprocesses(paths[i: i + chunk], out, workers)
            ours += run_sandbox(sandbox, scripts[i: i + chunk])
    return base, ours, startup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scripts", type=int, default=24, help="number of scripts (default 24)")
    parser.add_argument("--full", action="store_true", help="400 scripts")
    parser.add_argument("--workers", type=int, default=2, help="W for the parallel comparison (default 2)")
    args = parser.parse_args()
    n = 400 if args.full else args.scripts
    scripts = make_scripts(n)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = []
        for i, script in enumerate(scripts):
            paths.append(tmp / f"script_{i}.py")
            paths[-1].write_text(script)
        print(f"{n} matplotlib diagram scripts, {os.cpu_count()} CPU cores")
        rows = []
        for workers in (1, args.workers):
            base, ours, startup = compare(scripts, paths, tmp, workers, chunk=max(4, 4 * workers))
            rows.append((workers, base, ours, startup))
            print(f"parallel {workers}: fresh subprocess {n / base:7.2f} scripts/s ({base / n * 1000:6.1f} ms each) | "
                  f"sandbox {n / ours:7.2f} scripts/s ({ours / n * 1000:6.1f} ms each; pool start {startup:.2f} s) | "
                  f"ratio {base / ours:5.1f}x (with pool start {base / (ours + startup):5.1f}x)")
    print(f"goal >= 20x: {'met' if rows[0][1] / rows[0][2] >= 20 else 'NOT met'} at 1 worker vs 1 subprocess")


if __name__ == "__main__":
    main()
