"""Diagram families: every family draws valid geometry whose facts hold numerically and whose marks and numbers are true."""
import json
import re

import numpy as np
import pytest

from data_recipes.diagrams import geometry as g
from data_recipes.diagrams.engine import generate_diagram, list_families
from data_recipes.diagrams.facts import canonical, check_facts, classify_polygon, parse_fact
from data_recipes.diagrams.families import get_family, register_family
from data_recipes.diagrams.marks import false_marks, scale_errors
from data_recipes.diagrams.scene import Scene

FAMILIES = list_families()
SEEDS = [0, 1, 2, 3, 4]


def test_registry_has_enough_families_and_rejects_bad_names():
    assert len(FAMILIES) >= 15
    with pytest.raises(KeyError, match="unknown diagram family .*; known: .*square"):
        get_family("no_such_family")
    with pytest.raises(ValueError, match="already registered"):
        register_family("square")(lambda rng: None)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed", SEEDS)
def test_family_generates_valid_diagram(family, seed):
    d = generate_diagram(family, np.random.default_rng(seed))
    assert d.family == family
    assert d.facts == sorted(set(d.facts)) and d.facts, "facts must be canonical, sorted, non-empty"
    assert all(canonical(f) == f for f in d.facts)
    assert check_facts(d.scene, d.facts) == []
    assert false_marks(d.scene) == [], "a mark claims something the geometry does not satisfy"
    assert scale_errors(d.scene) == [], "an annotated number does not match the drawing's proportions"
    labels = d.scene.labelled()
    assert len(labels) == len(set(labels)) and all(re.fullmatch(r"[A-Z]", n) for n in labels)
    # JSON round trip keeps everything
    again = Scene.from_dict(json.loads(json.dumps(d.scene.to_dict())))
    assert again.to_dict() == d.scene.to_dict()
    assert check_facts(again, d.facts) == []


@pytest.mark.parametrize("family", FAMILIES)
def test_family_is_deterministic_and_varies_with_seed(family):
    a = generate_diagram(family, np.random.default_rng(11))
    b = generate_diagram(family, np.random.default_rng(11))
    assert a.scene.to_dict() == b.scene.to_dict() and a.facts == b.facts and a.caption == b.caption
    others = [generate_diagram(family, np.random.default_rng(s)).scene.to_dict()["points"] for s in range(12, 16)]
    assert any(o != a.scene.to_dict()["points"] for o in others), "the family ignores its rng"


@pytest.mark.parametrize("family", FAMILIES)
def test_caption_mentions_every_fact(family):
    for seed in (0, 1):
        d = generate_diagram(family, np.random.default_rng(seed))
        for f in map(parse_fact, d.facts):
            for arg in f.args:
                assert arg in d.caption or arg[::-1] in d.caption or all(c in d.caption for c in arg), (f, d.caption)
            if f.value and re.fullmatch(r"-?[0-9.]+", f.value):
                assert f.value in d.caption, (f, d.caption)
        assert d.caption[0].isupper() and d.caption.endswith(".")


def _scene(**pts):
    return Scene(points={k: v for k, v in pts.items()})


@pytest.mark.parametrize("pts, expected", [
    ([(0, 0), (4, 0), (4, 4), (0, 4)], "square"),
    ([(0, 0), (6, 0), (6, 3), (0, 3)], "rectangle"),
    ([(0, 0), (5, 0), (8, 4), (3, 4)], "rhombus"),
    ([(0, 0), (6, 0), (8, 3), (2, 3)], "parallelogram"),
    ([(0, 0), (8, 0), (5, 3), (1, 3)], "trapezoid"),
    ([(0, -6), (3, 0), (0, 2), (-3, 0)], "kite"),
    ([(0, 0), (7, 0), (5, 3), (1, 4)], "quadrilateral"),
    ([(0, 0), (4, 0), (2, 2 * 3 ** 0.5)], "equilateral"),
    ([(0, 0), (4, 0), (2, 5)], "isosceles"),
    ([(0, 0), (4, 0), (0, 3)], "right"),
    ([(0, 0), (6, 0), (1, 3)], "scalene"),
])
def test_polygon_classifier_on_hand_made_shapes(pts, expected):
    names = "ABCD"[: len(pts)]
    scene = _scene(**{n: p for n, p in zip(names, pts)})
    assert classify_polygon(scene, names) == expected


def test_quadrilateral_geometry_of_generated_squares():
    for seed in range(5):
        d = generate_diagram("square", np.random.default_rng(seed))
        poly = next(el.refs for el in d.scene.elements if el.kind == "polygon")
        P = [d.scene.p(n) for n in poly]
        sides = [g.dist(P[i], P[(i + 1) % 4]) for i in range(4)]
        assert max(sides) - min(sides) < 1e-9
        assert all(abs(g.angle_at(P[i - 1], P[i], P[(i + 1) % 4]) - 90) < 1e-9 for i in range(4))


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_family_many_seeds_with_negatives(family):
    from data_recipes.diagrams.engine import candidate_negatives

    for seed in range(100, 150):
        d = generate_diagram(family, np.random.default_rng(seed))
        assert check_facts(d.scene, d.facts) == [] and false_marks(d.scene) == [] and scale_errors(d.scene) == []
        for n in candidate_negatives(d, np.random.default_rng(seed)):
            assert check_facts(n.diagram.scene, n.diagram.facts) == [] and false_marks(n.diagram.scene) == []
