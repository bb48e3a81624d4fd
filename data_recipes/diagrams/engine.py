"""The diagram engine's public API: diagrams, their image hard negatives, and rendering.

    from data_recipes.diagrams.engine import generate_diagram, candidate_negatives, render_array, encode_png
    d = generate_diagram("triangle_isosceles", np.random.default_rng(0))
    for neg in candidate_negatives(d, np.random.default_rng(1)):
        png = encode_png(render_array(neg.diagram.scene))

Everything is deterministic from the generators passed in: same seed, same diagrams, same bytes.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from data_recipes.diagrams.captions import make_caption
from data_recipes.diagrams.facts import canonical, check_facts
from data_recipes.diagrams.families import get_family
from data_recipes.diagrams.families import list_families as _list_families
from data_recipes.diagrams.perturbations import get_perturbation
from data_recipes.diagrams.perturbations import list_perturbations as _list_perturbations
from data_recipes.diagrams.perturbations.base import verify
from data_recipes.diagrams.render import emit_script, encode_png, render_array, render_naive
from data_recipes.diagrams.scene import Scene

__all__ = [
    "Diagram", "Negative", "Scene", "list_families", "list_perturbations", "generate_diagram", "candidate_negatives",
    "iter_candidate_negatives",
    "render_array", "encode_png", "emit_script", "render_naive",
]


@dataclass
class Diagram:
    """A diagram: its scene (``scene.to_dict()`` is JSON), canonical facts (sorted) and caption."""

    family: str
    scene: Scene
    facts: list[str]
    caption: str


@dataclass
class Negative:
    """An image hard negative of a diagram.

    Attributes:
        type: the registered perturbation name.
        diagram: the perturbed diagram, with its own scene, facts and a caption describing it.
        removed: facts of the positive no longer true.
        added: new facts of the negative.
        detail: human-readable, e.g. "moved D off the midpoint of BC (BD:DC = 0.62:0.38)".
    """

    type: str
    diagram: Diagram
    removed: list[str]
    added: list[str]
    detail: str


def list_families() -> list[str]:
    """Registered diagram families, in registry order."""
    return _list_families()


def list_perturbations() -> list[str]:
    """Registered perturbation types, in registry order."""
    return _list_perturbations()


def generate_diagram(family: str, rng: np.random.Generator) -> Diagram:
    """A random valid diagram of ``family``; raises RuntimeError if the family broke its own facts."""
    scene, facts = get_family(family)(rng)
    facts = sorted({canonical(f) for f in facts})
    failing = check_facts(scene, facts)
    if failing:
        raise RuntimeError(f"family {family!r} generated a scene where {failing} do not hold")
    scene.meta = {**scene.meta, "family": family, "caption_variant": int(rng.integers(2**31))}
    return Diagram(family, scene, facts, make_caption(facts, scene.meta["caption_variant"]))


def candidate_negatives(diagram: Diagram, rng: np.random.Generator,
                        types: Sequence[str] | None = None) -> list[Negative]:
    """At most one candidate per applicable perturbation type (``types=None``: all registered), in registry order.

    Inapplicable types are skipped. Each perturbation draws from its own generator, derived from one
    draw of ``rng`` and the type's name, so asking for a subset of types gives the same negatives.
    """
    return list(iter_candidate_negatives(diagram, rng, types))


def iter_candidate_negatives(diagram: Diagram, rng: np.random.Generator, types: Sequence[str] | None = None,
                             shuffle: np.random.Generator | None = None) -> Iterator[Negative]:
    """The candidates of :func:`candidate_negatives`, made one at a time as they are asked for.

    With ``shuffle``, the types are tried in an order drawn from it (after the draw from ``rng``), so a
    caller that needs only the first few valid negatives in a random order never builds the others.
    Both draws happen before the first candidate is made.
    """
    names = list_perturbations() if types is None else [t for t in list_perturbations() if t in set(types)]
    unknown = sorted(set(types or ()) - set(list_perturbations()))
    if unknown:
        raise KeyError(f"unknown perturbation types {unknown}; known: {', '.join(list_perturbations())}")
    base = int(rng.integers(2**63))
    if shuffle is not None:
        names = [names[int(i)] for i in shuffle.permutation(len(names))]
    return (neg for neg in (_candidate(diagram, name, base) for name in names) if neg is not None)


def _candidate(diagram: Diagram, name: str, base: int) -> Negative | None:
    """Perturbation ``name`` of ``diagram`` with its own generator, or None where it does not apply."""
    sub = np.random.default_rng([base, zlib.crc32(name.encode())])
    res = get_perturbation(name)(diagram.scene.copy(), list(diagram.facts), sub)
    if res is None:
        return None
    removed = sorted(canonical(f) for f in res.removed)
    added = sorted(canonical(f) for f in res.added)
    if not verify(res.scene, diagram.facts, removed, added):
        return None  # never hand out a negative whose facts are not exactly what it claims
    facts = sorted((set(diagram.facts) - set(removed)) | set(added))
    res.scene.meta = {**diagram.scene.meta, "perturbation": name}
    caption = make_caption(facts, int(diagram.scene.meta.get("caption_variant", 0)))
    return Negative(name, Diagram(diagram.family, res.scene, facts, caption), removed, added, res.detail)
