"""AST perturbation of external matplotlib scripts: every edit type, caption negatives, filters, CLI, batch."""
import ast
import json

import pytest
from sandbox_fixtures import CLI_FLAGS, ISOLATION

from data_recipes import cli
from data_recipes.diagrams.hardness import changed_fraction
from data_recipes.external.edits import (
    get_script_edit,
    list_script_edits,
    propose_edits,
    register_script_edit,
)
from data_recipes.external.perturb import (
    PerturbConfig,
    decode_png,
    perturb_script,
    replace_caption_number,
    swap_caption_letters,
)
from data_recipes.external.sandbox import Sandbox

TRIANGLE = """
import sys
import matplotlib.pyplot as plt
from matplotlib.patches import Circle

A = (0, 0)
B = (4, 0)
C = (1.5, 3)
fig, ax = plt.subplots(figsize=(2.5, 2.5), dpi=60)
ax.plot([A[0], B[0]], [A[1], B[1]], 'k-')
ax.plot([B[0], C[0]], [B[1], C[1]], 'k-')
ax.plot([C[0], A[0]], [C[1], A[1]], 'k-')
ax.plot([C[0], C[0]], [C[1], 0], 'b--')
ax.add_patch(Circle((2, 1), 0.5, fill=False))
ax.text(A[0] - 0.3, A[1] - 0.3, 'A', fontsize=14)
ax.text(B[0] + 0.1, B[1] - 0.3, 'B', fontsize=14)
ax.text(C[0], C[1] + 0.1, 'C', fontsize=14)
ax.text(2, -0.4, '4 cm', fontsize=12)
ax.annotate('60°', xy=(0.5, 0.2), fontsize=10)
ax.set_xlim(-1, 5)
ax.set_ylim(-1, 4)
ax.axis('off')
plt.savefig(sys.argv[1])
"""
CAPTION = "In triangle ABC, AB = 4 cm, angle A is 60° and CD is an altitude."

TINY = """
import sys
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(1.5, 1.5), dpi=40)
ax.plot([0, 1], [0, 1], 'k-')
ax.plot([], [])
ax.set_xlim(0, 1)
ax.set_ylim(0, 1)
ax.axis('off')
plt.savefig(sys.argv[1])
"""


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, timeout=15, isolation=ISOLATION) as box:
        yield box


@pytest.fixture(scope="module")
def positive(sandbox):
    result = sandbox.run(TRIANGLE)
    assert result.ok, result
    return decode_png(result.image_png)


def test_registry():
    assert list_script_edits() == ["change_linestyle", "change_number", "move_point", "remove_element", "swap_labels"]
    with pytest.raises(ValueError, match="already registered"):
        register_script_edit("move_point")(lambda tree, rng: [])
    with pytest.raises(KeyError, match="known: change_linestyle, change_number, move_point"):
        get_script_edit("nope")


@pytest.mark.parametrize("name", list_script_edits())
def test_every_edit_gives_valid_script_and_visibly_different_image(name, sandbox, positive):
    import numpy as np

    edits = propose_edits(TRIANGLE, np.random.default_rng(0), [name])[name]
    assert edits, f"{name} found nothing to edit in the fixture"
    for edit in edits:
        assert edit.type == name and edit.detail
        ast.parse(edit.script)
        assert ast.dump(ast.parse(edit.script)) != ast.dump(ast.parse(TRIANGLE))
    rendered = sandbox.run(edits[0].script)
    assert rendered.ok, rendered
    image = decode_png(rendered.image_png)
    assert image.shape == positive.shape
    assert changed_fraction(positive, image) > 0.0003, edits[0].detail


def test_edits_are_deterministic_for_a_seed():
    import numpy as np

    a = propose_edits(TRIANGLE, np.random.default_rng(3))
    b = propose_edits(TRIANGLE, np.random.default_rng(3))
    c = propose_edits(TRIANGLE, np.random.default_rng(4))
    assert a == b
    assert [e.script for e in a["move_point"]] != [e.script for e in c["move_point"]]


def test_label_swap_and_number_change_details():
    import numpy as np

    edits = propose_edits(TRIANGLE, np.random.default_rng(0), ["swap_labels", "change_number"])
    assert {e.caption_swap for e in edits["swap_labels"]} == {("A", "B"), ("A", "C"), ("B", "C")}
    olds = {e.caption_number[0] for e in edits["change_number"]}
    assert olds == {"4", "60"}
    for edit in edits["change_number"]:
        old, new = edit.caption_number
        assert old != new and new.isdigit()
        if old == "60":
            assert f"'{new}°'" in edit.script  # unit kept, an angle stays an angle


def test_caption_swap_rules():
    assert swap_caption_letters(CAPTION, "A", "B") == (
        "In triangle BAC, BA = 4 cm, angle B is 60° and CD is an altitude.", "")
    new, note = swap_caption_letters("A triangle ABC with AB = 4.", "A", "B")
    assert new is None and "same objects" in note  # ABC -> BAC and AB -> BA name the same things
    new, note = swap_caption_letters("A circle with centre O.", "A", "B")
    assert new is None and "does not name" in note
    assert replace_caption_number(CAPTION, "60", "45") == CAPTION.replace("60°", "45°")
    assert replace_caption_number(CAPTION, "7", "8") is None


@pytest.mark.parametrize("caption, a, b, changed", [
    ("The angle ABC is 40 degrees.", "A", "B", "The angle BAC is 40 degrees."),  # another angle: a real negative
    ("∠ABC = 40°.", "A", "B", "∠BAC = 40°."),
    ("Triangle ABC is isosceles.", "A", "B", None),  # the same triangle: no negative
    ("AB = 4.", "A", "B", None),  # the same segment
])
def test_caption_swaps_judge_the_same_object_as_the_caption_rules(caption, a, b, changed):
    # issue 12: every three-letter name was taken for a triangle, so "angle ABC" -> "angle BAC" was refused
    new, note = swap_caption_letters(caption, a, b)
    assert new == changed and (changed is not None or "only renames the same objects" in note)


def test_perturb_script_writes_negatives_captions_and_is_deterministic(sandbox, tmp_path):
    config = PerturbConfig(num=6, seed=1)
    runs = []
    for name in ("a", "b"):
        result = perturb_script(TRIANGLE, tmp_path / name, config, sandbox, caption=CAPTION)
        assert result.ok, result.message
        runs.append(json.loads((tmp_path / name / "manifest.json").read_text()))
    assert runs[0]["negatives"] == runs[1]["negatives"]
    out = tmp_path / "a"
    assert (out / "positive.png").is_file() and (out / "positive.py").read_text() == TRIANGLE
    positive = decode_png((out / "positive.png").read_bytes())
    for i, negative in enumerate(runs[0]["negatives"]):
        assert negative["index"] == i
        ast.parse((out / negative["script"]).read_text())
        image = decode_png((out / negative["image"]).read_bytes())
        assert (out / negative["image"]).read_bytes() == (tmp_path / "b" / negative["image"]).read_bytes()
        assert negative["hardness"]["changed_fraction"] == pytest.approx(changed_fraction(positive, image), abs=1e-6)
        assert 0 < negative["hardness"]["changed_fraction"] <= config.max_changed_fraction
        if negative["type"] in ("swap_labels", "change_number") and negative["caption"] is not None:
            assert negative["caption"] != CAPTION
        elif negative["type"] not in ("swap_labels", "change_number"):
            assert negative["caption"] is None and negative["caption_note"]
    assert len({n["type"] for n in runs[0]["negatives"]}) >= 4  # round-robin over the edit types


def test_caption_negative_for_swap_and_number(sandbox, tmp_path):
    for edit_type in ("swap_labels", "change_number"):
        result = perturb_script(TRIANGLE, tmp_path / edit_type, PerturbConfig(num=2, edit_types=(edit_type,)),
                                sandbox, caption=CAPTION)
        assert result.ok, result.message
        assert all(n["caption"] and n["caption"] != CAPTION for n in result.negatives)


def test_fewer_than_k_is_reported_not_padded(tmp_path, capsys):
    script = tmp_path / "tiny.py"
    script.write_text(TINY)
    out = tmp_path / "out"
    code = cli.main(["perturb-script", str(script), "--num", "12", "--out", str(out), "--workers", "1", *CLI_FLAGS])
    assert code == 1
    assert "only" in capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    written = manifest["negatives"]
    assert 0 < len(written) < 12 and not manifest["ok"]
    assert sorted(p.name for p in out.glob("negative_*.png")) == sorted(n["image"] for n in written)
    reasons = [d["reason"] for d in manifest["discarded"]]
    assert any("identically" in r for r in reasons)  # removing the empty plot([], []) changes nothing


def test_too_different_and_failing_candidates_are_discarded(sandbox, tmp_path):
    strict = PerturbConfig(num=2, max_changed_fraction=1e-6, edit_types=("remove_element",))
    result = perturb_script(TRIANGLE, tmp_path / "strict", strict, sandbox)
    assert not result.ok and not result.negatives
    assert any("differs too much" in d["reason"] for d in result.discarded)
    broken = TRIANGLE.replace("A = (0, 0)", "A = (0, 0)\nassert A == (0, 0)")
    result = perturb_script(broken, tmp_path / "broken", PerturbConfig(num=10, edit_types=("move_point",)), sandbox)
    assert any("render failed" in d["reason"] for d in result.discarded)


def test_unrenderable_positive(sandbox, tmp_path):
    result = perturb_script("1/0", tmp_path / "x", PerturbConfig(num=1), sandbox)
    assert not result.ok and "positive failed" in result.message
    result = perturb_script("def (", tmp_path / "y", PerturbConfig(num=1), sandbox)
    assert not result.ok and "does not parse" in result.message
    assert json.loads((tmp_path / "y" / "manifest.json").read_text())["ok"] is False


@pytest.mark.parametrize("bad", [{"num": 0}, {"num": 2, "edit_types": ("nope",)}, {"num": 2, "min_ssim": 2}])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        PerturbConfig(**bad)


def test_batch_over_scripts_dir_resumes(tmp_path, capsys):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "tri.py").write_text(TRIANGLE)
    (scripts / "tri.txt").write_text(CAPTION)
    (scripts / "broken.py").write_text("1/0")
    out = tmp_path / "batch"
    args = ["perturb-batch", "--scripts-dir", str(scripts), "--num", "2", "--out", str(out), "--workers", "1", *CLI_FLAGS]
    assert cli.main(args) == 1  # one item failed
    summary = json.loads((out / "manifest.json").read_text())
    assert summary["done"] == ["tri"] and [r["id"] for r in summary["rejects"]] == ["broken"]
    assert "positive failed" in summary["rejects"][0]["reason"] and summary["rejects"][0]["status"] == "error"
    assert summary["statuses"] == {"broken": "error", "tri": "ok"}
    item = json.loads((out / "tri" / "manifest.json").read_text())
    assert item["caption"] == CAPTION and len(item["negatives"]) == 2
    stamp = (out / "tri" / "manifest.json").stat().st_mtime_ns
    (scripts / "broken.py").write_text(TINY)
    assert cli.main(args) == 0  # resumed: tri skipped, broken retried and now fine
    assert (out / "tri" / "manifest.json").stat().st_mtime_ns == stamp
    summary = json.loads((out / "manifest.json").read_text())
    assert sorted(summary["done"]) == ["broken", "tri"] and summary["rejects"] == []
    assert "skipped 1" in capsys.readouterr().out


def test_labels_in_dicts_lists_and_zip_strings_are_swapped():
    import numpy as np

    script = (
        "import matplotlib.pyplot as plt\n"
        "points = {'A': (0, 0), 'B': (4, 0)}\n"
        "others = [('C', (1, 3))]\n"
        "for name, (x, y) in zip('DE', [(2, 0), (3, 1)]):\n"
        "    plt.text(x, y, name)\n"
    )
    edits = propose_edits(script, np.random.default_rng(0), ["swap_labels"])["swap_labels"]
    pairs = {frozenset(e.caption_swap) for e in edits}
    assert {frozenset("AB"), frozenset("AC"), frozenset("DE"), frozenset("AD")} <= pairs
    by_pair = {frozenset(e.caption_swap): e.script for e in edits}
    assert "{'B': (0, 0), 'A': (4, 0)}" in by_pair[frozenset("AB")]
    assert "zip('ED'" in by_pair[frozenset("DE")]


def test_batch_reference_json_inputs(tmp_path):
    from data_recipes.external.batch import items_from_reference_json

    (tmp_path / "tiny.py").write_text(TINY)
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "tri.py").write_text(TRIANGLE)
    records = [
        {"id": "inline", "code": TINY, "caption": "A segment."},
        {"script": "tiny.py", "conversations": ["<image>", "Tiny caption."]},
        {"positive_image_path": "imgs/tri.png",
         "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": CAPTION}]},
        {"positive_image_path": "imgs/none.png"},
        {"script": "missing.py"},
        ["not", "a", "record"],
    ]
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records))
    items = items_from_reference_json(path, scripts)
    assert [i.id for i in items] == ["inline", "record_1", "tri", "none", "record_4", "record_5"]
    assert items[0].script == TINY and items[0].caption == "A segment."
    assert items[1].script == TINY and items[1].caption == "Tiny caption."
    assert items[2].script == TRIANGLE and items[2].caption == CAPTION and not items[2].error
    assert "none.py" in items[3].error and "record 3" in items[3].error
    assert "missing.py" in items[4].error and "does not exist" in items[4].error
    assert "expected a JSON object" in items[5].error


def test_batch_never_counts_a_forbidden_or_crashed_script_as_done(tmp_path, capsys):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "tri.py").write_text(TRIANGLE)
    (scripts / "crash.py").write_text("import faulthandler\nfaulthandler._read_null()\n" + TINY)
    (scripts / "sneaky.py").write_text("import socket\ntry:\n    socket.socket()\nexcept OSError:\n    pass\n" + TINY)
    # forbidden only on a path a negative takes: the positive renders, a moved point triggers it
    (scripts / "branch.py").write_text(
        "import os, sys\nimport matplotlib.pyplot as plt\nP = (1.0, 2.0)\nif P != (1.0, 2.0):\n    os.system('true')\n"
        "fig, ax = plt.subplots(figsize=(1.5, 1.5), dpi=40)\nax.plot([0, P[0]], [0, P[1]], 'k-')\n"
        "ax.set_xlim(0, 3)\nax.set_ylim(0, 3)\nax.axis('off')\nplt.savefig(sys.argv[1])\n")
    out = tmp_path / "batch"
    args = ["perturb-batch", "--scripts-dir", str(scripts), "--num", "2", "--out", str(out), "--workers", "1",
            "--edits", "move_point", *CLI_FLAGS]
    assert cli.main(args) == 1
    summary = json.loads((out / "manifest.json").read_text())
    assert summary["done"] == ["tri"]
    assert summary["statuses"] == {"branch": "forbidden", "crash": "error", "sneaky": "forbidden", "tri": "ok"}
    reasons = {r["id"]: r["reason"] for r in summary["rejects"]}
    assert "SIGSEGV" in reasons["crash"] and "socket" in reasons["sneaky"] and "os.system" in reasons["branch"]
    assert summary["status_counts"] == {"ok": 1, "forbidden": 2, "error": 1}
    assert json.loads((out / "branch" / "manifest.json").read_text())["status"] == "forbidden"
    assert "rejected sneaky (forbidden)" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["perturb-script", "perturb-batch", "import"])
def test_cli_refuses_untrusted_scripts_without_bubblewrap(tmp_path, monkeypatch, capsys, command):
    (tmp_path / "tiny.py").write_text(TINY)
    (tmp_path / "tiny.txt").write_text("A segment.")
    args = {"perturb-script": ["perturb-script", str(tmp_path / "tiny.py"), "--num", "1"],
            "perturb-batch": ["perturb-batch", "--scripts-dir", str(tmp_path), "--num", "1"],
            "import": ["import", "--pairs-dir", str(tmp_path)]}[command]
    args += ["--out", str(tmp_path / "out"), "--workers", "1"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no bwrap on it
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "bubblewrap (bwrap) is not installed" in err and "--no-isolation" in err
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert cli.main(args + ["--no-isolation"]) in (0, 1)  # runs, with one warning for the whole batch
    assert capsys.readouterr().err.count("WITHOUT kernel isolation") == 1
    assert (tmp_path / "out" / "manifest.json").is_file()
