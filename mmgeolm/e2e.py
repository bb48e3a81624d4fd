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

    python -m mmgeolm.e2e --e2e RUN/e2e --data RUN/data/dataset --row original=no_finetune ... --seeds 0 1
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
from mmgeolm_core.io import atomic_write_json, iter_jsonl

METRIC = "paired yes/no accuracy"
CHANCE_YES_NO_PAIRED = 0.25  # two fair coin flips both right


# ----------------------------------------------------------------------------- the stage's commands
def _done(path: Path) -> bool:
    return path.is_file()


def e2e_commands(recipe: PipelineRecipe, run: RunLayout) -> list[list[str]]:
    """The ``e2e`` stage's commands, leaving out the parts a previous (interrupted) run finished."""
    from mmgeolm.pipeline import _console, llava_command, llava_tower, llava_train_args

    cfg, llava = recipe.e2e, recipe.llava
    probe = run.e2e_probe
    cmds: list[list[str]] = []
    if not _done(probe / "probe.jsonl"):
        cmd = [_console("mmgeolm-data"), "probe-set", "--out", str(probe), "--num", str(cfg.probe),
               "--seed", str(recipe.seed if cfg.probe_seed is None else cfg.probe_seed), "--size", str(cfg.probe_size), "--relations", *cfg.relations,
               "--kinds", *cfg.kinds, "-q"]
        cmds.append(cmd + (["--letter-free"] if cfg.letter_free else []))
    main_tower = llava_tower(recipe, run)
    for row, arm in cfg.arms.items():
        for seed in cfg.seeds:
            folder = run.e2e_run(row, seed)
            answers = folder / "probe"
            if _done(answers / "results.jsonl"):
                continue
            tower = run.ablation_encoder(arm, seed)
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
                         "--questions", str(probe), "--out", str(answers), "--conv-mode", llava.version,
                         "--batch-size", "16", "--max-new-tokens", str(cfg.max_new_tokens), "-q"])
            cmds.append([_console("mmgeolm-bench"), "score", "probe", "--questions", str(probe), "--predictions",
                         str(answers / "predictions.jsonl"), "--out", str(answers), "--mode", "robust", "-q"])
    rows = [f"{row}={arm}" for row, arm in cfg.arms.items()]
    cmds.append(python_module("mmgeolm.e2e", "--e2e", run.e2e, "--data", run.dataset, "--row", *rows,
                              "--seeds", *cfg.seeds, "--bootstrap", cfg.bootstrap, "--seed", recipe.seed))
    return cmds


# ----------------------------------------------------------------------------- scoring
def read_pairs(probe: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """pair id -> {"positive": record, "negative": record} from a probe folder's ``probe.jsonl``."""
    pairs: dict[str, dict[str, dict[str, Any]]] = {}
    for _, record in iter_jsonl(probe / "probe.jsonl"):
        pairs.setdefault(record["pair"], {})[record["member"]] = record
    broken = [p for p, m in pairs.items() if set(m) != {"positive", "negative"}]
    if broken:
        raise ValueError(f"{probe / 'probe.jsonl'}: pairs without both members: {broken[:5]}")
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
        raise ValueError(f"{probe}: every pair's picture also appears in {data}'s train split")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmgeolm.e2e", description=__doc__.split("\n\n")[0])
    parser.add_argument("--e2e", required=True, type=Path, help="the e2e stage folder (probe/, <row>/seed_<s>/)")
    parser.add_argument("--data", required=True, type=Path, help="the run's data set (its train split is checked)")
    parser.add_argument("--row", nargs="+", required=True, metavar="ROW=ARM", help=f"rows in order, e.g. {E2E_ROWS[0]}=no_finetune")
    parser.add_argument("--seeds", nargs="+", type=int, required=True)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")
    args = parser.parse_args(argv)
    rows = dict(r.split("=", 1) for r in args.row)
    result = summarize(args.e2e, args.data, rows, args.seeds, args.bootstrap, args.seed)
    atomic_write_json(args.e2e / "e2e.json", result)
    for row, r in result["rows"].items():
        lo, hi = r["paired"]["ci95"]
        print(f"{row:15s} {METRIC} {100 * r['paired']['mean']:5.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] "
              f"over {result['pairs']} pairs x {len(args.seeds)} seeds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
