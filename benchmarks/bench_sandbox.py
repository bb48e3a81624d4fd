"""Scripts per second: our sandbox vs one fresh `python script.py` per script, and vs the old sandbox.

The reference renders each LLM-written diagram script in a fresh Python subprocess. Every way here
renders the same generated matplotlib scripts (triangles, circles, labels, numbers) in the same run,
in alternating chunks so that all see the same machine load:

- ``subprocess``: one fresh ``python script.py`` per script (the reference's way, no isolation);
- ``sandbox``: ours, kernel-isolated (bubblewrap) warm workers forking a fresh child per script
  (``--no-isolation`` measures the same workers without bubblewrap);
- ``old sandbox``: the audit-hook sandbox this one replaced (one persistent interpreter running
  script after script, escapable), loaded from git commit ``--old-commit`` into a temporary folder.

Ratios compare one worker with one subprocess at a time, and W workers with W subprocesses.
Goal: >= 10x the fresh subprocess.

    python benchmarks/bench_sandbox.py            # 24 scripts, about a minute on 2 cores
    python benchmarks/bench_sandbox.py --full     # 400 scripts
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from data_recipes.external.sandbox import Sandbox

OLD_COMMIT = "d2c4607"  # main before issue 18: the audit-hook sandbox
REPO = Path(__file__).resolve().parent.parent

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


def load_old_sandbox(commit: str, folder: Path):
    """The old ``Sandbox`` class, from ``commit``'s two sandbox files (self-contained), or None."""
    for name in ("sandbox.py", "sandbox_worker.py"):
        done = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:data_recipes/external/{name}"],
                              capture_output=True)
        if done.returncode:
            print(f"old sandbox not measured: git show {commit}: {done.stderr.decode().strip()}")
            return None
        (folder / name).write_bytes(done.stdout)
    spec = importlib.util.spec_from_file_location("old_sandbox", folder / "sandbox.py")
    module = sys.modules["old_sandbox"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    spec.loader.exec_module(module)
    return module.Sandbox


def run_sandbox(sandbox, scripts: list[str]) -> float:
    start = time.perf_counter()
    results = list(sandbox.map(scripts))
    elapsed = time.perf_counter() - start
    failed = [r for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} scripts failed in the sandbox, e.g. {failed[0]}")
    return elapsed


def compare(scripts: list[str], paths: list[Path], out: Path, workers: int, chunk: int, isolation: bool,
            old_class) -> dict[str, float]:
    """Seconds per way (and pool start-up times); chunks of scripts alternate between the ways."""
    with ExitStack() as stack:
        pools, times = {}, {"subprocess": 0.0}
        for name, make in (("sandbox", lambda: Sandbox(workers=workers, timeout=60, isolation=isolation)),
                           ("old sandbox", lambda: old_class(workers=workers, timeout=60) if old_class else None)):
            start = time.perf_counter()
            pool = make()
            if pool is not None:
                pools[name] = stack.enter_context(pool)
                times[name], times[f"{name} start"] = 0.0, time.perf_counter() - start
        for i in range(0, len(scripts), chunk):
            times["subprocess"] += run_subprocesses(paths[i: i + chunk], out, workers)
            for name, pool in pools.items():
                times[name] += run_sandbox(pool, scripts[i: i + chunk])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scripts", type=int, default=24, help="number of scripts (default 24)")
    parser.add_argument("--full", action="store_true", help="400 scripts")
    parser.add_argument("--workers", type=int, default=2, help="W for the parallel comparison (default 2)")
    parser.add_argument("--no-isolation", action="store_true", help="measure our workers without bubblewrap")
    parser.add_argument("--old-commit", default=OLD_COMMIT, help=f"commit of the old sandbox (default {OLD_COMMIT}); "
                        "'' to skip it")
    args = parser.parse_args()
    n = 400 if args.full else args.scripts
    scripts = make_scripts(n)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = []
        for i, script in enumerate(scripts):
            paths.append(tmp / f"script_{i}.py")
            paths[-1].write_text(script)
        old_class = load_old_sandbox(args.old_commit, tmp) if args.old_commit else None
        isolation = not args.no_isolation
        print(f"{n} matplotlib diagram scripts, {os.cpu_count()} CPU cores; our sandbox "
              f"{'with bubblewrap' if isolation else 'WITHOUT isolation'}")
        rows = []
        for workers in (1, args.workers):
            times = compare(scripts, paths, tmp, workers, max(4, 4 * workers), isolation, old_class)
            rows.append(times)
            base, ours = times["subprocess"], times["sandbox"]
            line = (f"parallel {workers}: fresh subprocess {n / base:6.2f} scripts/s ({base / n * 1000:6.1f} ms) | "
                    f"sandbox {n / ours:6.2f} scripts/s ({ours / n * 1000:5.1f} ms; start {times['sandbox start']:.2f} s)"
                    f" = {base / ours:5.1f}x subprocess ({base / (ours + times['sandbox start']):4.1f}x with start)")
            if "old sandbox" in times:
                old = times["old sandbox"]
                line += f" | old sandbox {n / old:6.2f} scripts/s ({old / n * 1000:5.1f} ms): new/old = {old / ours:4.2f}x"
            print(line)
    ratio = rows[0]["subprocess"] / rows[0]["sandbox"]
    print(f"goal >= 10x the fresh subprocess: {'met' if ratio >= 10 else 'NOT met'} ({ratio:.1f}x at 1 worker)")


if __name__ == "__main__":
    main()
