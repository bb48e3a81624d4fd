"""The paired perception probe: generation from the real engine, its file format, and its paired scoring."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_recipes.cli import main as data_main
from data_recipes.diagrams import engine
from data_recipes.diagrams.facts import canonical
from data_recipes.diagrams.probe import (
    MARK_ONLY_PERTURBATIONS,
    PROBE_STREAM,
    ProbeConfig,
    make_probe_set,
)
from data_recipes.diagrams.questions import GROUNDABLE_RELATIONS, askable_relations, paired_questions
from data_recipes.formats.probe import read_manifest, read_probe
from mmgeolm.bench.cli import main as bench_main
from mmgeolm.bench.probe import score_responses
from mmgeolm_core.config import ConfigError
from mmgeolm_core.io import FormatError


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("probe") / "probe"
    assert data_main(["probe-set", "--out", str(out), "--num", "24", "--size", "96", "-q"]) == 0
    return out


# --------------------------------------------------------------------------- paired questions


def test_a_removed_relation_is_asked_yes_then_no_and_needs_letters_only_if_it_survives_elsewhere() -> None:
    pos = ["parallel(AB,CD)", "parallel(AD,BC)", "shape(ABCD)=parallelogram"]
    (q,) = [q for q in paired_questions(pos, ["parallel(AD,BC)"], ["parallel(AB,CD)"], []) if q.kind == "yes_no"]
    assert (q.question, q.positive_answer, q.negative_answer) == ("Is AB parallel to CD? Answer yes or no.", "yes", "no")
    assert q.needs_letters  # AD || BC is still there: "are there parallel lines?" does not tell the two apart
    (q,) = paired_questions(["parallel(AB,CD)"], [], ["parallel(AB,CD)"], [])
    assert not q.needs_letters and q.relation == "parallel" and q.fact == "parallel(AB,CD)"


def test_a_changed_value_is_asked_with_both_values_and_an_added_relation_no_then_yes() -> None:
    qs = paired_questions(["length(AB)=8", "length(BC)=5"], ["length(AB)=6", "length(BC)=5"],
                          ["length(AB)=8"], ["length(AB)=6"])
    (q,) = qs
    assert (q.kind, q.positive_answer, q.negative_answer, q.needs_letters) == ("value", "8", "6", True)
    swapped = paired_questions(["midpoint(D,BC)", "point(D)"], ["midpoint(B,CD)"], ["midpoint(D,BC)"], ["midpoint(B,CD)"])
    assert [(q.fact, q.positive_answer, q.negative_answer) for q in swapped] == [
        ("midpoint(D,BC)", "yes", "no"), ("midpoint(B,CD)", "no", "yes")]
    # a relation about a point the positive does not have is not asked on it
    assert paired_questions(["point(A)"], ["median(AE,ABC)"], [], ["median(AE,ABC)"]) == []


def test_groundable_relations_all_have_yes_no_templates() -> None:
    kinds = askable_relations()
    assert all(kinds[r] == "yes_no" for r in GROUNDABLE_RELATIONS)
    assert {kinds[r] for r in ("length", "angle", "radius", "shape")} == {"value"}


# --------------------------------------------------------------------------- generation


def test_probe_pairs_are_true_of_their_images_and_come_from_the_probe_seed_stream() -> None:
    config = ProbeConfig(num=10, size_px=64)
    for pair in make_probe_set(config):
        rng = np.random.default_rng([config.seed, pair.draw, PROBE_STREAM])
        families = engine.list_families()
        assert families[int(rng.integers(len(families)))] == pair.family
        diagram = engine.generate_diagram(pair.family, rng)
        q = pair.question
        if q.kind == "yes_no" and q.positive_answer == "yes":
            assert q.fact in diagram.facts
        elif q.kind == "value":
            assert q.fact in diagram.facts and q.fact.endswith(f"={q.positive_answer}")
        assert pair.perturbation not in MARK_ONLY_PERTURBATIONS
        assert pair.positive.shape == pair.negative.shape == (64, 64) and not np.array_equal(pair.positive, pair.negative)
        assert q.positive_answer != q.negative_answer


def test_probe_draws_never_coincide_with_a_data_build_or_its_split_stream() -> None:
    for i in range(50):
        probe = np.random.default_rng([0, i, PROBE_STREAM]).integers(2**63)
        assert probe != np.random.default_rng([0, i]).integers(2**63)
        assert probe != np.random.default_rng([0, i, 1]).integers(2**63)


def test_same_config_same_bytes_other_seed_other_set(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((a, "3"), (b, "3"), (c, "4")):
        assert data_main(["probe-set", "--out", str(out), "--num", "5", "--size", "64", "--seed", seed, "-q"]) == 0
    assert (a / "probe.jsonl").read_bytes() == (b / "probe.jsonl").read_bytes()
    assert all((a / p.relative_to(a)).read_bytes() == (b / p.relative_to(a)).read_bytes() for p in a.rglob("*.png"))
    assert (a / "probe.jsonl").read_bytes() != (c / "probe.jsonl").read_bytes()


@pytest.mark.parametrize("kwargs", [{"relations": ("groundable",)}, {"kinds": ("value",)}, {"needs_letters": False},
                                    {"relations": ("midpoint", "parallel"), "needs_letters": True}])
def test_filters_are_respected(kwargs: dict) -> None:
    pairs = make_probe_set(ProbeConfig(num=6, size_px=64, **kwargs))
    assert len(pairs) == 6
    for p in pairs:
        relations = GROUNDABLE_RELATIONS if kwargs.get("relations") == ("groundable",) else kwargs.get("relations")
        assert relations is None or p.question.relation in relations
        assert p.question.kind in kwargs.get("kinds", ("yes_no", "value"))
        assert kwargs.get("needs_letters") in (None, p.question.needs_letters)


@pytest.mark.parametrize(("kwargs", "key"), [({"num": 0}, "num"), ({"relations": ("paralel",)}, "relations"),
                                             ({"kinds": ("essay",)}, "kinds"), ({"families": ("blob",)}, "families")])
def test_bad_config_names_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        ProbeConfig(**kwargs)
    assert err.value.key == key


def test_cli_writes_a_readable_probe_folder(probe_dir: Path) -> None:
    records = read_probe(probe_dir)
    assert len(records) == 48 and [r.member for r in records[:2]] == ["positive", "negative"]
    manifest = read_manifest(probe_dir)
    assert manifest["num_pairs"] == 24 and sum(manifest["counts"]["kind"].values()) == 24
    assert set(manifest["counts"]["perturbation"]).isdisjoint(MARK_ONLY_PERTURBATIONS)
    assert all((probe_dir / r.image).is_file() for r in records)
    for r in records:
        assert r.fact == canonical(r.fact) and r.id.startswith(r.pair)
    # balancing: no perturbation type takes more than a third of the pairs
    assert max(manifest["counts"]["perturbation"].values()) <= 8


# --------------------------------------------------------------------------- file format errors


def _rewrite(src: Path, dst: Path, edit) -> Path:
    lines = [json.loads(line) for line in (src / "probe.jsonl").read_text().splitlines()]
    edit(lines)
    dst.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return dst


@pytest.mark.parametrize(("edit", "message"), [
    (lambda ls: ls[1].pop("answer"), r"probe.jsonl: line 2: key 'answer': missing key"),
    (lambda ls: ls[2].update(member="both"), r"line 3: key 'member': expected one of \['positive', 'negative'\]"),
    (lambda ls: ls[3].update(answer=ls[2]["answer"]), r"line 3: key 'answer': pair 'probe-00001': both members answer"),
    (lambda ls: ls[3].update(id=ls[0]["id"]), r"line 4: key 'id': duplicate id 'probe-00000-pos' \(first at line 1\)"),
    (lambda ls: ls.pop(1), r"line 1: key 'member': pair 'probe-00000' has members \['positive'\]"),
    (lambda ls: ls[0].update(needs_letters="no"), r"line 1: key 'needs_letters': expected a boolean"),
])
def test_format_errors_name_file_line_and_key(probe_dir: Path, tmp_path: Path, edit, message: str) -> None:
    bad = _rewrite(probe_dir, tmp_path / "probe.jsonl", edit)
    with pytest.raises(FormatError, match=message):
        read_probe(bad)


# --------------------------------------------------------------------------- paired scoring


def _answers(probe_dir: Path, answer) -> dict[str, str]:
    return {r.id: answer(r) for r in read_probe(probe_dir)}


@pytest.mark.parametrize("blind", [lambda r: "Yes.", lambda r: "no", lambda r: "yes" if hash(r.pair) % 2 else "No, it is not.",
                                   lambda r: "8" if r.kind == "value" else "yes"])
def test_a_blind_answerer_scores_zero_on_every_pair(probe_dir: Path, blind) -> None:
    scores = score_responses(probe_dir, _answers(probe_dir, blind))
    assert scores["accuracy"] == 0.0 and scores["paired"]["correct"] == 0
    assert scores["same_answer_rate"] == 1.0 and scores["baselines"]["blind"] == 0.0
    if blind(read_probe(probe_dir)[0]) == "Yes.":
        yes_no = scores["member_by_answer"]
        assert yes_no["yes"]["accuracy"] == 1.0 and yes_no["no"]["accuracy"] == 0.0 and scores["yes_rate"] == 1.0


def test_an_answerer_that_looks_scores_per_pair_and_per_type(probe_dir: Path) -> None:
    records = read_probe(probe_dir)
    first_pair = records[0].pair
    # right on every member except the negative of the first pair
    answers = {r.id: (f"The answer is {r.answer}." if not (r.pair == first_pair and r.member == "negative") else "maybe")
               for r in records}
    scores = score_responses(probe_dir, answers)
    n = len(records) // 2
    assert scores["paired"] == {"accuracy": (n - 1) / n, "correct": n - 1, "total": n}
    assert scores["member_accuracy"] == (2 * n - 1) / (2 * n)
    kind = records[0].perturbation
    by_type = scores["paired_by_perturbation"][kind]
    assert by_type["correct"] == by_type["total"] - 1
    assert sum(v["total"] for v in scores["paired_by_relation"].values()) == n


def test_score_cli_writes_results_scores_report_and_lists_missing(probe_dir: Path, tmp_path: Path) -> None:
    records = read_probe(probe_dir)
    preds = tmp_path / "predictions.jsonl"
    preds.write_text("".join(json.dumps({"id": r.id, "response": r.answer}) + "\n" for r in records[1:]))
    out = tmp_path / "scored"
    assert bench_main(["score", "probe", "--questions", str(probe_dir), "--predictions", str(preds),
                       "--out", str(out), "-q"]) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert scores["num_missing"] == 1 and scores["missing_ids"] == [records[0].id]
    assert scores["num_items"] == len(records) and scores["paired"]["correct"] == len(records) // 2 - 1
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert set(results[0]) >= {"id", "extracted", "answer", "correct", "method"} and results[0]["method"] == "none"
    assert (out / "scores.png").stat().st_size > 1000 and "paired_by_perturbation" in (out / "report.md").read_text()


def test_score_cli_rejects_a_prediction_for_an_unknown_id(probe_dir: Path, tmp_path: Path, capsys) -> None:
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": "probe-99999-pos", "response": "yes"}\n')
    assert bench_main(["score", "probe", "--questions", str(probe_dir), "--predictions", str(preds),
                       "--out", str(tmp_path / "o")]) == 2
    assert "p.jsonl: line 1: key 'id': prediction for unknown id 'probe-99999-pos'" in capsys.readouterr().err
