"""``python -m mmgeolm.report RUN_DIR``: ``report.md`` and ``report.html`` with the run's figures.

Everything in the report is read from the run's own outputs (manifest, metrics, evaluation JSON,
LLaVA trainer state, scored answers), so its numbers are the numbers of that run.
"""
from __future__ import annotations

import argparse
import html
import json
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402


def _dataset(run: Path) -> Path:
    """The data set a run built (``mmgeolm.pipeline.dataset_dir``; not imported to keep this module light)."""
    return run / "data" / "dataset"


def _read_json(path: Path) -> dict | list | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _llava_losses(run: Path) -> dict[str, list[tuple[int, float]]]:
    curves = {}
    for stage in ("llava_stage1", "llava_stage2"):
        state = _read_json(run / stage / "model" / "trainer_state.json")
        if state:
            curves[stage] = [(e["step"], e["loss"]) for e in state.get("log_history", []) if "loss" in e]
    return curves


def plot_llava_losses(curves: dict[str, list[tuple[int, float]]], path: Path) -> Path | None:
    if not curves:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.2), squeeze=False)
    for ax, (stage, points) in zip(axes[0], curves.items()):
        ax.plot([p[0] for p in points], [p[1] for p in points], lw=1.5)
        ax.set_title(stage.replace("_", " "))
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_answers(run: Path, answers: list[dict], path: Path, n: int = 8) -> Path | None:
    """A grid of held-out diagrams with the question, the model's answer and the truth."""
    if not answers:
        return None
    shown = answers[:n]
    cols = 4
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, a in zip(axes.flat, shown):
        ax.imshow(Image.open(_dataset(run) / a["image"]).convert("RGB"))
        mark = "✓" if a["correct"] else "✗"
        ax.set_title(f"{a['question'][:60]}\nmodel: {a['prediction'][:30]!r}  truth: {a['answer']} {mark}",
                     fontsize=8, color="green" if a["correct"] else "firebrick")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _table(rows: list[list[str]]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])


def build_report(run: Path) -> Path:
    """Write ``run/report/report.md`` and ``report.html``; returns the markdown path."""
    out = run / "report"
    out.mkdir(parents=True, exist_ok=True)
    rel = lambda p: os.path.relpath(p, out)  # noqa: E731
    md: list[str] = [f"# MMGeoLM run report: `{run.name}`", ""]

    manifest = _read_json(_dataset(run) / "manifest.json") or {}
    md += ["## Data", ""]
    counts = manifest.get("counts", {})
    if counts:
        md += [f"Built data set: `{json.dumps(counts)[:400]}`", ""]
    if (_dataset(run) / "contact_sheet.png").is_file():
        md += ["Each row: a positive diagram (green) beside its image hard negatives (red), labelled with the perturbation.",
               "", f"![contact sheet]({rel(_dataset(run) / 'contact_sheet.png')})", ""]

    md += ["## MMCLIP training", ""]
    if (run / "mmclip" / "loss_curve.png").is_file():
        md += [f"![MMCLIP loss]({rel(run / 'mmclip' / 'loss_curve.png')})", ""]
    evaluation = _read_json(run / "eval" / "eval.json")
    if isinstance(evaluation, dict):
        result = evaluation if "i2t_hard_acc" in evaluation else next(iter(evaluation.values()), {})
        md += ["## MMCLIP evaluation (held-out split)", "",
               _table([["metric", "value"],
                       ["image → caption among its hard negatives (i2t_hard_acc)", f"{result.get('i2t_hard_acc', float('nan')):.3f}"],
                       ["caption → image among its hard negatives (t2i_hard_acc)", f"{result.get('t2i_hard_acc', float('nan')):.3f}"]]),
               ""]
        if (run / "eval" / "eval.png").is_file():
            md += [f"![per-type accuracy]({rel(run / 'eval' / 'eval.png')})", ""]
    if (run / "ablation" / "ablation.md").is_file():
        md += ["## Ablation", "", (run / "ablation" / "ablation.md").read_text(), ""]
        if (run / "ablation" / "ablation.png").is_file():
            md += [f"![ablation]({rel(run / 'ablation' / 'ablation.png')})", ""]

    curves = _llava_losses(run)
    if plot_llava_losses(curves, out / "llava_loss.png"):
        md += ["## LLaVA training", "", "![LLaVA losses](llava_loss.png)", ""]
    score = _read_json(run / "answers" / "score.json")
    if isinstance(score, dict) and "all" in score:
        md += ["## Held-out geometry questions (exact match)", "",
               _table([["questions", "n", "accuracy"]] + [[k, str(v["n"]), f"{v['accuracy']:.3f}"] for k, v in score.items()]),
               ""]
        answers_path = run / "answers" / "answers.jsonl"
        answers = [json.loads(line) for line in answers_path.read_text().splitlines()] if answers_path.is_file() else []
        if plot_answers(run, answers, out / "answers.png"):
            md += ["![answers](answers.png)", ""]

    text = "\n".join(md)
    (out / "report.md").write_text(text)
    (out / "report.html").write_text(_markdown_to_html(text, run.name))
    return out / "report.md"


def _markdown_to_html(text: str, title: str) -> str:
    """The few markdown forms the report uses (headings, images, tables, paragraphs) as static HTML."""
    body: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, *rows = table
            body.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                        + "</table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                table.append(cells)
            continue
        flush()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            body.append(f'<p><img alt="{html.escape(alt)}" src="{html.escape(src.rstrip(")"))}" style="max-width:100%"></p>')
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush()
    style = "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmgeolm.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    path = build_report(args.run_dir)
    print(f"report written to {path} and {path.with_suffix('.html')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
