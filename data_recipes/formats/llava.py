"""Turn a built data set into LLaVA's training JSON and a held-out question file.

LLaVA reads a JSON list of ``{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."},
{"from": "gpt", "value": ...}]}`` with image paths relative to ``--image_folder`` (here: the data set
directory). Stage 1 (projector pretraining) learns from captions; stage 2 (instruction tuning) from
captions and fact questions of the train split; the held-out questions come from the val split, whose
diagrams were drawn from seeds the training never saw.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_recipes.diagrams.questions import make_questions, paired_questions, questions_for_sample
from data_recipes.formats.dataset import read_samples
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import atomic_write_json, atomic_write_text

CAPTION_PROMPTS = (
    "Describe the geometric figure.",
    "What does the diagram show?",
    "Describe this diagram in detail.",
)


def _turns(question: str, answer: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]


@dataclass
class LlavaDataFiles:
    stage1: Path
    stage2: Path
    questions: Path
    counts: dict[str, int]


STAGE2_KINDS = ("all", "paired-yes-no")


def paired_yes_no_records(sample: dict) -> list[dict]:
    """Every yes/no question of ``sample`` asked as a pair: on the positive and on the image negative that
    removed (or added) its fact, with opposite answers (:func:`data_recipes.diagrams.questions.paired_questions`).

    A question text then has "yes" as often as "no", so only the picture tells them apart; asked on the
    positive alone, "Is AB parallel to CD?" is nearly always "yes" and a small model learns the text's prior.
    """
    out = []
    for k, negative in enumerate(sample.get("negatives", [])):
        asked = paired_questions(sample["facts"], negative["facts"], negative["removed"], negative["added"])
        for j, q in enumerate(q for q in asked if q.kind == "yes_no"):
            out.append({"id": f"{sample['id']}-n{k}-q{j}-pos", "image": sample["image"],
                        "conversations": _turns(q.question, q.positive_answer)})
            out.append({"id": f"{sample['id']}-n{k}-q{j}-neg", "image": negative["image"],
                        "conversations": _turns(q.question, q.negative_answer)})
    return out


def write_llava_data(data_dir: str | Path, out_dir: str | Path, num_questions: int = 100,
                     seed: int = 0, stage2: str = "all") -> LlavaDataFiles:
    """Write ``stage1.json``, ``stage2.json`` and held-out ``questions.jsonl`` into ``out_dir``.

    Args:
        data_dir: a data set built by ``mmgeolm-data build`` (with a val split for held-out questions).
        out_dir: destination folder (created).
        num_questions: held-out questions to draw from the val split.
        seed: drives prompt choice and question sampling.
        stage2: ``all`` (captions and every fact question of the train split) or ``paired-yes-no`` (only
            yes/no questions asked in pairs, see :func:`paired_yes_no_records`).

    Raises:
        InputError: when the data set has no train or no val samples.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = read_samples(data_dir)
    train = [s for s in samples if s["split"] == "train"]
    val = [s for s in samples if s["split"] == "val"]
    if not train or not val:
        raise InputError(
            f"{data_dir}: need train and val samples for LLaVA data (got {len(train)} train, {len(val)} val); "
            "set a val fraction in the data recipe"
        )
    rng = np.random.default_rng(seed)
    stage1 = [
        {"id": s["id"], "image": s["image"], "conversations": _turns(CAPTION_PROMPTS[0], s["caption"])} for s in train
    ]
    if stage2 not in STAGE2_KINDS:
        raise InputError(f"stage2={stage2!r}; expected one of {list(STAGE2_KINDS)}")
    records = []
    for s in train:
        if stage2 == "paired-yes-no":
            records += paired_yes_no_records(s)
            continue
        prompt = CAPTION_PROMPTS[int(rng.integers(len(CAPTION_PROMPTS)))]
        records.append({"id": s["id"], "image": s["image"], "conversations": _turns(prompt, s["caption"])})
        for j, q in enumerate(questions_for_sample(s)):
            records.append({"id": f"{s['id']}-q{j}", "image": q.image, "conversations": _turns(q.question, q.answer)})
    if not records:
        raise InputError(f"{data_dir}: no stage-2 record ({stage2}) in the train split")
    order = rng.permutation(len(records))
    stage2_records = [records[i] for i in order]
    questions = make_questions(val, num_questions, seed=seed)
    files = LlavaDataFiles(out_dir / "stage1.json", out_dir / "stage2.json", out_dir / "questions.jsonl",
                           {"stage1": len(stage1), "stage2": len(stage2_records), "questions": len(questions)})
    atomic_write_json(files.stage1, stage1)
    atomic_write_json(files.stage2, stage2_records)
    atomic_write_text(files.questions, "".join(json.dumps(q.to_dict(), ensure_ascii=False) + "\n" for q in questions))
    return files


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmgeolm-data llava-data``."""
    parser.add_argument("--data", required=True, type=Path, help="a data set built by mmgeolm-data build (train + val)")
    parser.add_argument("--out", required=True, type=Path, help="folder for stage1.json, stage2.json, questions.jsonl")
    parser.add_argument("--num-questions", type=int, default=60, help="held-out questions from the val split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage2", choices=STAGE2_KINDS, default="all",
                        help="stage-2 records: captions and every question (all), or only yes/no questions asked "
                             "on a positive and on its image negative with opposite answers (paired-yes-no)")


def run_cli(args: argparse.Namespace) -> int:
    """Run ``mmgeolm-data llava-data``."""
    files = write_llava_data(args.data, args.out, args.num_questions, args.seed, args.stage2)
    print(f"LLaVA data written to {args.out}: {files.counts}")
    return 0
