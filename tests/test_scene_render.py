"""Scene model, facts grammar and checker, and the three rendering paths (script, fast, naive) agreeing pixel for pixel."""
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_recipes.diagrams.draw_calls import DrawCall
from data_recipes.diagrams.engine import (
    candidate_negatives,
    emit_script,
    encode_png,
    generate_diagram,
    list_families,
    render_array,
    render_naive,
)
from data_recipes.diagrams.facts import canonical, check_facts, holds, parse_fact, rename_fact
from data_recipes.diagrams.layout import _incident_directions, label_direction, layout
from data_recipes.diagrams.scene import Element, Scene

# -- scene model ------------------------------------------------------------------------------


def test_element_validation_names_the_problem():
    with pytest.raises(ValueError, match="unknown element kind 'blob'"):
        Element("blob", ("A",))
    with pytest.raises(ValueError, match="takes 2..2 point refs"):
        Element("segment", ("A",))
    with pytest.raises(ValueError, match="unknown attrs \\['colour'\\]"):
        Element("segment", ("A", "B"), {"colour": "red"})
    with pytest.raises(ValueError, match="unknown points \\['C'\\]"):
        Scene(points={"A": (0, 0), "B": (1, 0)}, elements=[Element("segment", ("A", "C"))])
    with pytest.raises(ValueError, match="lacks key 'elements'"):
        Scene.from_dict({"points": {}})


def test_copy_is_deep_and_equal():
    s = Scene(points={"A": (0, 0), "B": (4, 0), "C": (0, 3)}, meta={"family": "f", "nested": {"k": [1]}})
    s.add("polygon", "A", "B", "C")
    s.add("length_label", "A", "B", text="4", value=4)
    c = s.copy()
    assert c.to_dict() == s.to_dict() and c is not s
    c.set_point("A", (1, 1))
    c.elements[1].attrs["text"] = "5"
    c.meta["nested"]["k"].append(2)
    c.add("label", "A")
    assert s.points["A"] == (0.0, 0.0) and s.elements[1].attrs["text"] == "4"
    assert s.meta["nested"] == {"k": [1]} and len(s.elements) == 2


def test_moving_a_point_moves_what_is_drawn_from_it_and_rename_renames_everywhere():
    s = Scene(points={"A": (0, 0), "B": (4, 0), "C": (0, 3)})
    s.add("polygon", "A", "B", "C")
    s.add("right_mark", "B", "A", "C")
    s.add("label", "A")
    before = render_array(s, 112)
    s.set_point("C", (1, 3))
    assert not np.array_equal(before, render_array(s, 112))
    r = s.rename({"A": "B", "B": "A"})
    assert r.find("right_mark")[0].refs == ("A", "B", "C") and r.labelled() == ["B"]
    assert r.p("B").tolist() == [0, 0]
    with pytest.raises(ValueError, match="merges points"):
        s.rename({"A": "B"})
    assert Scene.from_dict(json.loads(json.dumps(s.to_dict()))).to_dict() == s.to_dict()


# -- facts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("a, b", [
    ("parallel(DC,BA)", "parallel(AB,CD)"),
    ("shape(CDAB)=square", "shape(ABCD)=square"),
    ("shape(DCBA)=square", "shape(ABCD)=square"),
    ("angle(CBA)=60", "angle(ABC)=60"),
    ("similar(ADE,ABC)", "similar(ABC,ADE)"),
    ("similar(DAE,BAC)", "similar(ABC,ADE)"),
    ("intersection(O,BD,CA)", "intersection(O,AC,BD)"),
    ("isosceles(ACB)", "isosceles(ABC)"),
])
def test_canonical_forms(a, b):
    assert canonical(a) == canonical(b)


def test_canonical_keeps_meaningful_order():
    assert canonical("shape(ABCD)=square") != canonical("shape(ACBD)=square")
    assert canonical("altitude(AD,ABC)") != canonical("altitude(DA,ABC)")
    assert canonical("isosceles(ABC)") != canonical("isosceles(BAC)")
    assert rename_fact("midpoint(D,BC)", {"B": "A", "A": "B"}) == "midpoint(D,AC)"


@pytest.mark.parametrize("bad, msg", [("parallel AB CD", "expected NAME"), ("wobbly(AB)", "unknown relation"),
                                      ("midpoint(D)", "takes 2 arguments")])
def test_parse_fact_rejects_bad_strings(bad, msg):
    with pytest.raises(ValueError, match=msg):
        parse_fact(bad)


def _right_angle_scene(mark: bool) -> Scene:
    s = Scene(points={"A": (0, 0), "B": (4, 0), "C": (0, 3), "M": (2, 0)})
    s.add("segment", "A", "B")
    s.add("segment", "A", "C")
    if mark:
        s.add("right_mark", "B", "A", "C")
    return s


def test_checker_needs_geometry_and_the_mark_that_shows_it():
    assert holds(_right_angle_scene(True), "perpendicular(AB,AC)")
    assert not holds(_right_angle_scene(False), "perpendicular(AB,AC)")
    s = _right_angle_scene(True)
    s.set_point("C", (0.3, 3))
    assert not holds(s, "perpendicular(AB,AC)")
    s = _right_angle_scene(False)
    assert not holds(s, "midpoint(M,AB)")
    s.add("ticks", "A", "M", count=1)
    s.add("ticks", "M", "B", count=1)
    assert holds(s, "midpoint(M,AB)") and not holds(s, "midpoint(M,AC)")
    s.set_point("M", (2.2, 0))
    assert check_facts(s, ["midpoint(M,AB)"]) == ["midpoint(M,AB)"]


# -- rendering ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [224, 336])
def test_render_array_is_a_white_image_with_black_ink(size):
    d = generate_diagram("square", np.random.default_rng(0))
    img = render_array(d.scene, size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    assert (img[0, 0] == 255).all() and (img[-1, -1] == 255).all()
    assert (img < 64).any(axis=2).mean() > 0.01


def test_encode_png_round_trips_and_is_deterministic():
    d = generate_diagram("circle_angles", np.random.default_rng(1))
    img = render_array(d.scene)
    png = encode_png(img)
    assert png == encode_png(render_array(d.scene))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), img)


@pytest.mark.parametrize("family", ["coordinate_grid", "sector", "triangle_isosceles"])
def test_gray_rendering_is_the_images_one_channel(family):
    """The builder's one-channel path: same pixels, same PNG bytes; a drawing with colour is refused."""
    d = generate_diagram(family, np.random.default_rng(3))
    rgb, gray = render_array(d.scene, 224), render_array(d.scene, 224, gray=True)
    assert gray.shape == (224, 224) and gray.dtype == np.uint8
    assert all(np.array_equal(rgb[..., c], gray) for c in range(3))
    assert encode_png(gray) == encode_png(rgb)
    lim, calls = layout(d.scene, 224)
    red = DrawCall("plot", ([lim[0], lim[1]], [lim[2], lim[3]]), (("color", "red"), ("lw", 2.0), ("zorder", 9.0)))
    with pytest.raises(ValueError, match="colour"):
        render_array(d.scene, 224, laid_out=(lim, [*calls, red]), gray=True)
    coloured = render_array(d.scene, 224, laid_out=(lim, [*calls, red]))
    assert (coloured[..., 0] != coloured[..., 1]).any()


def _sample_scenes():
    out = []
    for i, family in enumerate(["triangle_isosceles", "coordinate_grid", "sector", "parallelogram", "tangents"]):
        d = generate_diagram(family, np.random.default_rng(i))
        out.append(d.scene)
        negs = candidate_negatives(d, np.random.default_rng(i))
        if i < 2 and negs:
            out.append(negs[0].diagram.scene)
    return out


def test_emitted_scripts_reproduce_the_fast_path_pixels(tmp_path):
    """Tolerance: none. The script and the cached canvas run the same calls, so pixels are identical."""
    scenes = _sample_scenes()
    fast = [render_array(s, 224) for s in scenes]  # rendered in sequence: artist re-use must not leak
    for i, (scene, expected) in enumerate(zip(scenes, fast)):
        script = tmp_path / f"s{i}.py"
        script.write_text(emit_script(scene, 224))
        out = tmp_path / f"s{i}.png"
        subprocess.run([sys.executable, str(script), str(out)], check=True, capture_output=True, timeout=120)
        got = np.asarray(Image.open(out).convert("RGB"))
        assert got.shape == expected.shape
        assert np.array_equal(got, expected), f"script {i}: {np.abs(got.astype(int) - expected).max()} max diff"


def test_naive_path_draws_the_same_image(tmp_path):
    for i, scene in enumerate(_sample_scenes()[:3]):
        render_naive(scene, str(tmp_path / f"{i}.png"), 224)
        got = np.asarray(Image.open(tmp_path / f"{i}.png").convert("RGB"))
        assert np.array_equal(got, render_array(scene, 224))


def test_script_is_standalone_and_readable():
    d = generate_diagram("triangle_right", np.random.default_rng(0))
    src = emit_script(d.scene)
    assert src.count("\n") > len(d.scene.elements)
    assert 'matplotlib.use("Agg")' in src and "sys.argv[1]" in src and "data_recipes" not in src
    assert "savefig" in src and "bbox_inches" not in src
    compile(src, "diagram.py", "exec")


@pytest.mark.parametrize("family", list_families())
def test_vertex_labels_sit_in_a_free_gap(family):
    d = generate_diagram(family, np.random.default_rng(0))
    for name in d.scene.labelled():
        h = label_direction(d.scene, name)
        for inc in _incident_directions(d.scene, name):
            gap = abs((h - inc + 180) % 360 - 180)
            assert gap > 20, f"label {name} of {family} lies {gap:.0f} degrees from a line through it"
