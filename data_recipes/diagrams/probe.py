"""The perception probe: paired questions on positive diagrams and their image hard negatives.

``mmgeolm-data probe-set --out DIR --num N`` (or :func:`make_probe_set` / :func:`write_probe_set`) draws
diagrams from the engine on a seed stream that no data build uses (``[seed, draw, PROBE_STREAM]``;
builds draw ``[seed, index]``), picks for each one image hard negative that removes or changes a fact
the probe can ask about, and asks the same question on both images::

    positive  "Is AB parallel to CD? Answer yes or no."  -> yes
    negative  (CD turned by 4 degrees, arrows gone)       -> no

A pair counts as right only when both members are (``mmgeolm-bench score probe``): an answerer that
never looks at the picture gives both members the same answer and scores 0 on every pair, since the
two answers always differ. Each pair records its perturbation type, its relation and whether it needs
reading vertex letters (:class:`~data_recipes.diagrams.questions.PairedQuestion`).

Mark-only perturbations (a dropped right-angle mark, dropped ticks or arcs) are left out: the geometry
of their negative is unchanged, so "Is AB perpendicular to CD?" would have no honest "no". Everything
is a pure function of the arguments: same seed, same bytes.
"""
from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from data_recipes.diagrams import engine
from data_recipes.diagrams.hardness import image_hardness
from data_recipes.diagrams.layout import layout
from data_recipes.diagrams.questions import (
    GROUNDABLE_RELATIONS,
    PairedQuestion,
    askable_relations,
    paired_questions,
)
from data_recipes.formats.probe import ProbeRecord, check_probe_dir
from data_recipes.formats.probe import write_probe_set as _write_files
from mmgeolm_core.config import ConfigError, check, check_number
from mmgeolm_core.errors import JobError

logger = logging.getLogger(__name__)

PROBE_STREAM = 0x70726F6265  # "probe": a third seed word that no build draws with
MARK_ONLY_PERTURBATIONS = ("drop_right_mark", "drop_equal_ticks", "drop_angle_marks")
KINDS = ("yes_no", "value")


@dataclass(frozen=True)
class ProbeConfig:
    """What a probe set is made of.

    Attributes:
        num: pairs to make (two questions each).
        seed: the probe's seed; draws use ``[seed, draw, PROBE_STREAM]``.
        size_px: image side in pixels.
        dpi: rendering dpi (as in data recipes).
        relations: relations to ask about (``None``: every relation with a question template);
            ``"groundable"`` expands to :data:`~data_recipes.diagrams.questions.GROUNDABLE_RELATIONS`.
        kinds: question kinds, ``yes_no`` and/or ``value``.
        families: diagram families to draw from (``None``: all).
        min_changed_fraction: a negative must change at least this fraction of pixels (visible).
        min_ssim: ... and keep at least this SSIM to its positive (a near-duplicate, not another picture).
        needs_letters: keep only pairs that need reading vertex letters (True), only pairs that do not
            (False), or both (``None``).
        max_draws: diagrams to try before giving up (default ``50 * num``).
    """

    num: int = 200
    seed: int = 0
    size_px: int = 224
    dpi: int = 100
    relations: tuple[str, ...] | None = None
    kinds: tuple[str, ...] = KINDS
    families: tuple[str, ...] | None = None
    min_changed_fraction: float = 0.0002
    min_ssim: float = 0.5
    needs_letters: bool | None = None
    max_draws: int | None = None

    def __post_init__(self) -> None:
        check_number(self.num, "num", ge=1, integer=True)
        check_number(self.seed, "seed", ge=0, integer=True)
        check_number(self.size_px, "size_px", ge=32, integer=True)
        check_number(self.dpi, "dpi", ge=10, integer=True)
        check(bool(self.kinds) and set(self.kinds) <= set(KINDS), "kinds", f"a non-empty subset of {list(KINDS)}",
              self.kinds)
        if self.relations is not None:
            relations = tuple(GROUNDABLE_RELATIONS if r == "groundable" else (r,) for r in self.relations)
            object.__setattr__(self, "relations", tuple(dict.fromkeys(x for rs in relations for x in rs)))
            known = askable_relations()
            unknown = [r for r in self.relations if r not in known]
            check(bool(self.relations) and not unknown, "relations",
                  f"relations with a question template ({', '.join(sorted(known))}) or 'groundable'",
                  unknown or self.relations)
        if self.families is not None:
            unknown = sorted(set(self.families) - set(engine.list_families()))
            check(bool(self.families) and not unknown, "families",
                  f"diagram families among {engine.list_families()}", unknown or self.families)
        check_number(self.min_changed_fraction, "min_changed_fraction", ge=0, le=1)
        check_number(self.min_ssim, "min_ssim", ge=-1, le=1)
        if self.max_draws is not None:
            check_number(self.max_draws, "max_draws", ge=1, integer=True)


@dataclass
class ProbePair:
    """One pair: a question, its positive and negative images (grey uint8 arrays) and where they came from."""

    pair_id: str
    draw: int
    family: str
    perturbation: str
    detail: str
    question: PairedQuestion
    positive: np.ndarray = field(repr=False)
    negative: np.ndarray = field(repr=False)
    hardness: dict[str, float] = field(default_factory=dict)

    def records(self) -> tuple[ProbeRecord, ProbeRecord]:
        """The pair's two ``probe.jsonl`` records, positive first."""
        q = self.question
        common = dict(pair=self.pair_id, question=q.question, kind=q.kind, relation=q.relation, fact=q.fact,
                      perturbation=self.perturbation, needs_letters=q.needs_letters, family=self.family,
                      detail=self.detail)
        return (ProbeRecord(id=f"{self.pair_id}-pos", member="positive", image=f"images/{self.pair_id}_pos.png",
                            answer=q.positive_answer, **common),
                ProbeRecord(id=f"{self.pair_id}-neg", member="negative", image=f"images/{self.pair_id}_neg.png",
                            answer=q.negative_answer, **common))


def _render(scene, config: ProbeConfig) -> np.ndarray:
    laid_out = layout(scene, config.size_px, config.dpi)
    return engine.render_array(scene, size_px=config.size_px, dpi=config.dpi, laid_out=laid_out, gray=True)


def _options(diagram: engine.Diagram, rng: np.random.Generator,
             config: ProbeConfig) -> list[tuple[engine.Negative, PairedQuestion]]:
    types = [t for t in engine.list_perturbations() if t not in MARK_ONLY_PERTURBATIONS]
    options = []
    for negative in engine.candidate_negatives(diagram, rng, types=types):
        for q in paired_questions(diagram.facts, negative.diagram.facts, negative.removed, negative.added):
            if (q.kind in config.kinds and (config.relations is None or q.relation in config.relations)
                    and config.needs_letters in (None, q.needs_letters)):
                options.append((negative, q))
    return options


def iter_probe_pairs(config: ProbeConfig) -> Iterator[ProbePair]:
    """Probe pairs in order, one per accepted diagram, until ``config.num`` (deterministic).

    Perturbation types and relations are balanced as the set grows: each diagram contributes the question
    whose perturbation type, then relation, has been used least so far (ties in a seeded random order), so
    a type that applies to every diagram (a label swap) does not drown out the rare ones.

    Raises:
        JobError: fewer than ``num`` pairs after ``max_draws`` diagrams (the relations or families are
            too narrow).
    """
    families = list(config.families or engine.list_families())
    asked: Counter[str] = Counter()
    used: Counter[str] = Counter()
    max_draws = config.max_draws or 50 * config.num
    made = 0
    for draw in range(max_draws):
        if made >= config.num:
            return
        rng = np.random.default_rng([config.seed, draw, PROBE_STREAM])
        family = families[int(rng.integers(len(families)))]
        diagram = engine.generate_diagram(family, rng)
        options = _options(diagram, rng, config)
        if not options:
            continue
        order = rng.permutation(len(options))
        # sorted() is stable: ties keep the random order
        ranked = sorted(order, key=lambda i: (used[options[i][0].type], asked[options[i][1].relation]))
        positive = _render(diagram.scene, config)
        for i in ranked:
            negative, question = options[i]
            image = _render(negative.diagram.scene, config)
            hardness = image_hardness(positive, image)
            if hardness["changed_fraction"] < config.min_changed_fraction or hardness["ssim"] < config.min_ssim:
                continue
            if np.array_equal(image, positive):
                continue
            asked[question.relation] += 1
            used[negative.type] += 1
            yield ProbePair(f"probe-{made:05d}", draw, family, negative.type, negative.detail, question,
                            positive, image, hardness)
            made += 1
            break
    if made < config.num:
        raise JobError(f"made {made} of {config.num} probe pairs in {max_draws} diagrams; widen relations/kinds/"
                       "families or raise max_draws")


def make_probe_set(config: ProbeConfig, progress: bool = False) -> list[ProbePair]:
    """All pairs of ``config`` in memory (see :func:`iter_probe_pairs`)."""
    pairs = iter_probe_pairs(config)
    if progress:
        pairs = tqdm(pairs, total=config.num, desc="probe pairs", unit="pair")
    return list(pairs)


def write_probe_set(out_dir: str, config: ProbeConfig, progress: bool = False) -> list[ProbeRecord]:
    """Make the pairs of ``config`` and write the probe folder (``probe.jsonl``, ``manifest.json``, images).

    Returns:
        The records written, two per pair.
    """
    pairs = make_probe_set(config, progress=progress)
    records = [r for p in pairs for r in p.records()]
    images = {}
    for p in pairs:
        pos, neg = p.records()
        images[pos.image] = engine.encode_png(p.positive)
        images[neg.image] = engine.encode_png(p.negative)
    manifest = {"seed": config.seed, "seed_stream": PROBE_STREAM, "size_px": config.size_px, "dpi": config.dpi,
                "relations": list(config.relations) if config.relations else None, "kinds": list(config.kinds),
                "families": list(config.families) if config.families else None,
                "needs_letters": config.needs_letters,
                "excluded_perturbations": list(MARK_ONLY_PERTURBATIONS),
                "hardness": {"min_changed_fraction": config.min_changed_fraction, "min_ssim": config.min_ssim},
                "draws": {p.pair_id: p.draw for p in pairs}}
    _write_files(out_dir, records, images, manifest)
    return records


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (an earlier probe set there is replaced whole; "
                        "a folder holding anything else is refused)")
    parser.add_argument("--num", type=int, default=200, help="pairs to make, two questions each (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="probe seed (default 0)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    parser.add_argument("--relations", nargs="+", default=None, metavar="NAME",
                        help=f"relations to ask about; 'groundable' = {' '.join(GROUNDABLE_RELATIONS)} (default: all)")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS, help="question kinds (default: both)")
    parser.add_argument("--families", nargs="+", default=None, metavar="NAME", help="diagram families (default: all)")
    letters = parser.add_mutually_exclusive_group()
    letters.add_argument("--letter-free", dest="needs_letters", action="store_const", const=False,
                         help="only pairs answerable without reading vertex letters")
    letters.add_argument("--letters-only", dest="needs_letters", action="store_const", const=True,
                         help="only pairs that need reading vertex letters")


def config_from_args(args: argparse.Namespace) -> ProbeConfig:
    """The :class:`ProbeConfig` of parsed command-line arguments (errors name the flag's key)."""
    return ProbeConfig(num=args.num, seed=args.seed, size_px=args.size,
                       relations=tuple(args.relations) if args.relations else None, kinds=tuple(args.kinds),
                       families=tuple(args.families) if args.families else None, needs_letters=args.needs_letters)


def run_cli(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        raise ConfigError(exc.reason, key=exc.key, source="command line") from None
    check_probe_dir(args.out)  # before drawing anything
    records = write_probe_set(args.out, config, progress=logger.isEnabledFor(logging.INFO))
    pairs = [r for r in records if r.member == "positive"]
    logger.info("wrote %d pairs (%d questions) to %s: %s", len(pairs), len(records), args.out,
                dict(Counter(r.relation for r in pairs).most_common()))
    return 0


def list_relations(records: Sequence[ProbeRecord]) -> list[str]:
    """Relations present in ``records``, sorted."""
    return sorted({r.relation for r in records})
