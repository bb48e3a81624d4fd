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
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_recipes.diagrams.questions import make_questions, paired_questions, questions_for_sample
from data_recipes.formats.dataset import read_samples_report
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import (
    FormatError,
    atomic_write_json,
    atomic_write_text,
    check_output_dir,
    iter_jsonl,
    read_json,
)

logger = logging.getLogger(__name__)
SUMMARY_FILE = "llava_data.json"
"""Counts and the records skipped (refused by the data-set format), written beside the training files."""

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

    Records the data-set format refuses (a bad key, a missing image) are skipped, counted in ``counts`` and
    listed in ``llava_data.json``, as ``mmclip-train`` skips them.

    Raises:
        InputError: when the data set has no train or no val samples.
    """
    data_dir, out_dir = Path(data_dir), check_output_dir(out_dir)
    # skipped and reported like mmclip-train does, so both read the same records of the same data set
    samples, problems = read_samples_report(data_dir, check_files=True)
    for problem in problems[:5]:
        logger.warning("skipped: %s", problem)
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
                           {"stage1": len(stage1), "stage2": len(stage2_records), "questions": len(questions),
                            "bad_records": len(problems)})
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(files.stage1, stage1)
    atomic_write_json(files.stage2, stage2_records)
    atomic_write_text(files.questions, "".join(json.dumps(q.to_dict(), ensure_ascii=False) + "\n" for q in questions))
    atomic_write_json(out_dir / SUMMARY_FILE, {"data": str(data_dir), "counts": files.counts,
                                                "bad_records": len(problems),
                                                "bad_record_details": [str(p) for p in problems]})
    return files


# --------------------------------------------------------------------------- reading (LLaVA training JSON, questions)


def read_llava_records(path: str | Path, image_folder: str | Path | None = None) -> list[dict[str, Any]]:
    """The records of a LLaVA training JSON list, checked as upstream's ``LazySupervisedDataset`` will use them.

    Upstream reads a record only when its batch comes, so a bad one would stop a run hours in; every record
    is checked here first. Each is ``{"conversations": [{"from": str, "value": str}, ...], "image"?: str}``;
    with ``image_folder`` given, every image must exist under it.

    Raises:
        FormatError: an empty or unreadable file, or the first bad record (naming file, record and key).
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise FormatError(path, f"expected a JSON list of LLaVA records, got {type(data).__name__}")
    if not data:
        raise FormatError(path, "no records (expected a JSON list of LLaVA records)")
    for i, record in enumerate(data):
        where = f"record {i}" + (f" (id {record['id']})" if isinstance(record, dict) and "id" in record else "")
        if not isinstance(record, dict):
            raise FormatError(path, f"expected a JSON object, got {type(record).__name__}", where=where)
        turns = record.get("conversations")
        if not isinstance(turns, list) or not turns:
            raise FormatError(path, f"expected a non-empty list of turns, got {turns!r:.80}", where=where,
                              key="conversations")
        for j, turn in enumerate(turns):
            if not (isinstance(turn, dict) and isinstance(turn.get("from"), str) and isinstance(turn.get("value"), str)):
                raise FormatError(path, f'expected {{"from": str, "value": str}}, got {turn!r:.80}', where=where,
                                  key=f"conversations[{j}]")
        if "image" in record:
            image = record["image"]
            if not isinstance(image, str) or not image:
                raise FormatError(path, f"expected an image path, got {image!r:.80}", where=where, key="image")
            if image_folder is not None and not (Path(image_folder) / image).is_file():
                raise FormatError(path, f"image {Path(image_folder) / image} does not exist (--image_folder "
                                  f"{image_folder})", where=where, key="image")
    return data


QUESTION_KEYS = ("image", "question", "answer")


def read_questions(path: str | Path, image_folder: str | Path | None = None) -> list[dict[str, Any]]:
    """The held-out questions (``questions.jsonl``, one ``{"image", "question", "answer", ...}`` per line).

    Raises:
        FormatError: an empty or unreadable file, a line that is not JSON, a missing key, or (with
            ``image_folder``) an image that does not exist, naming the file, the line and the key.
    """
    path = Path(path)
    questions = []
    for lineno, record in iter_jsonl(path):
        where = f"line {lineno}"
        if not isinstance(record, dict):
            raise FormatError(path, f"expected a JSON object, got {type(record).__name__}", where=where)
        for key in QUESTION_KEYS:
            if not isinstance(record.get(key), str):
                raise FormatError(path, f"expected a string, got {record.get(key)!r:.80}", where=where, key=key)
        if image_folder is not None and not (Path(image_folder) / record["image"]).is_file():
            raise FormatError(path, f"image {Path(image_folder) / record['image']} does not exist", where=where,
                              key="image")
        questions.append(record)
    if not questions:
        raise FormatError(path, "no questions (expected JSON lines of {\"image\", \"question\", \"answer\"})")
    return questions


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
    print(f"LLaVA data written to {args.out}: {files.counts}"
          + (f" (skipped records listed in {Path(args.out) / SUMMARY_FILE})" if files.counts["bad_records"] else ""))
    return 0
