"""Importers: the reference's two JSON formats and (script, caption) folders into our data-set format."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sandbox_fixtures import CLI_FLAGS

from data_recipes import cli
from data_recipes.diagrams.hardness import image_hardness
from data_recipes.formats import dataset as dataset_io
from mmclip_plugin import data as mmclip_data


def _image(path: Path, shift: int = 0, fmt: str = "PNG", size: int = 32) -> Path:
    array = np.full((size, size, 3), 255, np.uint8)
    array[10 + shift: 14 + shift, 4:28] = 0
    Image.fromarray(array).save(path, format=fmt)
    return path


@pytest.fixture()
def reference(tmp_path):
    """A reference-like tree: images/ plus both JSON files, with good and bad records."""
    images = tmp_path / "ref" / "images"
    images.mkdir(parents=True)
    for name, shift in [("p0", 0), ("p0_n0", 2), ("p0_n1", 5), ("p1", 1), ("p1_n0", 3)]:
        _image(images / f"{name}.png", shift)
    _image(images / "p2.jpg", 0, fmt="JPEG")
    turns = lambda caption: [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": caption}]  # noqa: E731
    image_records = [
        {"positive_image_path": "images/p0.png", "negative_image_path": ["images/p0_n0.png", "images/p0_n1.png"],
         "conversations": turns("Triangle ABC with AB = 4.")},
        # bare list of turns
        {"positive_image_path": "images/p1.png", "negative_image_path": ["images/p1_n0.png"],
         "conversations": ["<image>\nDescribe.", "Square ABCD."]},
        {"positive_image_path": "images/p2.jpg", "negative_image_path": ["images/p0_n0.png"],
         "conversations": turns("Circle O.")},
        # bad records
        {"positive_image_path": "images/missing.png", "negative_image_path": [], "conversations": turns("x")},
        {"positive_image_path": "images/p0.png", "negative_image_path": ["images/nope.png"], "conversations": turns("y")},
        {"positive_image_path": "images/p1.png", "negative_image_path": ["images/p1_n0.png"],
         "conversations": turns("   ")},
        {"positive_image_path": 7, "negative_image_path": [], "conversations": turns("z")},
        "not an object",
    ]
    text_records = [
        {"positive_image_path": "images/p0.png", "negative_captions": ["Triangle ABC with AB = 6.", "Square ABCD."],
         "conversations": turns("Triangle ABC with AB = 4.")},
        {"positive_image_path": "images/p1.png", "negative_captions": "Rectangle ABCD.",
         "conversations": ["<image>", "Square ABCD."]},
        {"positive_image_path": "images/p1.png", "negative_captions": [1, 2], "conversations": turns("Square ABCD.")},
    ]
    (tmp_path / "ref" / "image_neg.json").write_text(json.dumps(image_records))
    # the text file as JSON lines, as some dumps are
    (tmp_path / "ref" / "text_neg.json").write_text("\n".join(json.dumps(r) for r in text_records))
    return tmp_path / "ref"


def _samples(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_both_reference_formats_merge_and_bad_records_are_reported(reference, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["import", "--reference-image-negatives", str(reference / "image_neg.json"),
                     "--reference-text-negatives", str(reference / "text_neg.json"), "--out", str(out)])
    assert code == 1  # some records rejected, the rest imported
    samples = _samples(out)
    assert [s["id"] for s in samples] == ["p0", "p1", "p2"]
    p0, p1, p2 = samples
    assert p0["caption"] == "Triangle ABC with AB = 4." and p1["caption"] == "Square ABCD."
    assert [n["image"] for n in p0["negatives"]] == ["images/p0_neg0.png", "images/p0_neg1.png"]
    assert [t["caption"] for t in p0["text_negatives"]] == ["Triangle ABC with AB = 6.", "Square ABCD."]
    assert [t["caption"] for t in p1["text_negatives"]] == ["Rectangle ABCD."]
    for sample in samples:
        assert sample["family"] == "imported" and sample["seed"] is None and sample["script"] is None
        assert sample["split"] == "train" and sample["facts"] == []
        for rel in [sample["image"]] + [n["image"] for n in sample["negatives"]]:
            assert not Path(rel).is_absolute() and (out / rel).is_file()
            assert Image.open(out / rel).format == "PNG"  # the JPEG positive was converted
    positive = np.asarray(Image.open(out / p0["image"]).convert("RGB"))
    negative = np.asarray(Image.open(out / p0["negatives"][1]["image"]).convert("RGB"))
    assert p0["negatives"][1]["hardness"] == image_hardness(positive, negative)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["samples"] == 3 and manifest["counts"]["image_negatives"] == 4
    rejects = {(Path(r["source"]).name, r["record"], r["key"]) for r in manifest["rejects"]}
    assert rejects == {
        ("image_neg.json", "record 3", "positive_image_path"), ("image_neg.json", "record 4", "negative_image_path[0]"),
        ("image_neg.json", "record 5", "conversations[1]"), ("image_neg.json", "record 6", "positive_image_path"),
        ("image_neg.json", "record 7", None), ("text_neg.json", "line 3", "negative_captions"),
    }
    missing = next(r for r in manifest["rejects"] if r["record"] == "record 3")
    assert "missing.png" in missing["reason"] and "does not exist" in missing["reason"]
    assert "image_neg.json: record 3: key 'positive_image_path'" in capsys.readouterr().err
    # the imported data set is a valid data set: its null seed/script/caption fields pass validation,
    # and MMCLIP training reads it with every negative
    assert dataset_io.validate_samples(out, check_files=True) == []
    train_samples, bad = mmclip_data.read_samples(out)
    assert bad == [] and [len(s.image_negatives) for s in train_samples] == [2, 1, 1]


def test_image_root_option(reference, tmp_path):
    moved = tmp_path / "elsewhere.json"
    moved.write_text((reference / "image_neg.json").read_text())
    out = tmp_path / "out"
    cli.main(["import", "--reference-image-negatives", str(moved), "--image-root", str(reference), "--out", str(out)])
    assert len(_samples(out)) == 3


def test_pairs_dir_rendered_through_sandbox(tmp_path):
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    script = ("import sys\nimport matplotlib.pyplot as plt\nplt.figure(figsize=(1, 1), dpi=30)\n"
              "plt.plot([0, 1], [0, 1])\nplt.savefig(sys.argv[1])\n")
    (pairs / "good.py").write_text(script)
    (pairs / "good.txt").write_text("A diagonal segment.\n")
    (pairs / "nocaption.py").write_text(script)
    (pairs / "empty.py").write_text(script)
    (pairs / "empty.txt").write_text("  ")
    (pairs / "fails.py").write_text("import socket\nsocket.socket()")
    (pairs / "fails.txt").write_text("Never rendered.")
    out = tmp_path / "out"
    assert cli.main(["import", "--pairs-dir", str(pairs), "--out", str(out), "--workers", "1", *CLI_FLAGS]) == 1
    (sample,) = _samples(out)
    assert sample["id"] == "good" and sample["caption"] == "A diagonal segment."
    assert (out / sample["script"]).read_text() == script
    assert Image.open(out / sample["image"]).size == (30, 30)
    reasons = {Path(r["source"]).stem: r["reason"] for r in json.loads((out / "manifest.json").read_text())["rejects"]}
    assert set(reasons) == {"nocaption", "empty", "fails"}
    assert "missing caption file" in reasons["nocaption"] and "forbidden" in reasons["fails"]


def test_no_input_is_a_usage_error(tmp_path):
    assert cli.main(["import", "--out", str(tmp_path)]) == 2
    assert cli.main(["import", "--reference-image-negatives", str(tmp_path / "none.json"), "--out", str(tmp_path)]) == 2
