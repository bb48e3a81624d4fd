"""Perturbations: each flips exactly the facts it reports, visibly but slightly, and is skipped where it cannot apply."""
import functools

import numpy as np
import pytest

from data_recipes.diagrams.engine import (
    candidate_negatives,
    generate_diagram,
    list_families,
    list_perturbations,
    render_array,
)
from data_recipes.diagrams.facts import check_facts, holds
from data_recipes.diagrams.hardness import image_hardness
from data_recipes.diagrams.marks import false_marks
from data_recipes.diagrams.perturbations import get_perturbation, register_perturbation

TYPES = list_perturbations()
SEEDS = (0, 1)


@functools.cache
def _all_negatives():
    """{type: [(family, seed, diagram, negative)]} over every family and a few seeds (computed once)."""
    out = {t: [] for t in TYPES}
    for family in list_families():
        for seed in SEEDS:
            d = generate_diagram(family, np.random.default_rng(seed))
            for n in candidate_negatives(d, np.random.default_rng(1000 + seed)):
                out[n.type].append((family, seed, d, n))
    return out


def test_registry_has_enough_types_and_rejects_bad_names():
    assert len(TYPES) >= 12
    with pytest.raises(KeyError, match="unknown perturbation .*; known: .*label_swap"):
        get_perturbation("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_perturbation("label_swap")(lambda s, f, r: None)
    d = generate_diagram("square", np.random.default_rng(0))
    with pytest.raises(KeyError, match="unknown perturbation types"):
        candidate_negatives(d, np.random.default_rng(0), types=["nope"])


@pytest.mark.parametrize("ptype", TYPES)
def test_type_applies_to_some_family(ptype):
    assert _all_negatives()[ptype], f"{ptype} applied to no family (seeds {SEEDS})"


@pytest.mark.parametrize("ptype", TYPES)
def test_negative_flips_exactly_the_reported_facts(ptype):
    for family, _seed, d, n in _all_negatives()[ptype]:
        assert n.type == ptype and n.detail
        neg = n.diagram
        assert neg.facts == sorted((set(d.facts) - set(n.removed)) | set(n.added))
        # numerically: every remaining and added fact holds in the negative, every removed one fails
        assert check_facts(neg.scene, neg.facts) == [], (family, n.detail)
        assert not any(holds(neg.scene, f) for f in n.removed), (family, n.detail)
        # and the added facts were not already true of the positive
        assert not set(n.added) & set(d.facts)
        if ptype == "label_swap":
            assert n.removed and len(n.removed) == len(n.added), "a relabelling renames facts one for one"
        else:
            assert len(n.removed) + len(n.added) >= 1 and len(n.removed) <= 1, (family, n.removed, n.added)
            assert len(n.added) <= 1
        assert false_marks(neg.scene) == [], f"{ptype} on {family} left a mark that contradicts the geometry"
        assert neg.caption != d.caption


# Lines are 1-2 px wide, so a line that moves at all is entirely "changed" and SSIM saturates: a
# reshaped square (two sides, a diagonal, its marks and labels move) sits near 0.7, a moved point near 0.9+.
MIN_SSIM = 0.6
MAX_CHANGED = 0.1


@pytest.mark.parametrize("ptype", TYPES)
def test_negative_is_visible_but_small(ptype):
    for family, _seed, d, n in _all_negatives()[ptype][:3]:
        h = image_hardness(render_array(d.scene, 224), render_array(n.diagram.scene, 224))
        assert h["changed_fraction"] > 0, f"{ptype} on {family} changed no pixel at 224 px"
        assert h["ssim"] > MIN_SSIM and h["changed_fraction"] < MAX_CHANGED, (ptype, family, h)


def test_negatives_are_deterministic_and_independent_of_the_type_subset():
    d = generate_diagram("triangle_isosceles", np.random.default_rng(3))
    a = candidate_negatives(d, np.random.default_rng(9))
    b = candidate_negatives(d, np.random.default_rng(9))
    assert [(n.type, n.diagram.scene.to_dict(), n.diagram.caption) for n in a] == [
        (n.type, n.diagram.scene.to_dict(), n.diagram.caption) for n in b]
    assert [n.type for n in a] == [t for t in TYPES if t in {n.type for n in a}], "registry order"
    one = a[-1].type
    c = candidate_negatives(d, np.random.default_rng(9), types=[one])
    assert len(c) == 1 and c[0].diagram.scene.to_dict() == a[-1].diagram.scene.to_dict()


def test_inapplicable_perturbation_is_skipped_not_faked():
    d = generate_diagram("regular_polygon", np.random.default_rng(0))
    assert candidate_negatives(d, np.random.default_rng(0), types=["tangent_to_secant", "midpoint_shift"]) == []


def test_negative_caption_describes_the_negative():
    for _family, _seed, _d, n in _all_negatives()["number_change"][:5]:
        new_value = n.added[0].split("=")[1]
        assert new_value in n.diagram.caption
    for _family, _seed, _d, n in _all_negatives()["quad_shape_swap"][:5]:
        assert n.removed[0].split("=")[1] not in n.diagram.caption
        if n.added:
            assert n.added[0].split("=")[1] in n.diagram.caption
