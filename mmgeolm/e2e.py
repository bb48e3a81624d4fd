"""The paper's headline in miniature: the same LLaVA stages with three towers, scored on paired questions.

The paper's end-to-end claim (GeoQA 50.7 with the original tower, 56.3 fine-tuned with random in-batch
negatives, 69.2 with hard negatives) is reproduced at demo scale by the ``e2e`` stage:

1. a probe set (``mmgeolm-data probe-set``, from the run's seed on the probe's own seed stream): each
   yes/no question is asked on a positive diagram and on the image hard negative that removed (or
   added) its fact, so the two answers differ;
2. for each row (``original``, ``in_batch``, ``hard_negatives``: ablation arms) and each seed: LLaVA
   stages 1 and 2 exactly as the main chain runs them (same LLM, data, steps; the seed's own), with that
   row's encoder frozen as the tower (the encoder of the arm's seed-``s`` run), then the probe answered
   and scored (``mmgeolm-bench generate`` / ``score probe``). The main chain's own model is reused for
   the row and seed it already trained;
3. :func:`summarize`: paired accuracy (a pair counts when both members are right) per row, mean over
   seeds, with bootstrap confidence intervals over the pairs, per relation, and the differences between
   rows; written to ``e2e/e2e.json``.

An answerer that never looks at the image gives both members of a pair the same answer, so its best
paired score (``blind_guess``) is the share of pairs whose two answers agree: 0 on a probe built this
way; answering yes/no by coin flip scores 0.25. Pairs whose picture also appears in the data's train
split (the engine draws some identical pictures from different seeds) are left out and counted.

    python -m mmgeolm.e2e summarize --e2e RUN/e2e --data RUN/data/dataset --row original=no_finetune ... --seeds 0 1
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmgeolm.recipe import E2E_ROWS, PipelineRecipe
from mmgeolm.run_layout import RunLayout
from mmgeolm.stages import python_module
from mmgeolm_core.cli import run_cli
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import FormatError, atomic_write_json, iter_jsonl, read_json

METRIC = "paired yes/no accuracy"
PLAN_FILE = "plan.json"
CHANCE_YES_NO_PAIRED = 0.25  # two fair coin flips both right


# ----------------------------------------------------------------------------- the stage's commands
def _done(path: Path) -> bool:
    return path.is_file()


def e2e_commands(recipe: PipelineRecipe, run: RunLayout) -> list[list[str]]:
    """The ``e2e`` stage's commands: the probe set, the runs' chains (``plan.json``, ``e2e.jobs`` at a time)
    and the summary, leaving out the parts a previous (interrupted) run finished."""
    from mmgeolm.pipeline import _console

    cfg = recipe.e2e
    probe = run.e2e_probe
    cmds: list[list[str]] = []
    if not _done(probe / "probe.jsonl"):
        seed = recipe.seed if cfg.probe_seed is None else cfg.probe_seed
        cmd = [_console("mmgeolm-data"), "probe-set", "--out", str(probe), "--num", str(cfg.probe),
               "--seed", str(seed), "--size", str(cfg.probe_size), "--relations", *cfg.relations,
               "--kinds", *cfg.kinds, "-q"]
        cmds.append(cmd + (["--letter-free"] if cfg.letter_free else []))
    chains = e2e_chains(recipe, run)
    if chains:
        run.e2e.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run.e2e / PLAN_FILE, chains)
        cmds.append(python_module("mmgeolm.e2e", "run-plan", run.e2e / PLAN_FILE, "--jobs", cfg.jobs))
    rows = [f"{row}={arm}" for row, arm in cfg.arms.items()]
    cmds.append(python_module("mmgeolm.e2e", "summarize", "--e2e", run.e2e, "--data", run.dataset, "--row", *rows,
                              "--seeds", *cfg.seeds, "--bootstrap", cfg.bootstrap, "--seed", recipe.seed))
    return cmds


def e2e_chains(recipe: PipelineRecipe, run: RunLayout) -> list[dict[str, Any]]:
    """One chain per unfinished (row, seed): LLaVA stages 1 and 2 with the row's tower, then the probe answered
    and scored. A chain's commands run in order; chains are independent of each other."""
    from mmgeolm.pipeline import _console, llava_command, llava_tower, llava_train_args

    cfg, llava = recipe.e2e, recipe.llava
    main_tower = llava_tower(recipe, run)
    chains = []
    for row, arm in cfg.arms.items():
        for seed in cfg.seeds:
            folder = run.e2e_run(row, seed)
            answers = folder / "probe"
            if _done(answers / "results.jsonl"):
                continue
            tower = run.ablation_encoder(arm, seed)
            cmds: list[list[str]] = []
            if tower == main_tower and seed == recipe.seed and _done(run.llava_model(2) / "trainer_state.json"):
                model = run.llava_model(2)  # the main chain trained exactly this run
            else:
                model = folder / "llava_stage2"
                projector = folder / "llava_stage1" / "mm_projector.bin"
                if not _done(projector):
                    cmds.append(llava_command(recipe, llava_train_args(
                        recipe, run, llava.stage1, folder / "llava_stage1", True, tower=tower, seed=seed)))
                if not _done(model / "trainer_state.json"):
                    cmds.append(llava_command(recipe, llava_train_args(
                        recipe, run, llava.stage2, model, False, tower=tower, seed=seed, projector=projector)))
            cmds.append([_console("mmgeolm-bench"), "generate", "probe", "--model-path", str(model),
                         "--questions", str(run.e2e_probe), "--out", str(answers), "--conv-mode", llava.version,
                         "--batch-size", "16", "--max-new-tokens", str(cfg.max_new_tokens), "-q"])
            cmds.append([_console("mmgeolm-bench"), "score", "probe", "--questions", str(run.e2e_probe),
                         "--predictions", str(answers / "predictions.jsonl"), "--out", str(answers), "--mode",
                         "robust", "-q"])
            chains.append({"name": f"{row}/seed_{seed}", "log": str(folder / "chain.log"),
                           "commands": [list(map(str, c)) for c in cmds]})
    return chains


def run_plan(plan: Path, jobs: int = 1) -> None:
    """Run the chains of ``plan`` (a JSON list of ``{"name", "log", "commands"}``), ``jobs`` chains at a time.

    Each chain's commands run in order, their output appended to the chain's log. With several jobs every
    process gets one intra-op thread: on a small CPU two single-threaded trainings side by side finish
    sooner than two multi-threaded ones in turn (tiny matrices do not split well across cores).

    Raises:
        JobError: a chain failed (every chain still runs to its end); the message names each failed chain,
            its command and the last lines of its log.
    """
    import os
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    from mmgeolm_core.errors import JobError

    chains = read_json(plan)
    env = dict(os.environ)
    if jobs > 1:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

    def run_chain(chain: dict[str, Any]) -> str | None:
        log_path = Path(chain["log"])
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as log:
            for argv in chain["commands"]:
                log.write(f"\n$ {' '.join(argv)}\n")
                log.flush()
                code = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
                if code != 0:
                    tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
                    return f"{chain['name']}: exit code {code} running {' '.join(argv)}\n" + "\n".join(tail)
        print(f"e2e run {chain['name']}: done (log: {log_path})", flush=True)
        return None

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        failures = [f for f in pool.map(run_chain, chains) if f]
    if failures:
        raise JobError(f"{len(failures)} of {len(chains)} end-to-end runs failed:\n" + "\n\n".join(failures))


# ----------------------------------------------------------------------------- scoring
def read_pairs(probe: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """pair id -> {"positive": record, "negative": record} from a probe folder's ``probe.jsonl``."""
    pairs: dict[str, dict[str, dict[str, Any]]] = {}
    for _, record in iter_jsonl(probe / "probe.jsonl"):
        pairs.setdefault(record["pair"], {})[record["member"]] = record
    broken = [p for p, m in pairs.items() if set(m) != {"positive", "negative"}]
    if broken:
        raise FormatError(probe / "probe.jsonl", f"pairs without both members (positive, negative): {broken[:5]}")
    return pairs


def pairs_seen_in_train(probe: Path, pairs: Mapping[str, Mapping[str, Any]], data: Path) -> set[str]:
    """Pairs whose positive or negative picture (by content) is also a picture of the data's train split."""
    from mmclip_plugin.overlap import file_digest, image_digests

    seen = image_digests(data, ("train",))
    return {p for p, members in pairs.items()
            if any(file_digest(str(probe / m["image"])) in seen for m in members.values())}


def read_correct(results: Path) -> dict[str, bool]:
    """record id -> scored right, from ``mmgeolm-bench score``'s ``results.jsonl``."""
    return {r["id"]: bool(r["correct"]) for _, r in iter_jsonl(results)}


def blind_guess(pairs: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> float:
    """The best paired score of an answerer that never looks at the picture: it answers both members of a
    pair alike (same question, no image), so it can only be right on pairs whose two answers agree."""
    agree = [m["positive"]["answer"].strip().lower() == m["negative"]["answer"].strip().lower()
             for m in pairs.values()]
    return sum(agree) / len(agree) if agree else 0.0


def _interval(samples: np.ndarray) -> list[float]:
    return [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))]


def bootstrap_interval(values: np.ndarray, draws: int = 2000, seed: int = 0) -> list[float]:
    """95% interval of the mean of ``values`` (seeds, items) over items resampled with replacement (the
    same items for every seed of a draw: the seeds answered the same questions)."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng([seed, 0xB007])
    picks = rng.integers(0, values.shape[1], size=(draws, values.shape[1]))
    return _interval(values[:, picks].mean(axis=(0, 2)))


def summarize(e2e: Path, data: Path, rows: Mapping[str, str], seeds: Sequence[int], bootstrap: int = 2000,
              seed: int = 0) -> dict[str, Any]:
    """Paired accuracy of every row (mean over seeds) with 95% bootstrap intervals over the pairs.

    The same resampled pairs serve every row and seed of one bootstrap draw, so the intervals of the
    differences between rows account for the questions being shared.

    Raises:
        FileNotFoundError: a run's ``results.jsonl`` is missing (the stage did not finish it).
    """
    probe = e2e / "probe"
    all_pairs = read_pairs(probe)
    leaked = pairs_seen_in_train(probe, all_pairs, data)
    pairs = {p: m for p, m in sorted(all_pairs.items()) if p not in leaked}
    if not pairs:
        raise InputError(f"{probe}: every pair's picture also appears in {data}'s train split")
    ids = list(pairs)
    relations = [pairs[p]["positive"]["relation"] for p in ids]
    both: dict[str, np.ndarray] = {}  # row -> (seeds, pairs) bool
    member: dict[str, np.ndarray] = {}
    same: dict[str, list[float]] = {}
    for row in rows:
        per_seed, per_seed_member, per_seed_same = [], [], []
        for s in seeds:
            folder = e2e / row / f"seed_{s}" / "probe"
            correct = read_correct(folder / "results.jsonl")
            extracted = {r["id"]: r.get("extracted") for _, r in iter_jsonl(folder / "results.jsonl")}
            pos = np.array([correct.get(pairs[p]["positive"]["id"], False) for p in ids])
            neg = np.array([correct.get(pairs[p]["negative"]["id"], False) for p in ids])
            per_seed.append(pos & neg)
            per_seed_member.append((pos.astype(float) + neg) / 2)
            per_seed_same.append(float(np.mean([str(extracted.get(pairs[p]["positive"]["id"])).lower()
                                                == str(extracted.get(pairs[p]["negative"]["id"])).lower()
                                                for p in ids])))
        both[row], member[row], same[row] = np.array(per_seed), np.array(per_seed_member), per_seed_same
    rng = np.random.default_rng([seed, 0xE2E])
    draws = rng.integers(0, len(ids), size=(bootstrap, len(ids)))  # resampled pair indices

    def estimate(values: np.ndarray, columns: np.ndarray | None = None) -> dict[str, Any]:
        """values (seeds, pairs): mean over seeds and pairs, per seed, and the bootstrap interval."""
        if columns is not None:
            values = values[:, columns]
        if values.shape[1] == 0:
            return {"mean": None, "ci95": [None, None], "per_seed": {}, "n_pairs": 0}
        boot = values[:, draws if columns is None else rng.integers(0, values.shape[1], (bootstrap, values.shape[1]))]
        return {"mean": float(values.mean()), "ci95": _interval(boot.mean(axis=(0, 2))),
                "per_seed": {str(s): float(v) for s, v in zip(seeds, values.mean(axis=1))},
                "n_pairs": int(values.shape[1])}

    out_rows = {}
    for row, arm in rows.items():
        by_relation = {rel: estimate(both[row], np.flatnonzero(np.array(relations) == rel))
                       for rel in sorted(set(relations))}
        out_rows[row] = {"arm": arm, "paired": estimate(both[row]), "member": estimate(member[row]),
                         "by_relation": by_relation, "same_answer_rate": dict(zip(map(str, seeds), same[row]))}
    differences = {}
    names = list(rows)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            diff = both[b].astype(float) - both[a]
            boot = diff[:, draws].mean(axis=(0, 2))
            differences[f"{b} - {a}"] = {"mean": float(diff.mean()), "ci95": _interval(boot),
                                         "share_of_draws_above_0": float((boot > 0).mean())}
    return {
        "metric": METRIC,
        "rows": out_rows,
        "differences": differences,
        "blind_guess": blind_guess(pairs),
        "random_guess": CHANCE_YES_NO_PAIRED,
        "pairs": len(ids),
        "left_out_pairs_seen_in_train": len(leaked),
        "by_relation_pairs": {rel: relations.count(rel) for rel in sorted(set(relations))},
        "seeds": list(seeds),
        "bootstrap": bootstrap,
    }


def _row(text: str) -> tuple[str, str]:
    row, sep, arm = text.partition("=")
    if not (sep and row and arm):
        raise argparse.ArgumentTypeError(f"{text!r}: expected ROW=ARM, e.g. {E2E_ROWS[0]}=no_finetune")
    return row, arm


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmgeolm.e2e", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("run-plan", help="run the chains of a plan.json, several at a time")
    plan.add_argument("plan", type=Path)
    plan.add_argument("--jobs", type=int, default=1)
    summary = sub.add_parser("summarize", help="e2e.json from the runs' scored answers")
    summary.add_argument("--e2e", required=True, type=Path, help="the e2e stage folder (probe/, <row>/seed_<s>/)")
    summary.add_argument("--data", required=True, type=Path, help="the run's data set (its train split is checked)")
    summary.add_argument("--row", nargs="+", required=True, metavar="ROW=ARM", type=_row,
                         help=f"rows in order, e.g. {E2E_ROWS[0]}=no_finetune")
    summary.add_argument("--seeds", nargs="+", type=int, required=True)
    summary.add_argument("--bootstrap", type=int, default=2000)
    summary.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")
    return run_cli("python -m mmgeolm.e2e", parser, _run, argv)


def _run(args: argparse.Namespace) -> int:
    if args.command == "run-plan":
        run_plan(args.plan, args.jobs)
        return 0
    rows = dict(args.row)
    result = summarize(args.e2e, args.data, rows, args.seeds, args.bootstrap, args.seed)
    atomic_write_json(args.e2e / "e2e.json", result)
    for row, r in result["rows"].items():
        lo, hi = r["paired"]["ci95"]
        print(f"{row:15s} {METRIC} {100 * r['paired']['mean']:5.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] "
              f"over {result['pairs']} pairs x {len(args.seeds)} seeds")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
