"""Bad input never crashes and nothing is lost: every ``mmgeolm-data`` subcommand.

Every row is one bad input tried as a new user would, run through the real ``main``: the exit status, the
one-line message (file, record, key, what was expected), no traceback, and nothing partial or lost.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cli_cases import (
    Case,
    Workspace,
    absent,
    cases,
    edit_samples,
    interrupt_when,
    read_only_dir,
    run_case,
    write,
)
from hf_fixtures import clip_tokenizer
from mmclip_fixtures import make_dataset_dir, make_reference_json
from sandbox_fixtures import CLI_FLAGS

from data_recipes.build.recipe import load_recipe
from data_recipes.build.runner import BUILD_INFO_FILE, build_dataset
from data_recipes.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "data_recipes" / "recipes" / "tiny.yaml"


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict[str, Path]:
    """A built tiny data set (train + val, scripts and facts), reference JSON files, a tokenizer."""
    root = tmp_path_factory.mktemp("data-errors")
    recipe = yaml.safe_load(TINY.read_text())
    recipe.update(name="tiny-errors", num=8)
    write(root / "tiny-errors.yaml", yaml.safe_dump(recipe))
    built = root / "built"
    build_dataset(load_recipe(root / "tiny-errors.yaml"), built)
    image_json, text_json = make_reference_json(root / "ref", n=3, k_images=1, k_texts=1)
    return {"built": built, "recipe": root / "tiny-errors.yaml", "ref": root / "ref", "image_json": image_json,
            "text_json": text_json, "synthetic": make_dataset_dir(root / "synthetic", n=3, k_images=1, k_texts=1),
            "tokenizer": _fast_tokenizer(clip_tokenizer(root / "tokenizer"))}


def _fast_tokenizer(directory: Path) -> Path:
    from transformers import CLIPTokenizerFast

    CLIPTokenizerFast.from_pretrained(directory).save_pretrained(directory)  # writes tokenizer.json
    return directory


@pytest.fixture
def ws(tmp_path, shared) -> Workspace:
    return Workspace(tmp_path, shared)


def _non_utf8(path: Path) -> Path:
    text = path.read_bytes()
    path.write_bytes(text[:30] + b"\xff\xfe" + text[30:])
    return path


def _someone_elses_folder(ws: Workspace, name: str = "mine") -> Path:
    write(ws / name / "thesis.tex", "months of work")
    return ws.remember(ws / name)


def _a_file(ws: Workspace, name: str = "notes.txt") -> Path:
    return ws.remember(write(ws / name, "my notes"))


def _intact(name: str):
    return lambda ws: ws.unchanged(ws / name)


# ----------------------------------------------------------------------------- build


def _build(ws: Workspace, out: Path, *extra: str) -> list[str]:
    return ["build", str(ws.shared["recipe"]), "--out", str(out), *extra]


BUILD_CASES = [
    Case("shipped recipe name", lambda ws: ["build", "demo", "--num", "1", "--out", str(ws / "out")], 0, ["built 1 of 1"]),
    Case("--out is a file", lambda ws: _build(ws, _a_file(ws)), 2, [r"--out .*notes\.txt: is a file; expected a directory"],
         _intact("notes.txt")),
    Case("--out in a read-only directory", lambda ws: _build(ws, read_only_dir(ws.root) / "out"), 2,
         [r"--out .*out: cannot write in"]),
    Case("--out holds other files", lambda ws: _build(ws, _someone_elses_folder(ws)), 2,
         ["not an empty directory nor a `mmgeolm-data build` output"], _intact("mine")),
    Case("duplicate YAML keys", lambda ws: ["build", str(write(ws / "r.yaml", "name: x\nnum: 2\nnum: 3\n")), "--out",
                                            str(ws / "out")], 2,
         [r"r\.yaml", "duplicate key 'num'"], absent("out")),
    Case("empty recipe", lambda ws: ["build", str(write(ws / "r.yaml", "")), "--out", str(ws / "out")], 2,
         [r"r\.yaml", "empty"], absent("out")),
    Case("NaN min_ssim", lambda ws: ["build", str(write(ws / "r.yaml", "name: x\nnum: 2\nnegatives: {min_ssim: .nan}\n")),
                                     "--out", str(ws / "out")], 2, ["key 'negatives.min_ssim'"], absent("out")),
]


@cases(BUILD_CASES)
def test_build(case: Case, ws: Workspace, capsys) -> None:
    run_case(main, "mmgeolm-data build", case, ws, capsys)


def test_build_ctrl_c_with_workers_exits_130_and_resumes(ws: Workspace) -> None:
    """Ctrl-C in the terminal reaches the builder and its worker processes: one line, no worker tracebacks, no
    process left, and the same command resumes."""
    out = ws / "out"
    command = [sys.executable, "-m", "data_recipes.cli", "build", str(ws.shared["recipe"]), "--num", "24",
               "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            cwd=ROOT)
    parts = out / ".parts"
    try:
        while proc.poll() is None and len(list(parts.glob("*.json")) if parts.is_dir() else []) < 3:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: the whole foreground process group
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1].startswith("mmgeolm-data build: interrupted: ")
    assert "samples built" in err and "run the same command again to resume" in err
    kept = len(list(parts.glob("*.json"))) - 1  # minus build.json
    assert kept >= 2
    assert subprocess.run(command, capture_output=True, cwd=ROOT).returncode == 0
    assert json.loads((out / BUILD_INFO_FILE).read_text())["resumed_from"] == kept


# ----------------------------------------------------------------------------- text-negatives


def _text_negatives(ws: Workspace, source: Path, out: Path | None = None) -> list[str]:
    return ["text-negatives", "--in", str(source), "--out", str(out or ws / "neg.jsonl")]


TEXT_CASES = [
    Case("0-byte input", lambda ws: _text_negatives(ws, write(ws / "in.json", "")), 2, [r"in\.json: empty file"],
         absent("neg.jsonl")),
    Case("empty list", lambda ws: _text_negatives(ws, write(ws / "in.json", "[]")), 2, [r"in\.json: no records"],
         absent("neg.jsonl")),
    Case("non-UTF-8 input", lambda ws: _text_negatives(ws, _non_utf8(ws.copy("text_json"))), 2,
         [r"text_neg\.json: line 1: not UTF-8 text"], absent("neg.jsonl")),
    Case("a record without a caption", lambda ws: _text_negatives(ws, write(ws / "in.json", '[{"id": "a"}]')), 2,
         [r"in\.json: record 0", "caption"], absent("neg.jsonl")),
    Case("--out is a directory", lambda ws: _text_negatives(ws, ws.shared["text_json"], ws.dir("neg")), 2, [r"--out .*neg: is a directory; expected a file name"]),
]


@cases(TEXT_CASES)
def test_text_negatives(case: Case, ws: Workspace, capsys) -> None:
    run_case(main, "mmgeolm-data text-negatives", case, ws, capsys)


# ----------------------------------------------------------------------------- import


def _import(ws: Workspace, source: Path, out: Path | None = None) -> list[str]:
    return ["import", "--reference-image-negatives", str(source), "--out", str(out or ws / "out")]


def _duplicated_records(ws: Workspace) -> list[str]:
    records = json.loads(ws.shared["image_json"].read_text())
    return _import(ws, write(ws.shared["ref"] / f"dup-{ws.root.name}.json", json.dumps(records + records[:1])))


def _not_doubled(ws: Workspace) -> None:
    first = json.loads((ws / "out" / "samples.jsonl").read_text().splitlines()[0])
    assert len(first["negatives"]) == 1


def _conversations_oops(ws: Workspace) -> list[str]:
    records = json.loads(ws.shared["image_json"].read_text())
    records[1]["conversations"] = "oops"
    return _import(ws, write(ws.shared["ref"] / f"oops-{ws.root.name}.json", json.dumps(records)))


def _empty_image(ws: Workspace) -> list[str]:
    ref = ws.copy("ref")
    (ref / "pos" / "0.png").write_bytes(b"")
    return _import(ws, ref / "image_neg.json")


def _rejected_in_manifest(record: str, key: str, reason: str):
    def check(ws: Workspace) -> None:
        (reject,) = json.loads((ws / "out" / "manifest.json").read_text())["rejects"]
        assert (reject["record"], reject["key"]) == (record, key) and reason in reject["reason"], reject
    return check


def _out_is_a_built_data_set(ws: Workspace) -> list[str]:
    return _import(ws, ws.shared["image_json"], ws.remember(ws.copy("built")))


IMPORT_CASES = [
    Case("0-byte JSON", lambda ws: _import(ws, write(ws / "in.json", "")), 2, [r"in\.json: empty file"], absent("out")),
    Case("empty JSON list", lambda ws: _import(ws, write(ws / "in.json", "[]")), 2, [r"in\.json: no records"],
         absent("out")),
    Case("a duplicated record does not double its negatives", _duplicated_records, 1,
         ["3 samples", "1 rejected", "record 3: repeats an earlier record"], _not_doubled, summary=True),
    Case("conversations 'oops' is refused, not taken as a caption", _conversations_oops, 1,
         ["1 rejected", r"record 1: key 'conversations': expected a non-empty list of turns"],
         _rejected_in_manifest("record 1", "conversations", "expected a non-empty list"), summary=True),
    Case("0-byte image: the record and key are named", _empty_image, 1,
         [r"rejected .*image_neg\.json: record 0: key 'positive_image_path': .* is not a readable image \(an empty file\)"],
         _rejected_in_manifest("record 0", "positive_image_path", "an empty file"), summary=True),
    Case("--out holds a built data set: never touched", _out_is_a_built_data_set, 2,
         ["holds files that are not an earlier import"], _intact("built")),
    Case("--out in a read-only directory", lambda ws: _import(ws, ws.shared["image_json"], read_only_dir(ws.root) / "o"),
         2, ["cannot write in"]),
]


@cases(IMPORT_CASES)
def test_import(case: Case, ws: Workspace, capsys) -> None:
    out, err = run_case(main, "mmgeolm-data import", case, ws, capsys)
    assert "<_io.BytesIO" not in err and "record -" not in err and "key '-'" not in err


# ----------------------------------------------------------------------------- perturb-script / perturb-batch


def _perturb(ws: Workspace, script: Path, out: Path | None = None, *extra: str) -> list[str]:
    return ["perturb-script", str(script), "--out", str(out or ws / "out"), "--num", "1", "--workers", "1",
            *CLI_FLAGS, *extra]


def _a_script(ws: Workspace) -> Path:
    return next(p for p in sorted((ws.shared["built"] / "scripts").glob("*.py")) if "_n" not in p.stem)


PERTURB_CASES = [
    Case("NaN --min-ssim", lambda ws: _perturb(ws, _a_script(ws), None, "--min-ssim", "nan"), 2,
         ["--min-ssim: expected a number >= -1 and < 1, got nan"], absent("out")),
    Case("unknown edit type", lambda ws: _perturb(ws, _a_script(ws), None, "--edits", "nope"), 2,
         ["--edits: expected edit types among", "nope"], absent("out")),
    Case("non-UTF-8 script", lambda ws: _perturb(ws, _non_utf8(write(ws / "s.py", "import matplotlib\n" * 4))), 2,
         [r"s\.py: line 2: not UTF-8 text"], absent("out")),
    Case("missing script", lambda ws: _perturb(ws, ws / "nope.py"), 2, [r"nope\.py: No such file"], absent("out")),
    Case("--out is a file", lambda ws: _perturb(ws, _a_script(ws), _a_file(ws)), 2,
         [r"--out .*notes\.txt: is a file; expected a directory"], _intact("notes.txt")),
]


@cases(PERTURB_CASES)
def test_perturb_script(case: Case, ws: Workspace, capsys) -> None:
    run_case(main, "mmgeolm-data perturb-script", case, ws, capsys)


def _batch(ws: Workspace, *source: str, out: Path | None = None) -> list[str]:
    return ["perturb-batch", *source, "--out", str(out or ws / "out"), "--num", "1", "--workers", "1", *CLI_FLAGS]


def _foreign_item_folder(ws: Workspace) -> list[str]:
    scripts = ws / "scripts"
    write(scripts / "a.py", _a_script(ws).read_text())
    _someone_elses_folder(ws, "out/a")
    return _batch(ws, "--scripts-dir", str(scripts))


BATCH_CASES = [
    Case("empty reference JSON list", lambda ws: _batch(ws, "--reference-json", str(write(ws / "r.json", "[]"))), 2,
         [r"r\.json: no records"], absent("out")),
    Case("0-byte reference JSON", lambda ws: _batch(ws, "--reference-json", str(write(ws / "r.json", ""))), 2,
         [r"r\.json: empty file"], absent("out")),
    Case("scripts folder without scripts", lambda ws: _batch(ws, "--scripts-dir", str(ws.dir("s"))), 2,
         [r"--scripts-dir .*s: no \*\.py script"], absent("out")),
    Case("--scripts-dir is a file", lambda ws: _batch(ws, "--scripts-dir", str(_a_file(ws))), 2, ["not a directory"]),
    Case("no input", lambda ws: _batch(ws), 2, ["give --reference-json FILE or --scripts-dir DIR"]),
    Case("--out is a file", lambda ws: _batch(ws, "--scripts-dir", str(ws.shared["built"] / "scripts"), out=_a_file(ws)),
         2, [r"--out .*notes\.txt: is a file; expected a directory"], _intact("notes.txt")),
    Case("an item folder holding other files is rejected, never deleted", _foreign_item_folder, 1,
         [r"rejected a \(error\): .* holds files that perturb-batch did not write"], _intact("out/a"), summary=True),
]


@cases(BATCH_CASES)
def test_perturb_batch(case: Case, ws: Workspace, capsys) -> None:
    run_case(main, "mmgeolm-data perturb-batch", case, ws, capsys)


def test_perturb_batch_ctrl_c_exits_130_and_resumes(ws: Workspace, capsys) -> None:
    scripts = ws / "scripts"
    for i in range(12):
        write(scripts / f"s{i:02d}.py", _a_script(ws).read_text())
    argv = _batch(ws, "--scripts-dir", str(scripts))
    with interrupt_when(lambda: (ws / "out" / "s01" / "manifest.json").is_file()):
        code = main(argv)
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("mmgeolm-data perturb-batch: interrupted: ")
    assert "run the same command again to resume" in err
    assert main(argv) == 0
    summary = json.loads((ws / "out" / "manifest.json").read_text())
    assert len(summary["done"]) == 12 and summary["skipped"] >= 2


# ----------------------------------------------------------------------------- llava-data, probe-set, check-tokens


def _llava(ws: Workspace, data: Path, out: Path | None = None) -> list[str]:
    return ["llava-data", "--data", str(data), "--out", str(out or ws / "out"), "--num-questions", "4"]


def _llava_bad_record(ws: Workspace) -> list[str]:
    data = ws.copy("built")
    edit_samples(data, 0, lambda r: r.update(negatives="oops"))
    return _llava(ws, data)


def _skipped_in_summary(ws: Workspace) -> None:
    summary = json.loads((ws / "out" / "llava_data.json").read_text())
    assert summary["bad_records"] == 1 and "key 'negatives': expected list" in summary["bad_record_details"][0]
    ids = {r["id"] for r in json.loads((ws / "out" / "stage1.json").read_text())}
    assert ids and all(not i.endswith("000000") for i in ids)


LLAVA_CASES = [
    Case("a bad record is skipped and reported", _llava_bad_record, 0,
         ["skipped: .*line 1: key 'negatives': expected list", "'bad_records': 1"], _skipped_in_summary),
    Case("non-UTF-8 samples.jsonl", lambda ws: _llava(ws, (lambda d: (_non_utf8(d / "samples.jsonl"), d)[1])(ws.copy("built"))),
         2, [r"samples\.jsonl: line 1: not UTF-8 text"], absent("out")),
    Case("no val split: nothing written", lambda ws: _llava(ws, ws.shared["synthetic"]), 2,
         ["need train and val samples"], absent("out")),
    Case("--out is a file", lambda ws: _llava(ws, ws.shared["built"], _a_file(ws)), 2,
         [r"--out .*notes\.txt: is a file; expected a directory"], _intact("notes.txt")),
]


@cases(LLAVA_CASES)
def test_llava_data(case: Case, ws: Workspace, capsys) -> None:
    run_case(main, "mmgeolm-data llava-data", case, ws, capsys)


def _probe(ws: Workspace, out: Path) -> list[str]:
    return ["probe-set", "--out", str(out), "--num", "2", "--size", "96"]


def _earlier_probe(ws: Workspace) -> list[str]:
    assert main(_probe(ws, ws / "probe")) == 0
    return _probe(ws, ws / "probe")


PROBE_CASES = [
    Case("--out holds other files: never replaced", lambda ws: _probe(ws, _someone_elses_folder(ws)), 2,
         ["holds files that are not a probe set", "never replaced"], _intact("mine")),
    Case("--out is a file: never replaced", lambda ws: _probe(ws, _a_file(ws)), 2,
         [r"--out .*notes\.txt: is a file; expected a directory"], _intact("notes.txt")),
    Case("an earlier probe set is replaced", _earlier_probe, 0, ["wrote 2 pairs"]),
]


@cases(PROBE_CASES)
def test_probe_set(case: Case, ws: Workspace, capsys) -> None:
    run_case(main, "mmgeolm-data probe-set", case, ws, capsys)


def _check_tokens(ws: Workspace, data: Path, *extra: str) -> list[str]:
    return ["check-tokens", str(data), "--tokenizer", str(ws.shared["tokenizer"]), *extra]


def _check_tokens_bad_record(ws: Workspace) -> list[str]:
    data = ws.copy("built")
    edit_samples(data, 0, lambda r: r.update(text_negatives=[5]))
    return _check_tokens(ws, data, "--out", str(ws / "report.json"))


def _bad_record_in_report(ws: Workspace) -> None:
    report = json.loads((ws / "report.json").read_text())
    assert report["bad_records"] == 1 and "text_negatives[0]" in report["bad_record_details"][0]
    assert report["samples"] == 7


CHECK_TOKENS_CASES = [
    Case("a bad record is skipped and reported", _check_tokens_bad_record, 0,
         [r"skipped: .*line 1: key 'text_negatives\[0\]'", "skipped 1 record"], _bad_record_in_report),
    Case("not a data set", lambda ws: _check_tokens(ws, ws.root), 2, [r"samples\.jsonl"]),
    Case("--out is a directory", lambda ws: _check_tokens(ws, ws.shared["built"], "--out", str(ws.root)), 2,
         ["is a directory; expected a file name"]),
]


@cases(CHECK_TOKENS_CASES)
def test_check_tokens(case: Case, ws: Workspace, capsys) -> None:
    run_case(main, "mmgeolm-data check-tokens", case, ws, capsys)


def test_unknown_subcommand_exits_2(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
