"""Recipes: what a data-set build makes, as validated dataclasses read from YAML at the edge.

A recipe names the build, its seed and size, the image resolution, the diagram families (all, a list,
or weights), how many image negatives each positive gets and how hard they must be, the caption
negatives, and the train/val split. ``load_recipe`` turns a YAML file into a :class:`Recipe`; every
unknown key or bad value raises :class:`RecipeError` naming the file, the key and what was expected.
``Recipe.to_dict()`` is the resolved form saved in the manifest, and ``fingerprint`` identifies it.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

# Caption-negative kinds: "perturbation" (the captions of the sample's own image negatives, always
# included) and the two kinds made by data_recipes.text_negatives.generate in a post-pass.
TEXT_NEGATIVE_KINDS = ("perturbation", "rule", "retrieval")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RecipeError(ValueError):
    """A recipe file or value is invalid; the message names the file, the key and the expected values."""


def _fail(source: str, key: str, message: str) -> RecipeError:
    return RecipeError(f"{source}: key '{key}': {message}")


def _check_keys(data: Mapping[str, Any], allowed: Sequence[str], source: str, prefix: str = "") -> None:
    if not isinstance(data, Mapping):
        raise _fail(source, prefix.rstrip(".") or "<top level>", f"expected a mapping, got {type(data).__name__}")
    for key in data:
        if key not in allowed:
            raise _fail(source, f"{prefix}{key}", f"unknown key; valid keys are {sorted(allowed)}")


def _number(value: Any, source: str, key: str, *, low: float, high: float | None = None, integer: bool = False) -> Any:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise _fail(source, key, f"expected {'an integer' if integer else 'a number'}, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise _fail(source, key, f"expected a value {bound}, got {value!r}")
    return value


def _engine_names(kind: str) -> list[str]:
    # Imported lazily: the engine registers its families and perturbations when imported.
    from data_recipes.diagrams import engine

    return list(engine.list_families() if kind == "families" else engine.list_perturbations())


@dataclass(frozen=True)
class ImageConfig:
    """Output resolution: ``size_px`` square pixels drawn at ``dpi``."""

    size_px: int = 336
    dpi: int = 100
    source: str = field(default="<recipe>", repr=False, compare=False)

    def __post_init__(self) -> None:
        _number(self.size_px, self.source, "image.size_px", low=32, high=4096, integer=True)
        _number(self.dpi, self.source, "image.dpi", low=10, high=1200, integer=True)


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
    source: str = field(default="<recipe>", repr=False, compare=False)

    def __post_init__(self) -> None:
        src = self.source
        _number(self.per_positive, src, "negatives.per_positive", low=0, high=64, integer=True)
        _number(self.min_changed_fraction, src, "negatives.min_changed_fraction", low=0.0, high=1.0)
        _number(self.min_ssim, src, "negatives.min_ssim", low=-1.0, high=1.0)
        _number(self.max_rounds, src, "negatives.max_rounds", low=1, high=10, integer=True)
        if not isinstance(self.require_full_negatives, bool):
            raise _fail(src, "negatives.require_full_negatives", f"expected true or false, got {self.require_full_negatives!r}")
        if self.types:
            known = _engine_names("perturbations")
            for name in self.types:
                if name not in known:
                    raise _fail(src, "negatives.types", f"unknown perturbation type {name!r}; valid choices are {known}")
            if len(set(self.types)) != len(self.types):
                raise _fail(src, "negatives.types", f"duplicate perturbation types in {list(self.types)}")


@dataclass(frozen=True)
class TextNegativesConfig:
    """Caption negatives: ``num`` per positive from the post-pass ``kinds`` (rule, retrieval).

    The captions of the sample's own image negatives are always included as kind "perturbation"
    and do not count towards ``num``.
    """

    num: int = 0
    kinds: tuple[str, ...] = ("perturbation",)
    source: str = field(default="<recipe>", repr=False, compare=False)

    def __post_init__(self) -> None:
        _number(self.num, self.source, "text_negatives.num", low=0, high=256, integer=True)
        for kind in self.kinds:
            if kind not in TEXT_NEGATIVE_KINDS:
                raise _fail(self.source, "text_negatives.kinds", f"unknown kind {kind!r}; valid choices are {list(TEXT_NEGATIVE_KINDS)}")

    @property
    def post_pass_kinds(self) -> tuple[str, ...]:
        """The kinds made by ``data_recipes.text_negatives.generate`` (all but "perturbation")."""
        return tuple(k for k in self.kinds if k != "perturbation")


@dataclass(frozen=True)
class SplitConfig:
    """Train/val split: each sample goes to val with probability ``val_fraction`` (seeded per index)."""

    val_fraction: float = 0.0
    source: str = field(default="<recipe>", repr=False, compare=False)

    def __post_init__(self) -> None:
        _number(self.val_fraction, self.source, "split.val_fraction", low=0.0, high=1.0)


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
    source: str = field(default="<recipe>", repr=False, compare=False)

    def __post_init__(self) -> None:
        src = self.source
        if not isinstance(self.name, str) or not NAME_PATTERN.match(self.name):
            raise _fail(src, "name", f"expected a name of letters, digits, '_', '.', '-', got {self.name!r}")
        _number(self.seed, src, "seed", low=0, high=2**63 - 1, integer=True)
        _number(self.num, src, "num", low=1, high=10**8, integer=True)
        if not self.families:
            raise _fail(src, "families", "no family selected")
        known = _engine_names("families")
        for name, weight in self.families:
            if name not in known:
                raise _fail(src, "families", f"unknown family {name!r}; valid choices are {known}")
            _number(weight, src, f"families.{name}", low=0.0)
        if sum(w for _, w in self.families) <= 0:
            raise _fail(src, "families", "the weights sum to zero")

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
        out["families"] = {name: weight for name, weight in self.families}
        return json.loads(json.dumps(out))

    @property
    def fingerprint(self) -> str:
        """sha256 (first 16 hex digits) of the canonical JSON of the resolved recipe."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def with_overrides(self, *, num: int | None = None, seed: int | None = None) -> Recipe:
        """A copy with the command-line overrides applied (validated again)."""
        data = self.to_dict()
        if num is not None:
            data["num"] = num
        if seed is not None:
            data["seed"] = seed
        return build_recipe(data, source=f"{self.source} (with command-line overrides)")


RECIPE_KEYS = ("name", "seed", "num", "image", "families", "negatives", "text_negatives", "split")
_SECTION_KEYS = {
    "image": [f.name for f in fields(ImageConfig) if f.name != "source"],
    "negatives": [f.name for f in fields(NegativesConfig) if f.name != "source"],
    "text_negatives": [f.name for f in fields(TextNegativesConfig) if f.name != "source"],
    "split": [f.name for f in fields(SplitConfig) if f.name != "source"],
}


def _parse_families(value: Any, source: str) -> tuple[tuple[str, float], ...]:
    if value is None or value == "all":
        return tuple((name, 1.0) for name in _engine_names("families"))
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise _fail(source, "families", f"expected a list of family names, got {value!r}")
        if len(set(value)) != len(value):
            raise _fail(source, "families", f"duplicate family names in {value}")
        return tuple((name, 1.0) for name in value)
    if isinstance(value, Mapping):
        return tuple((str(name), weight) for name, weight in value.items())
    raise _fail(source, "families", f"expected 'all', a list of names or a mapping name: weight, got {value!r}")


def _parse_names(value: Any, source: str, key: str) -> tuple[str, ...]:
    if value is None or value == "all":
        return ()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise _fail(source, key, f"expected 'all' or a list of names, got {value!r}")


def build_recipe(data: Mapping[str, Any], source: str = "<recipe>") -> Recipe:
    """Validate a recipe mapping (as read from YAML) and build the :class:`Recipe`.

    Args:
        data: the recipe's keys (see ``RECIPE_KEYS``); omitted keys take their defaults.
        source: where the data came from, named in every error.

    Raises:
        RecipeError: on an unknown key or an invalid value.
    """
    _check_keys(data, RECIPE_KEYS, source)
    if "name" not in data:
        raise _fail(source, "name", "missing; every recipe needs a name")
    sections: dict[str, Any] = {}
    for section, keys in _SECTION_KEYS.items():
        raw = data.get(section) or {}
        _check_keys(raw, keys, source, prefix=f"{section}.")
        sections[section] = dict(raw)
    negatives = sections["negatives"]
    if "types" in negatives:
        negatives["types"] = _parse_names(negatives["types"], source, "negatives.types")
    text = sections["text_negatives"]
    if "kinds" in text:
        kinds = _parse_names(text["kinds"], source, "text_negatives.kinds") or TEXT_NEGATIVE_KINDS
        text["kinds"] = tuple(dict.fromkeys(("perturbation", *kinds)))
    try:
        return Recipe(
            name=data["name"],
            seed=data.get("seed", 0),
            num=data.get("num", 100),
            image=ImageConfig(**sections["image"], source=source),
            families=_parse_families(data.get("families"), source),
            negatives=NegativesConfig(**negatives, source=source),
            text_negatives=TextNegativesConfig(**text, source=source),
            split=SplitConfig(**sections["split"], source=source),
            source=source,
        )
    except TypeError as err:  # a non-hashable or oddly typed value slipping past the checks above
        raise RecipeError(f"{source}: {err}") from err


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe YAML file.

    Raises:
        RecipeError: the file is missing, not YAML, or holds an unknown key or invalid value.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise RecipeError(f"{path}: cannot read the recipe: {err}") from err
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, Mapping):
        raise RecipeError(f"{path}: expected a mapping of recipe keys {list(RECIPE_KEYS)}, got {type(data).__name__}")
    return build_recipe(data, source=str(path))


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
    "ImageConfig",
    "NegativesConfig",
    "Recipe",
    "RecipeError",
    "SplitConfig",
    "TEXT_NEGATIVE_KINDS",
    "TextNegativesConfig",
    "build_recipe",
    "load_recipe",
    "recipe_diff",
]
