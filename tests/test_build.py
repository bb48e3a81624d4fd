"""`mmgeolm-data build`: layout, determinism across workers, resume after kill -9, shards, bad inputs."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from data_recipes.build.recipe import build_recipe, load_recipe
from data_recipes.build.runner import BUILD_INFO_FILE, BuildRefused, Shard, build_dataset
from data_recipes.build.sample import PARTS_DIR
from data_recipes.cli import main
from data_recipes.diagrams import engine
from data_recipes.formats.dataset import read_samples, validate_samples
from data_recipes.formats.reference import read_reference
from mmgeolm_core.io import FormatError, read_json

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "data_recipes" / "recipes" / "tiny.yaml"


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (build_info.json aside: it holds wall-clock facts) -> its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != BUILD_INFO_FILE
    }


def assert_same_tree(a: Path, b: Path) -> None:
    ta, tb = tree(a), tree(b)
    assert sorted(ta) == sorted(tb), f"file sets differ: {sorted(set(ta) ^ set(tb))}"
    differing = [name for name in ta if ta[name] != tb[name]]
    assert not differing, f"files differ between {a} and {b}: {differing}"


def cli(*args: str) -> int:
    return main(["build", *map(str, args)])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """tiny.yaml built once, uninterrupted, one worker, relative paths."""
    out = tmp_path_factory.mktemp("reference") / "data"
    assert cli(TINY, "--out", out, "--relative-paths") == 0
    return out


def test_layout_and_every_path_exists(reference):
    recipe = load_recipe(TINY)
    manifest = read_json(reference / "manifest.json")
    samples = read_samples(reference, check_files=True)
    assert validate_samples(reference) == []
    assert manifest["recipe"] == recipe.to_dict()
    counts = manifest["counts"]
    assert counts["requested"] == recipe.num == counts["accepted"] + counts["rejected"]
    assert len(samples) == counts["accepted"] > 0
    assert [s["index"] for s in samples] == sorted(s["index"] for s in samples)
    assert len(manifest["rejects"]) == counts["rejected"]
    k = recipe.negatives.per_positive
    for s in samples:
        assert s["id"] == f"tiny-{s['index']:06d}" and s["seed"] == [recipe.seed, s["index"]]
        assert s["family"] in engine.list_families() and s["split"] in ("train", "val")
        assert len(s["negatives"]) <= k
        for n in s["negatives"]:
            assert n["type"] in engine.list_perturbations()
            assert n["hardness"]["changed_fraction"] >= recipe.negatives.min_changed_fraction
            assert n["hardness"]["ssim"] >= recipe.negatives.min_ssim
            assert n["caption"] != s["caption"] or n["facts"] != s["facts"]
        # the image negatives' captions are always caption negatives of kind "perturbation"
        captions = {t["caption"] for t in s["text_negatives"] if t["kind"] == "perturbation"}
        assert captions == {n["caption"] for n in s["negatives"]} - {s["caption"]}
    assert sum(len(s["negatives"]) for s in samples) == counts["negatives"] > 0
    assert counts["by_perturbation"] == {
        t: sum(n["type"] == t for s in samples for n in s["negatives"]) for t in counts["by_perturbation"]
    }
    assert manifest["shortfalls"]["missing_negatives"] == sum(k - len(s["negatives"]) for s in samples)
    with Image.open(reference / "contact_sheet.png") as sheet:
        assert sheet.size[0] > 200 and sheet.size[1] > 200
    with Image.open(reference / samples[0]["image"]) as image:
        assert image.size == (recipe.image.size_px, recipe.image.size_px)
    assert not list(reference.rglob("*.tmp")), "temporary files left behind"


def test_reference_json_parses_and_paths_resolve(reference):
    samples = read_samples(reference)
    image_entries, bad_image = read_reference(reference / "image_negatives.json", "image")
    text_entries, bad_text = read_reference(reference / "text_negatives.json", "text")
    assert not bad_image and not bad_text
    assert len(image_entries) == sum(bool(s["negatives"]) for s in samples)
    by_image = {s["image"]: s for s in samples}
    for entry in image_entries + text_entries:
        assert not os.path.isabs(entry.image)
        assert (reference / entry.image).is_file()
        assert entry.caption == by_image[entry.image]["caption"]
    for entry in image_entries:
        assert all((reference / p).is_file() for p in entry.negative_images)
    for entry in text_entries:
        sample = by_image[entry.image]
        assert list(entry.negative_captions) == [t["caption"] for t in sample["text_negatives"]]


def test_absolute_paths_by_default_and_rerun_of_finished_build_is_a_no_op(reference, tmp_path):
    out = tmp_path / "data"
    # copying the finished build elsewhere and re-running the same command only rewrites aggregates
    for rel, data in tree(reference).items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    assert cli(TINY, "--out", out) == 0
    info = read_json(out / BUILD_INFO_FILE)
    assert info["samples_built_this_run"] == 0
    entries, _ = read_reference(out / "image_negatives.json", "image")
    assert entries and all(os.path.isabs(e.image) and Path(e.image).is_file() for e in entries)
    assert all(Path(p).is_file() for e in entries for p in e.negative_images)


def test_two_workers_give_byte_identical_output(reference, tmp_path):
    out = tmp_path / "data"
    assert cli(TINY, "--out", out, "--workers", 2, "--relative-paths") == 0
    assert_same_tree(reference, out)


def test_resume_after_kill_9_is_byte_identical(reference, tmp_path):
    out = tmp_path / "data"
    command = [sys.executable, "-m", "data_recipes.cli", "build", str(TINY), "--out", str(out), "--relative-paths"]
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stderr=subprocess.DEVNULL)
    parts = out / PARTS_DIR
    deadline = time.monotonic() + 300
    # kill as soon as the first samples are recorded, in the middle of the build
    while len(list(parts.glob("0*.json"))) < 2:
        assert process.poll() is None, "the build ended before it could be killed"
        assert time.monotonic() < deadline, "no sample recorded within 300 s"
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.json").exists(), "the build finished before it could be killed"
    assert cli(TINY, "--out", out, "--relative-paths") == 0
    assert read_json(out / BUILD_INFO_FILE)["resumed_from"] >= 2
    assert_same_tree(reference, out)


def test_resume_repairs_half_written_samples(reference, tmp_path):
    """State a kill can leave: files of unfinished samples (no record), stray temporary files."""
    out = tmp_path / "data"
    for rel, data in tree(reference).items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    for name in ("manifest.json", "samples.jsonl", "contact_sheet.png"):
        (out / name).unlink()
    samples = read_samples(reference)
    victim = samples[-1]
    (out / PARTS_DIR / f"{victim['index']:06d}.json").unlink()
    (out / victim["image"]).write_bytes(b"\x89PNG half")
    (out / "images" / ".000000.png.abcd.tmp").write_bytes(b"partial")
    (out / PARTS_DIR / ".000001.json.efgh.tmp").write_bytes(b"{")
    assert cli(TINY, "--out", out, "--relative-paths") == 0
    assert read_json(out / BUILD_INFO_FILE)["samples_built_this_run"] == 1
    assert_same_tree(reference, out)


def test_directory_of_another_recipe_is_refused(reference, tmp_path, capsys):
    other = tmp_path / "other.yaml"
    data = yaml.safe_load(TINY.read_text())
    other.write_text(yaml.safe_dump({**data, "name": "other", "seed": 7}))
    before = tree(reference)
    assert cli(other, "--out", reference) == 2
    message = capsys.readouterr().err
    assert "'tiny'" in message and "'other'" in message and "seed: 0 != 7" in message
    assert str(other) in message
    assert tree(reference) == before, "a refused build must not touch the directory"
    # --num changes the resolved recipe too
    assert cli(TINY, "--out", reference, "--num", 3) == 2
    assert "num: 6 != 3" in capsys.readouterr().err


def test_overwrite_replaces_another_build_only(reference, tmp_path):
    out = tmp_path / "data"
    for rel, data in tree(reference).items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    (out / "notes.txt").write_text("mine")
    assert cli(TINY, "--out", out, "--num", 2, "--overwrite") == 0
    assert read_json(out / "manifest.json")["recipe"]["num"] == 2
    assert {s["index"] for s in read_samples(out, check_files=True)} <= {0, 1}
    assert not list((out / "images").glob("000005*")), "files of the replaced build were left"
    assert (out / "notes.txt").read_text() == "mine", "--overwrite deleted a file the build did not write"


def test_unrelated_directory_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert cli(TINY, "--out", tmp_path, "--overwrite") == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.fixture(scope="module")
def shard_dirs(tmp_path_factory) -> list[Path]:
    """tiny.yaml built as shards 0/2 and 1/2."""
    dirs = [tmp_path_factory.mktemp("shards") / f"s{i}" for i in range(2)]
    for i, out in enumerate(dirs):
        assert cli(TINY, "--out", out, "--shard", f"{i}/2", "--relative-paths") == 0
    return dirs


def test_shards_partition_the_build(reference, shard_dirs):
    recipe = load_recipe(TINY)
    full = {s["index"]: s for s in read_samples(reference)}
    seen = []
    for i, out in enumerate(shard_dirs):
        manifest = read_json(out / "manifest.json")
        assert manifest["shard"] == [i, 2] and manifest["counts"]["requested"] == len(range(i, recipe.num, 2))
        for sample in read_samples(out, check_files=True):
            assert sample["index"] % 2 == i
            ours = {k: v for k, v in sample.items() if k != "text_negatives"}
            assert ours == {k: v for k, v in full[sample["index"]].items() if k != "text_negatives"}
            for rel in [sample["image"], *(n["image"] for n in sample["negatives"])]:
                assert (out / rel).read_bytes() == (reference / rel).read_bytes()
            seen.append(sample["index"])
    assert sorted(seen) == sorted(full)


def test_merged_shards_equal_the_unsharded_build(reference, shard_dirs, tmp_path, capsys):
    assert cli(TINY, "--out", tmp_path / "partial", "--merge", shard_dirs[0]) == 2
    assert "do not cover" in capsys.readouterr().err
    assert cli(TINY, "--out", tmp_path / "merged", "--merge", *shard_dirs, "--relative-paths") == 0
    assert_same_tree(reference, tmp_path / "merged")


def _failing_family(rng):
    raise RuntimeError("deliberately broken family")


@pytest.fixture
def broken_family():
    """A family registered for this test only (the real registry, in this process: workers=1)."""
    from data_recipes.diagrams import families

    name = "test_broken_family"
    families.register_family(name)(_failing_family)
    try:
        yield name
    finally:
        families._FAMILIES.unregister(name)  # a test undoes its own entry


def test_failing_sample_is_a_reject_and_the_build_goes_on(tmp_path, broken_family):
    good = engine.list_families()[0]
    recipe = build_recipe({
        "name": "mixed", "num": 8, "image": {"size_px": 64}, "families": {good: 1, broken_family: 1},
        "negatives": {"per_positive": 1},
    })
    manifest = build_dataset(recipe, tmp_path / "data")
    rejects = manifest["rejects"]
    samples = read_samples(tmp_path / "data", check_files=True)
    assert rejects and samples, "expected both rejects and accepted samples with equal weights over 8 draws"
    assert len(rejects) + len(samples) == 8
    assert all(r["reason"] == "RuntimeError: deliberately broken family" for r in rejects)
    assert {s["family"] for s in samples} == {good}
    assert not [p for r in rejects for p in (tmp_path / "data" / "images").glob(f"{r['index']:06d}*")]


def test_require_full_negatives_turns_shortfalls_into_rejects(tmp_path):
    family = engine.list_families()[0]
    base = {"name": "short", "num": 3, "image": {"size_px": 64}, "families": [family]}
    many = 64  # more than the registered types, and max_rounds 1 gives at most one per type
    kept = build_dataset(build_recipe({**base, "negatives": {"per_positive": many, "max_rounds": 1}}), tmp_path / "a")
    assert kept["shortfalls"]["samples"] == 3 and kept["counts"]["accepted"] == 3
    strict = build_recipe({**base, "negatives": {"per_positive": many, "max_rounds": 1, "require_full_negatives": True}})
    refused = build_dataset(strict, tmp_path / "b")
    assert refused["counts"]["accepted"] == 0
    assert all(r["reason"].startswith("shortfall:") for r in refused["rejects"])


def test_sample_reader_names_file_line_and_key(reference, tmp_path):
    lines = (reference / "samples.jsonl").read_text().splitlines()
    broken = json.loads(lines[1])
    if broken["negatives"]:
        del broken["negatives"][0]["hardness"]
    else:
        del broken["caption"]
    (tmp_path / "samples.jsonl").write_text("\n".join([lines[0], json.dumps(broken), *lines[2:]]) + "\n")
    with pytest.raises(FormatError, match=r"samples.jsonl: line 2: key '.*(hardness|caption)'"):
        read_samples(tmp_path)
    (tmp_path / "samples.jsonl").write_text(lines[0] + "\n{not json\n")
    problems = validate_samples(tmp_path, check_files=False)
    assert len(problems) == 1 and "line 2: not valid JSON" in problems[0]


def test_images_differ_from_their_negatives(reference):
    for sample in read_samples(reference)[:3]:
        positive = np.asarray(Image.open(reference / sample["image"]))
        for negative in sample["negatives"]:
            assert not np.array_equal(positive, np.asarray(Image.open(reference / negative["image"])))


def test_build_dataset_refuses_bad_shard_and_other_builds(reference):
    with pytest.raises(ValueError, match="shard 3/2"):
        Shard(3, 2)
    with pytest.raises(BuildRefused, match="shard: \\[0, 1\\] != \\[1, 2\\]"):
        build_dataset(load_recipe(TINY), reference, shard=Shard(1, 2))



def test_contact_sheet_rows_show_each_family_first():
    from data_recipes.build.contact_sheet import choose_rows

    records = [{"id": str(i), "index": i, "family": "ab"[i >= 4], "negatives": [{}] if i != 1 else []} for i in range(8)]
    assert [r["index"] for r in choose_rows(records, 2)] == [0, 4]
    assert [r["index"] for r in choose_rows(records, 4)] == [0, 2, 3, 4]
    assert all(r["negatives"] for r in choose_rows(records, 8))
