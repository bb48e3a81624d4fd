"""``python -m llava_patches.answer_questions``: answer a question file with a LLaVA checkpoint and score it.

The question file is JSONL with ``image`` (relative to ``--image-folder``), ``question`` and
``answer`` (as written by ``data_recipes.formats.llava``); answers are scored by exact match
(``data_recipes.diagrams.questions.exact_match``). Writes ``answers.jsonl`` (one line per question, with the
prediction and whether it matched) and ``score.json`` (overall and per question kind).
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from data_recipes.diagrams.questions import exact_match
from data_recipes.formats.llava import read_questions as _read_questions
from llava_patches.loader import load_pretrained_model
from llava_patches.predict import answer_batch, load_image
from mmgeolm_core.cli import run_cli
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import atomic_write_text, check_model_path, check_output_dir

PROG = "python -m llava_patches.answer_questions"


def read_questions(path: Path, image_folder: Path | None = None) -> list[dict]:
    """The question file, checked by its format's owner (:func:`data_recipes.formats.llava.read_questions`):
    errors name the file, line and key; with ``image_folder``, every image must exist."""
    return _read_questions(path, image_folder)


def score(results: Sequence[dict]) -> dict:
    """Exact-match accuracy overall and per ``kind`` (and per yes/no answer)."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in results:
        groups["all"].append(r["correct"])
        groups[r.get("kind", "all")].append(r["correct"])
        if r["answer"] in ("yes", "no"):
            groups[f"answer={r['answer']}"].append(r["correct"])
    return {k: {"accuracy": sum(v) / len(v), "n": len(v)} for k, v in groups.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--model-base", default=None)
    parser.add_argument("--questions", required=True, type=Path)
    parser.add_argument("--image-folder", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="output folder for answers.jsonl and score.json")
    parser.add_argument("--conv-mode", default=None,
                        help="conversation template (default: qwen_2 for a llava_qwen checkpoint, else v1)")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8, help="questions per generate call (left-padded)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise InputError(f"--batch-size and --max-new-tokens must be >= 1, got {args.batch_size}, {args.max_new_tokens}")
    # every input is checked before the model is loaded: a missing image would otherwise end the run midway
    check_output_dir(args.out)
    check_model_path(args.model_path)
    if args.model_base:
        check_model_path(args.model_base, "--model-base")
    questions = read_questions(args.questions, args.image_folder)
    tokenizer, model, image_processor, _ = load_pretrained_model(args.model_path, args.model_base, device=args.device)
    results = []
    with tqdm(total=len(questions), desc="answering", unit="question", disable=None) as bar:
        for start in range(0, len(questions), args.batch_size):
            batch = questions[start : start + args.batch_size]
            images = [load_image(args.image_folder / q["image"]) for q in batch]
            predictions = answer_batch(tokenizer, model, image_processor, images, [q["question"] for q in batch],
                                       args.conv_mode, args.max_new_tokens)
            for q, prediction in zip(batch, predictions):
                results.append({**q, "prediction": prediction, "correct": exact_match(prediction, q["answer"])})
            bar.update(len(batch))
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "answers.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results))
    summary = score(results)
    atomic_write_text(args.out / "score.json", json.dumps(summary, indent=2) + "\n")
    print(f"exact match {summary['all']['accuracy']:.3f} on {summary['all']['n']} questions")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m llava_patches.answer_questions``; returns the exit status (2: bad input)."""
    return run_cli(PROG, build_parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
