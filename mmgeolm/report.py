"""``python -m mmgeolm.report RUN_DIR``: ``report.md`` and ``report.html`` with the run's figures.

Everything in the report is read from the run's own outputs (data manifest, MMCLIP metrics, evaluation
JSON, ablation table, LLaVA trainer states, scored answers, stage DONE markers), so its numbers are the
numbers of that run. Sections whose stage did not run are left out; a partial run still gets a report.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from llava_patches.tiny_llm import is_tiny_llm  # noqa: E402
from mmgeolm.report_e2e import (  # noqa: E402
    e2e_section,
    encoder_interval,
    read_stage_json,
    tower_figures,
    tower_result,
    write_summary,
)
from mmgeolm.report_html import markdown_to_html  # noqa: E402
from mmgeolm.run_layout import STAGE_NAMES, RunLayout  # noqa: E402
from mmgeolm_core.cli import run_cli  # noqa: E402
from mmgeolm_core.config import load_yaml_mapping  # noqa: E402
from mmgeolm_core.errors import InputError  # noqa: E402
from mmgeolm_core.io import (  # noqa: E402
    FormatError,
    atomic_write_text,
    atomic_write_with,
    check_output_dir,
    iter_jsonl,
)

logger = logging.getLogger(__name__)


def _read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines log; a line that is not JSON (the torn last line of a killed job) is skipped
    with a warning naming the file and the line."""
    if not path.is_file():
        return []
    records = []
    for _, record in iter_jsonl(path, return_errors=True):
        if isinstance(record, FormatError):
            logger.warning("skipped: %s", record)
        else:
            records.append(record)
    return records


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _table(rows: list[list[str]]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])


def _save(fig: Any, path: Path) -> Path:
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- figures


def _llava_losses(run: Path) -> dict[str, list[tuple[int, float]]]:
    curves = {}
    for stage in ("llava_stage1", "llava_stage2"):
        state = read_stage_json(RunLayout(run).stage(stage) / "model" / "trainer_state.json")
        if state:
            points = [(e["step"], e["loss"]) for e in state.get("log_history", []) if "loss" in e]
            if points:
                curves[stage] = points
    return curves


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_llava_losses(curves: dict[str, list[tuple[int, float]]], path: Path) -> Path | None:
    """One panel per LLaVA stage: the logged loss and its moving average."""
    if not curves:
        return None
    titles = {"llava_stage1": "stage 1: projector pretraining (captions)",
              "llava_stage2": "stage 2: instruction tuning (captions + questions)"}
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 3.4), squeeze=False)
    for ax, (stage, points) in zip(axes[0], curves.items()):
        steps, losses = [p[0] for p in points], [p[1] for p in points]
        ax.plot(steps, losses, lw=1, alpha=0.35, color="tab:blue", label="loss")
        ax.plot(steps, _smooth(losses, max(1, len(losses) // 10)), lw=2, color="tab:blue", label="moving average")
        ax.set_title(titles.get(stage, stage), fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_mmclip_metrics(history: list[dict], path: Path) -> Path | None:
    """MMCLIP training: the loss terms (left) and the training-batch hard-negative accuracies (right)."""
    if not history:
        return None
    steps = [h["step"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    for key in ("loss", "in_batch", "image_negatives", "text_negatives"):
        if any(key in h for h in history):
            left.plot(steps, [h.get(key, float("nan")) for h in history], lw=2 if key == "loss" else 1, label=key)
    left.set_title("MMCLIP loss (total and per term)", fontsize=10)
    for key, label in (("t2i_hard_acc", "caption → image among its image negatives"),
                       ("i2t_hard_acc", "image → caption among its caption negatives")):
        if any(key in h for h in history):
            right.plot(steps, [h.get(key, float("nan")) for h in history], lw=1.5, label=label)
    top = max((h.get("loss", 0.0) for h in history), default=1.0)
    left.set_ylim(0, 1.45 * top)  # headroom for the legend above the curves
    left.legend(fontsize=8, loc="upper right", ncol=2)
    right.set_ylim(0, 1)
    right.set_title("hard-negative accuracy on training batches", fontsize=10)
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "\n".join([*lines, line])


def pick_answers(answers: list[dict], n: int) -> list[dict]:
    """Up to ``n`` answers mixing right and wrong ones and question kinds, in file order."""
    right = [a for a in answers if a.get("correct")]
    wrong = [a for a in answers if not a.get("correct")]
    half = min(len(right), max(n // 2, n - len(wrong)))
    chosen = {id(a) for a in right[:half] + wrong[: n - half]}
    return [a for a in answers if id(a) in chosen]


def plot_answers(image_root: Path, answers: list[dict], path: Path, n: int = 8) -> Path | None:
    """A grid of held-out diagrams with the question, the model's answer and the truth."""
    shown = pick_answers(answers, n)
    if not shown:
        return None
    cols = min(4, len(shown))
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 4.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, a in zip(axes.flat, shown):
        ax.imshow(Image.open(image_root / a["image"]).convert("RGB"))
        question = a["question"].replace(" Answer with one word.", "").replace(" Answer with a number.", "")
        question = question.replace(" Answer yes or no.", "")
        verdict = "right" if a["correct"] else "wrong"
        ax.set_title(f"{_wrap(question, 34)}\nmodel: {a['prediction'][:24]!r}   truth: {a['answer']!r}\n({verdict})",
                     fontsize=8.5, color="darkgreen" if a["correct"] else "firebrick")
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------- sections


def _data_section(run: Path, rel: Any) -> list[str]:
    manifest = read_stage_json(RunLayout(run).dataset / "manifest.json")
    if not manifest:
        return []
    counts = manifest.get("counts", {})
    md = ["## Data", ""]
    splits = [k for k in ("train", "dev", "val") if k != "dev" or counts.get("by_split", {}).get(k)]
    md += [_table([["positives", "image negatives", " / ".join(splits), "families", "perturbation types"],
                   [str(counts.get("accepted", "?")), str(counts.get("negatives", "?")),
                    " / ".join(str(counts.get("by_split", {}).get(k, 0)) for k in splits),
                    str(len(counts.get("by_family", {}))), str(len(counts.get("by_perturbation", {})))]]), ""]
    text = manifest.get("text_negatives", {}).get("counts")
    if text:
        md += ["Caption negatives: " + ", ".join(f"{k} {v}" for k, v in text.items()) + ".", ""]
    sheet = RunLayout(run).dataset / "contact_sheet.png"
    if sheet.is_file():
        md += ["Each row: a positive diagram (green) beside its image hard negatives (red), each labelled with its "
               "perturbation and the facts it removed (−) or added (+).", "", f"![contact sheet]({rel(sheet)})", ""]
    return md


def training_history(lines: list[dict]) -> list[dict]:
    """Metric lines by step, the last line of each step winning: a resumed or restarted training appends
    to ``metrics.jsonl`` and logs some steps again."""
    by_step = {line["step"]: line for line in lines if isinstance(line.get("step"), int) and "loss" in line}
    return [by_step[s] for s in sorted(by_step)]


def _mmclip_section(run: Path, out: Path, rel: Any) -> list[str]:
    history = training_history(_read_jsonl(RunLayout(run).mmclip / "metrics.jsonl"))
    if not history:
        return []
    last = history[-1]
    md = ["## MMCLIP training", "",
          f"{last['step']} steps; last logged loss {last['loss']:.3f} (first {history[0]['loss']:.3f}).", ""]
    if plot_mmclip_metrics(history, out / "mmclip_training.png"):
        md += ["![MMCLIP training](mmclip_training.png)", ""]
    return md


def _eval_section(run: Path, rel: Any) -> list[str]:
    evaluation = read_stage_json(RunLayout(run).eval_json)
    if not isinstance(evaluation, dict) or not evaluation:
        return []
    results = {"MMCLIP": evaluation} if "i2t_hard_acc" in evaluation else evaluation
    first = next(iter(results.values()))
    chance = first.get("chance", {})
    rows = [["metric", *results, "chance"]]
    for key, label in (("t2i_hard_acc", "caption → image among its image hard negatives"),
                       ("i2t_hard_acc", "image → caption among its caption hard negatives")):
        rows.append([label, *(_pct(r.get(key)) for r in results.values()), _pct(chance.get(key))])
    for key, label in (("t2i_r1", "caption → image R@1 over the split"), ("i2t_r1", "image → caption R@1 over the split")):
        rows.append([label, *(_pct(r.get("retrieval", {}).get(key)) for r in results.values()), _pct(chance.get("r1"))])
    n = first.get("counts", {}).get("samples", "?")
    md = ["## MMCLIP evaluation (held-out val split)", "",
          f"{n} held-out positives with their hard negatives; the trained encoder beside its starting weights.", "",
          _table(rows), ""]
    if RunLayout(run).eval_png.is_file():
        md += ["Per perturbation type: how often the caption scores its own image above a negative of that type "
               "(pairwise, chance 50%).", "", f"![per-type accuracy]({rel(RunLayout(run).eval_png)})", ""]
    return md


def _ablation_section(run: Path, rel: Any) -> list[str]:
    table = RunLayout(run).ablation / "ablation.md"
    if not table.is_file():
        return []
    # the table file is a document of its own: its headings go one level below this section's
    text = "\n".join(f"##{line}" if line.startswith("#") else line for line in table.read_text().strip().splitlines())
    md = ["## Ablation: which negatives help", "", text, ""]
    if (RunLayout(run).ablation / "ablation.png").is_file():
        md += [f"![ablation]({rel(RunLayout(run).ablation / 'ablation.png')})", ""]
    return md


def majority_baseline(answers: list[dict]) -> float | None:
    """Exact match of a blind guesser that gives each question kind its most common true answer."""
    if not answers:
        return None
    by_kind: dict[str, Counter] = {}
    for a in answers:
        by_kind.setdefault(a.get("kind", "all"), Counter())[a["answer"]] += 1
    return sum(c.most_common(1)[0][1] for c in by_kind.values()) / len(answers)


def _answers_section(run: Path, out: Path) -> list[str]:
    score = read_stage_json(RunLayout(run).answers / "score.json")
    if not isinstance(score, dict) or "all" not in score:
        return []
    rows = [["questions", "n", "exact match"]]
    rows += [[k, str(v["n"]), _pct(v["accuracy"])] for k, v in score.items()]
    md = ["## Held-out geometry questions", "",
          "Questions about diagrams of the val split (never seen in training) whose answers follow from the "
          "diagram's facts; a \"no\" question is asked on the hard negative that removed the fact.", "",
          _table(rows), ""]
    answers = _read_jsonl(RunLayout(run).answers / "answers.jsonl")
    blind = majority_baseline(answers)
    if blind is not None:
        md += [f"For reference, a blind guess (each question kind's most common answer, without looking at the "
               f"picture) scores {_pct(blind)} on these questions.", ""]
    if plot_answers(RunLayout(run).dataset, answers, out / "answers.png"):
        md += ["![answers](answers.png)", ""]
    return md


def _timings(run: Path) -> list[str]:
    rows = [["stage", "wall time", "CPU time"]]
    total = 0.0
    for stage in STAGE_NAMES:
        done = read_stage_json(RunLayout(run).done(stage))
        if done:
            total += done.get("seconds", 0.0)
            cpu = done.get("cpu_seconds")
            rows.append([stage, f"{done.get('seconds', 0):.0f} s", "n/a" if cpu is None else f"{cpu:.0f} s"])
    if len(rows) == 1:
        return []
    rows.append(["total", f"{total:.0f} s", ""])
    return ["## Stage times", "", _table(rows), "",
            "CPU time counts the processes each stage waited for; worker processes started by a fork server "
            "(the data builder's) may be missing from it.", ""]


def _headline(run: Path) -> list[str]:
    lines = []
    score = read_stage_json(RunLayout(run).answers / "score.json")
    if isinstance(score, dict) and "all" in score:
        lines.append(f"- **Held-out questions, exact match: {_pct(score['all']['accuracy'])}** "
                     f"({score['all']['n']} questions).")
    evaluation = read_stage_json(RunLayout(run).eval_json)
    if isinstance(evaluation, dict) and evaluation:
        results = {"MMCLIP": evaluation} if "i2t_hard_acc" in evaluation else evaluation
        (name, first), *others = results.items()
        chance = first.get("chance", {}).get("t2i_hard_acc")
        start = "".join(f"; {n}: {_pct(r.get('t2i_hard_acc'))}" for n, r in others)
        lines.append(f"- **MMCLIP caption → image among hard negatives: {_pct(first.get('t2i_hard_acc'))}** "
                     f"({name}{start}; chance {_pct(chance)}).")
    tower = tower_figures(RunLayout(run))
    e2e = read_stage_json(RunLayout(run).e2e_json)
    if tower and isinstance(e2e, dict):
        rows = e2e["rows"]
        lines.append("- **End to end, paired yes/no accuracy (both members of a pair right): "
                     + ", ".join(f"{name} {_pct(rows[name]['paired']['mean'])}" for name in rows)
                     + f"** (blind guess {_pct(e2e['blind_guess'])}; {e2e['pairs']} pairs x {len(e2e['seeds'])} "
                     f"seeds; intervals below). The tower LLaVA uses: caption → image among its hard negatives "
                     f"{_pct(tower['val_t2i_hard'])}{_interval_text(RunLayout(run))} on val "
                     f"(chance {_pct(tower['chance'])}).")
    arms = read_stage_json(RunLayout(run).ablation / "ablation.json")
    if isinstance(arms, dict) and {"image", "in_batch"} <= set(arms):
        gain = 100 * (arms["image"]["t2i_hard_acc"] - arms["in_batch"]["t2i_hard_acc"])
        lines.append(f"- **Ablation: image hard negatives {gain:+.1f} points** of caption → image hard accuracy "
                     f"over in-batch negatives alone ({_pct(arms['image']['t2i_hard_acc'])} vs "
                     f"{_pct(arms['in_batch']['t2i_hard_acc'])}, equal images).")
    return [*lines, ""] if lines else []


def _interval_text(run: RunLayout) -> str:
    result = tower_result(run)
    interval = encoder_interval(result, "t2i_hard") if result else None
    return "" if interval is None else f" [95% interval {_pct(interval[0])}, {_pct(interval[1])}]"


def _bench_section(run: Path) -> list[str]:
    """The paper's table with this run's row, and the probe (from ``run/bench/*/scores.json``)."""
    from mmgeolm.bench.paper import bench_section

    recipe = load_yaml_mapping(RunLayout(run).recipe, "run recipe") if RunLayout(run).recipe.is_file() else {}
    tiny = is_tiny_llm(((recipe or {}).get("llava") or {}).get("llm") or "")
    lines = bench_section(RunLayout(run).bench, tiny)
    return [*lines, ""] if lines else []


def build_report(run: Path) -> Path:
    """Write ``run/report/report.md`` and ``report.html``; returns the markdown path."""
    run = Path(run)
    out = RunLayout(run).report
    out.mkdir(parents=True, exist_ok=True)

    def rel(p: Path) -> str:
        return os.path.relpath(p, out)

    md: list[str] = [f"# MMGeoLM run report: `{run.resolve().name}`", ""]
    md += _headline(run)
    md += e2e_section(run)
    md += _data_section(run, rel)
    md += _mmclip_section(run, out, rel)
    md += _eval_section(run, rel)
    md += _ablation_section(run, rel)
    if plot_llava_losses(_llava_losses(run), out / "llava_loss.png"):
        md += ["## LLaVA training", "", "![LLaVA losses](llava_loss.png)", ""]
    md += _answers_section(run, out)
    md += _bench_section(run)
    md += _timings(run)
    text = "\n".join(md)
    write_summary(run)
    atomic_write_text(out / "report.md", text)
    atomic_write_text(out / "report.html", markdown_to_html(text, run.resolve().name))
    return out / "report.md"


def check_run_dir(run: Path) -> Path:
    """``run`` is a pipeline run directory (or an empty one: a run that has not started gets an empty report).

    Raises:
        InputError: it does not exist, is a file, or holds something else than a run (no recipe.yaml, no stage).
    """
    if not run.exists():
        raise InputError(f"{run}: no such run directory (expected the --out of `mmgeolm run`)")
    if not run.is_dir():
        raise InputError(f"{run}: is a file; expected the run directory given to `mmgeolm run --out`")
    layout = RunLayout(run)
    if any(run.iterdir()) and not layout.recipe.is_file() and not any(layout.stage(n).is_dir() for n in STAGE_NAMES):
        raise InputError(f"{run}: not a pipeline run directory (no recipe.yaml and no stage folder: "
                         f"{', '.join(STAGE_NAMES)})")
    check_output_dir(layout.report)
    return run


def _run(args: argparse.Namespace) -> int:
    path = build_report(check_run_dir(args.run_dir))
    print(f"report written to {path} and {path.with_suffix('.html')}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mmgeolm.report RUN_DIR`` on the project's one error path; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m mmgeolm.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="the run directory (the --out of `mmgeolm run`)")
    return run_cli("python -m mmgeolm.report", parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
