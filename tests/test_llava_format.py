"""LLaVA stage-1/2 JSON and held-out questions from a built data set (data_recipes.formats.llava)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from data_recipes.cli import main as data_main
from data_recipes.formats.dataset import read_samples, write_samples
from data_recipes.formats.llava import write_llava_data

TINY = Path(__file__).resolve().parents[1] / "data_recipes" / "recipes" / "tiny.yaml"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-data") / "data"
    assert data_main(["build", str(TINY), "--out", str(out), "--num", "10", "--workers", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def written(dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    return write_llava_data(dataset, tmp_path_factory.mktemp("llava"), num_questions=8, seed=0)


def _check_record(record: dict, dataset: Path) -> None:
    assert set(record) == {"id", "image", "conversations"}
    human, gpt = record["conversations"]
    assert human["from"] == "human" and human["value"].startswith("<image>\n")
    assert human["value"].count("<image>") == 1
    assert gpt["from"] == "gpt" and gpt["value"] and "<image>" not in gpt["value"]
    assert (dataset / record["image"]).is_file()


def test_stage1_is_one_caption_per_train_sample(dataset: Path, written) -> None:
    train = [s for s in read_samples(dataset) if s["split"] == "train"]
    stage1 = json.loads(written.stage1.read_text())
    assert [r["id"] for r in stage1] == [s["id"] for s in train]
    for record, sample in zip(stage1, train):
        _check_record(record, dataset)
        assert record["image"] == sample["image"]
        assert record["conversations"][1]["value"] == sample["caption"]


def test_stage2_has_captions_and_fact_questions_of_train_only(dataset: Path, written) -> None:
    samples = read_samples(dataset)
    train_images = {s["image"] for s in samples if s["split"] == "train"}
    train_images |= {n["image"] for s in samples if s["split"] == "train" for n in s["negatives"]}
    stage2 = json.loads(written.stage2.read_text())
    for record in stage2:
        _check_record(record, dataset)
        assert record["image"] in train_images
    ids = [r["id"] for r in stage2]
    assert len(ids) == len(set(ids))
    answers = {r["conversations"][1]["value"] for r in stage2}
    assert {"yes", "no"} <= answers
    assert written.counts["stage2"] == len(stage2) > written.counts["stage1"]


def test_questions_come_from_val_images_never_seen_in_training(dataset: Path, written) -> None:
    samples = read_samples(dataset)
    val_ids = {s["id"] for s in samples if s["split"] == "val"}
    stage_images = {r["image"] for f in (written.stage1, written.stage2) for r in json.loads(f.read_text())}
    questions = [json.loads(line) for line in written.questions.read_text().splitlines()]
    assert 0 < len(questions) <= 8 and len(questions) == written.counts["questions"]
    for q in questions:
        assert q["sample_id"] in val_ids and q["image"] not in stage_images
        assert {"image", "question", "answer", "kind", "fact"} <= set(q)


def test_same_seed_same_files(dataset: Path, written, tmp_path: Path) -> None:
    again = write_llava_data(dataset, tmp_path, num_questions=8, seed=0)
    for a, b in ((written.stage1, again.stage1), (written.stage2, again.stage2), (written.questions, again.questions)):
        assert a.read_bytes() == b.read_bytes()


def test_without_val_split_the_error_names_the_data_set(dataset: Path, tmp_path: Path) -> None:
    copy = tmp_path / "train-only"
    shutil.copytree(dataset, copy)
    write_samples(copy, [{**s, "split": "train"} for s in read_samples(copy)])
    with pytest.raises(ValueError, match="0 val") as info:
        write_llava_data(copy, tmp_path / "out")
    assert str(copy) in str(info.value)


def test_paired_yes_no_stage2_asks_each_question_on_both_images_with_opposite_answers(dataset: Path,
                                                                                    tmp_path: Path) -> None:
    from data_recipes.diagrams.questions import paired_questions

    written = write_llava_data(dataset, tmp_path, num_questions=8, seed=0, stage2="paired-yes-no")
    stage2 = json.loads(written.stage2.read_text())
    train = [s for s in read_samples(dataset) if s["split"] == "train"]
    expected = sum(1 for s in train for n in s["negatives"]
                   for q in paired_questions(s["facts"], n["facts"], n["removed"], n["added"]) if q.kind == "yes_no")
    assert expected > 0 and len(stage2) == 2 * expected
    by_pair: dict[str, dict[str, dict]] = {}
    for record in stage2:
        _check_record(record, dataset)
        pair, member = record["id"].rsplit("-", 1)
        by_pair.setdefault(pair, {})[member] = record
    for members in by_pair.values():
        pos, neg = members["pos"], members["neg"]
        assert pos["conversations"][0] == neg["conversations"][0] and pos["image"] != neg["image"]
        assert {pos["conversations"][1]["value"], neg["conversations"][1]["value"]} == {"yes", "no"}
    answers = [r["conversations"][1]["value"] for r in stage2]
    assert answers.count("yes") == answers.count("no")  # every question text as often "yes" as "no"
    with pytest.raises(ValueError, match="stage2='captions'"):
        write_llava_data(dataset, tmp_path / "bad", stage2="captions")
