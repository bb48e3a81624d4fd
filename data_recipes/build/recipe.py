"""Recipes: what a data-set build makes, as validated dataclasses read from YAML at the edge.

A recipe names the build, its seed and size, the image resolution, the diagram families (all, a list,
or weights), how many image negatives each positive gets and how hard they must be, the caption
negatives, and the train/val split. ``load_recipe`` turns a YAML file into a :class:`Recipe`; every
unknown key or bad value raises :class:`~mmgeolm_core.config.ConfigError` naming the file, the key and
what was expected.
``Recipe.to_dict()`` is the resolved form saved in the manifest, and ``fingerprint`` identifies it.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from data_recipes.formats.dataset import TEXT_KINDS
from mmgeolm_core.config import (
    ConfigError,
    build_config,
    check,
    check_choice,
    check_number,
    internal_field,
    load_yaml_mapping,
)

# Caption-negative kinds: "perturbation" (the captions of the sample's own image negatives, always
# included) and the two kinds made by data_recipes.text_negatives.generate in a post-pass.
TEXT_NEGATIVE_KINDS = TEXT_KINDS
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _engine_names(kind: str) -> list[str]:
    # Imported lazily: the engine registers its families and perturbations when imported.
    from data_recipes.diagrams import engine

    return list(engine.list_families() if kind == "families" else engine.list_perturbations())


@dataclass(frozen=True)
class ImageConfig:
    """Output resolution: ``size_px`` square pixels drawn at ``dpi``."""

    size_px: int = 336
    dpi: int = 100

    def __post_init__(self) -> None:
        check_number(self.size_px, "size_px", ge=32, le=4096, integer=True)
        check_number(self.dpi, "dpi", ge=10, le=1200, integer=True)


@dataclass(frozen=True)
class NegativesConfig:
    """Image hard negatives per positive and the hardness window they must fall in.

    Attributes:
        per_positive: K, negatives kept per positive (the first K valid candidates, distinct types first).
        types: allowed perturbation types (empty tuple: all registered types).
        min_changed_fraction: reject a negative whose changed-pixel fraction is below this (invisible).
        min_ssim: reject a negative whose SSIM against the positive is below this (too different).
        require_full_negatives: reject a sample with fewer than K valid negatives instead of keeping it.
        max_rounds: how many rounds of candidates to draw (round 1 gives each type once; later rounds
            allow repeated types to fill K).
    """

    per_positive: int = 4
    types: tuple[str, ...] = ()
    min_changed_fraction: float = 0.0002
    min_ssim: float = 0.5
    require_full_negatives: bool = False
    max_rounds: int = 2

    def __post_init__(self) -> None:
        check_number(self.per_positive, "per_positive", ge=0, le=64, integer=True)
        check_number(self.min_changed_fraction, "min_changed_fraction", ge=0.0, le=1.0)
        check_number(self.min_ssim, "min_ssim", ge=-1.0, le=1.0)
        check_number(self.max_rounds, "max_rounds", ge=1, le=10, integer=True)
        if self.types:
            known = _engine_names("perturbations")
            for name in self.types:
                check_choice(name, "types", known)
            check(len(set(self.types)) == len(self.types), "types", "each perturbation type once", list(self.types))


@dataclass(frozen=True)
class TextNegativesConfig:
    """Caption negatives: ``num`` per positive from the post-pass ``kinds`` (rule, retrieval).

    The captions of the sample's own image negatives are always included as kind "perturbation"
    and do not count towards ``num``.
    """

    num: int = 0
    kinds: tuple[str, ...] = ("perturbation",)

    def __post_init__(self) -> None:
        check_number(self.num, "num", ge=0, le=256, integer=True)
        for kind in self.kinds:
            check_choice(kind, "kinds", TEXT_NEGATIVE_KINDS)

    @property
    def post_pass_kinds(self) -> tuple[str, ...]:
        """The kinds made by ``data_recipes.text_negatives.generate`` (all but "perturbation")."""
        return tuple(k for k in self.kinds if k != "perturbation")


@dataclass(frozen=True)
class CaptionsConfig:
    """How captions are written, and an optional check of them against a text encoder's tokenizer.

    Attributes:
        symbols: ``unicode`` (∥ ⊥ ∠ △ ≅ ⊙ °, the engine's default) or ``words`` ("is parallel to",
            "angle ABC", "90 degrees"): for tokenizers that drop punctuation or lack these symbols.
        check_tokenizer: a tokenizer file (``tokenizer.json``, a sentencepiece ``.model``) or a
            transformers tokenizer directory, relative to the recipe's folder; the build then reports
            hard negatives that tokenize exactly like their positive (manifest ``tokenization_check``).
        check_clean: the check's text cleaning (``canonicalize``, ``lower``, ``whitespace``, ``none``;
            null: the tokenizer's own, ``canonicalize`` for SigLIP).
        check_context_length: where the check cuts the ids (null: the tokenizer's ``model_max_length``).
    """

    symbols: str = "unicode"
    check_tokenizer: str | None = None
    check_clean: str | None = None
    check_context_length: int | None = None

    def __post_init__(self) -> None:
        from data_recipes.diagrams.captions import SYMBOL_STYLES
        from data_recipes.text_negatives.token_check import CLEANERS

        check_choice(self.symbols, "symbols", SYMBOL_STYLES)
        check(self.check_tokenizer is None or bool(self.check_tokenizer), "check_tokenizer",
              "null or a tokenizer path", self.check_tokenizer)
        if self.check_clean is not None:
            check_choice(self.check_clean, "check_clean", CLEANERS)
        if self.check_context_length is not None:
            check_number(self.check_context_length, "check_context_length", ge=2, integer=True)


@dataclass(frozen=True)
class SplitConfig:
    """Train/dev/val split, drawn per sample from its own seeded stream.

    A sample goes to ``val`` with probability ``val_fraction`` and to ``dev`` with probability
    ``dev_fraction`` (the rest to ``train``). ``dev`` is for choosing configurations, so that ``val``
    is touched once, for the reported numbers; adding a dev split never moves a sample into or out
    of ``val`` (the val draw comes first).
    """

    val_fraction: float = 0.0
    dev_fraction: float = 0.0

    def __post_init__(self) -> None:
        check_number(self.val_fraction, "val_fraction", ge=0.0, le=1.0)
        check_number(self.dev_fraction, "dev_fraction", ge=0.0, le=1.0)
        if self.val_fraction + self.dev_fraction > 1.0:
            raise ConfigError(f"val_fraction {self.val_fraction} + dev_fraction {self.dev_fraction} exceeds 1",
                              key="dev_fraction")


@dataclass(frozen=True)
class Recipe:
    """A whole build. ``families`` maps family name to a positive sampling weight."""

    name: str
    seed: int = 0
    num: int = 100
    image: ImageConfig = field(default_factory=ImageConfig)
    families: tuple[tuple[str, float], ...] = ()
    negatives: NegativesConfig = field(default_factory=NegativesConfig)
    text_negatives: TextNegativesConfig = field(default_factory=TextNegativesConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    captions: CaptionsConfig = field(default_factory=CaptionsConfig)
    source: str = internal_field("<recipe>")

    def __post_init__(self) -> None:
        check(bool(NAME_PATTERN.match(self.name)), "name", "a name of letters, digits, '_', '.', '-'", self.name)
        check_number(self.seed, "seed", ge=0, le=2**63 - 1, integer=True)
        check_number(self.num, "num", ge=1, le=10**8, integer=True)
        check(bool(self.families), "families", "at least one family", [])
        known = _engine_names("families")
        for name, weight in self.families:
            check_choice(name, "families", known)
            check_number(weight, f"families.{name}", ge=0.0)
        check(sum(w for _, w in self.families) > 0, "families", "weights that do not sum to zero",
              dict(self.families))

    @property
    def family_names(self) -> list[str]:
        """Selected families, in recipe order."""
        return [name for name, _ in self.families]

    @property
    def family_probabilities(self) -> list[float]:
        """Sampling probabilities of ``family_names`` (the weights normalised)."""
        total = float(sum(w for _, w in self.families))
        return [w / total for _, w in self.families]

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain JSON data (every default filled in, families as weights)."""

        def plain(obj: Any) -> dict[str, Any]:
            return {f.name: getattr(obj, f.name) for f in fields(obj) if f.name != "source"}

        out = plain(self)
        out["image"] = plain(self.image)
        out["negatives"] = {**plain(self.negatives), "types": list(self.negatives.types)}
        out["text_negatives"] = {**plain(self.text_negatives), "kinds": list(self.text_negatives.kinds)}
        out["split"] = plain(self.split)
        out["captions"] = plain(self.captions)
        out["families"] = {name: weight for name, weight in self.families}
        return json.loads(json.dumps(out))

    @property
    def fingerprint(self) -> str:
        """sha256 (first 16 hex digits) of the canonical JSON of the resolved recipe."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def check_tokenizer_path(self) -> Path | None:
        """``captions.check_tokenizer`` resolved against the recipe file's folder (None when unset)."""
        value = self.captions.check_tokenizer
        if value is None:
            return None
        path = Path(value).expanduser()
        source = Path(self.source)
        return path if path.is_absolute() or not source.is_file() else source.parent / path

    def with_overrides(self, *, num: int | None = None, seed: int | None = None) -> Recipe:
        """A copy with the command-line overrides applied (validated again)."""
        data = self.to_dict()
        if num is not None:
            data["num"] = num
        if seed is not None:
            data["seed"] = seed
        return build_recipe(data, source=f"{self.source} (with command-line overrides)")


def _parse_families(value: Any, source: str) -> Any:
    """``all`` (or missing), a list of names, or a mapping name -> weight, as (name, weight) pairs."""
    if value is None or value == "all":
        return [(name, 1.0) for name in _engine_names("families")]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        check(len(set(value)) == len(value), "families", "each family once", value)
        return [(name, 1.0) for name in value]
    if isinstance(value, Mapping):
        return [(str(name), weight) for name, weight in value.items()]
    raise ConfigError(f"expected 'all', a list of names or a mapping name: weight, got {value!r}", key="families",
                      source=source)


def build_recipe(data: Mapping[str, Any], source: str = "<recipe>") -> Recipe:
    """Validate a recipe mapping (as read from YAML) and build the :class:`Recipe`.

    Args:
        data: the recipe's keys; omitted keys take their defaults (``name`` is required).
        source: where the data came from, named in every error.

    Raises:
        ConfigError: on an unknown key or an invalid value.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping of recipe keys, got {type(data).__name__}", source=source)
    if "name" not in data:
        raise ConfigError("missing; every recipe needs a name", key="name", source=source)
    data = dict(data)
    try:
        data["families"] = _parse_families(data.get("families"), source)
    except ConfigError as exc:
        raise exc.located(source) from None
    # "all" (or null) selects every perturbation type / caption kind; "perturbation" captions always come
    negatives, text = data.get("negatives"), data.get("text_negatives")
    if isinstance(negatives, Mapping) and negatives.get("types", ()) in (None, "all"):
        data["negatives"] = {**negatives, "types": []}
    if isinstance(text, Mapping) and "kinds" in text:
        kinds = list(TEXT_NEGATIVE_KINDS) if text["kinds"] in (None, "all") else text["kinds"]
        if isinstance(kinds, list | tuple):
            kinds = list(dict.fromkeys(("perturbation", *(kinds or TEXT_NEGATIVE_KINDS))))
        data["text_negatives"] = {**text, "kinds": kinds}
    return build_config(Recipe, data, source, internal={"source": source})


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe YAML file (a path, or the short name of a shipped recipe).

    Raises:
        ConfigError: the file is missing, not YAML, or holds an unknown key or invalid value.
    """
    from mmgeolm_core.resources import resolve_shipped

    path = resolve_shipped("data-recipe", path)
    return build_recipe(load_yaml_mapping(path, "recipe"), source=str(path))


def recipe_diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved recipes (for error messages)."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out.extend(recipe_diff(va, vb, f"{prefix}{key}."))
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} != {vb!r}")
    return out


__all__ = [
    "CaptionsConfig",
    "ImageConfig",
    "NegativesConfig",
    "Recipe",
    "SplitConfig",
    "TEXT_NEGATIVE_KINDS",
    "TextNegativesConfig",
    "build_recipe",
    "load_recipe",
    "recipe_diff",
]
