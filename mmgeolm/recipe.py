"""The pipeline recipe: which stages run, on what, with which settings.

A recipe is YAML read once at the edge (:func:`load_recipe`); sections map onto dataclasses that
validate themselves. Paths inside a recipe are resolved against the recipe's own folder, and short
names (``demo``, ``tiny-cpu``) against the recipes shipped with the packages.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {
    "data": ROOT / "data_recipes" / "recipes",
    "mmclip": ROOT / "mmclip_plugin" / "configs",
    "zero": ROOT / "llava_patches" / "zero_configs",
}
SUFFIX = {"data": ".yaml", "mmclip": ".yaml", "zero": ".json"}


class RecipeError(ValueError):
    """A pipeline recipe is invalid; the message names the file and the key."""


def _shipped(kind: str, value: str, base: Path, where: str) -> str:
    """A path as given (relative to the recipe), else a shipped file by short name."""
    if not isinstance(value, str) or not value:
        raise RecipeError(f"{where}: expected a file path or a shipped name, got {value!r}")
    path = (base / value) if not Path(value).is_absolute() else Path(value)
    if path.is_file():
        return str(path.resolve())
    candidate = SHIPPED[kind] / f"{value}{SUFFIX[kind]}"
    if candidate.is_file():
        return str(candidate)
    known = sorted(p.stem for p in SHIPPED[kind].glob(f"*{SUFFIX[kind]}"))
    raise RecipeError(f"{where}: {value!r} is neither a file (relative to the recipe) nor a shipped name; "
                      f"shipped: {known}")


@dataclass
class DataSection:
    recipe: str = "demo"
    num: int | None = None
    workers: int = 2


def _check(ok: bool, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise RecipeError(f"key {key!r}: expected {expected}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


@dataclass
class MMCLIPSection:
    """MMCLIP training: an ``mmclip-train`` config (file or shipped name) and ``key=value`` overrides.

    ``launcher`` prefixes the command for several processes, e.g. ``[torchrun, --nproc_per_node, "8", -m]``
    (the module ``mmclip_plugin.cli`` follows); empty: the ``mmclip-train`` console script.
    """

    config: str = "tiny-cpu"
    overrides: list[str] = field(default_factory=list)
    launcher: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(_str_list(self.overrides) and all("=" in o for o in self.overrides), "overrides",
               "a list of key=value strings", self.overrides)
        _check(_str_list(self.launcher), "launcher", "a list of strings", self.launcher)


@dataclass
class Toggle:
    enabled: bool = True


@dataclass
class AblationSection:
    enabled: bool = False
    recipe: str = "ablation-cpu"


@dataclass
class LlavaStage:
    """One LLaVA training stage. ``max_steps: -1`` trains ``epochs`` passes instead (HF semantics)."""

    max_steps: int = 50
    epochs: float = 1.0
    learning_rate: float = 1e-3
    batch_size: int = 8
    grad_accum: int = 1
    deepspeed: str | None = None  # this stage's DeepSpeed config (file or zero2/zero3); default: the section's
    extra_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(_is_int(self.max_steps) and (self.max_steps > 0 or self.max_steps == -1), "max_steps",
               "a positive integer, or -1 for epochs", self.max_steps)
        _check(isinstance(self.epochs, (int, float)) and self.epochs > 0, "epochs", "a positive number", self.epochs)
        _check(isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0, "learning_rate",
               "a positive number", self.learning_rate)
        for key in ("batch_size", "grad_accum"):
            value = getattr(self, key)
            _check(_is_int(value) and value > 0, key, "a positive integer", value)
        _check(_str_list(self.extra_args), "extra_args", "a list of strings", self.extra_args)


@dataclass
class LlavaSection:
    enabled: bool = True
    # built locally on the run's texts: "tiny"/"tiny-llama" (random Llama), "tiny-qwen2" (random Qwen2);
    # else a model path or hub name (Llama, Mistral, MPT, Qwen2/Qwen2.5)
    llm: str = "tiny"
    version: str = "v1"  # stage 2's template: v1 for Llama/Vicuna, qwen_2 / qwen_2_5 for Qwen
    deepspeed: str | None = None
    launcher: list[str] = field(default_factory=list)  # e.g. [deepspeed, --hostfile, hosts, --module]
    entry: str = "llava_patches.train"
    max_length: int = 256
    stage1: LlavaStage = field(default_factory=LlavaStage)
    stage2: LlavaStage = field(default_factory=lambda: LlavaStage(learning_rate=2e-4))
    extra_args: list[str] = field(default_factory=list)


@dataclass
class QuestionsSection:
    num: int = 60
    max_new_tokens: int = 8


@dataclass
class PipelineRecipe:
    name: str = "pipeline"
    seed: int = 0
    data: DataSection = field(default_factory=DataSection)
    mmclip: MMCLIPSection = field(default_factory=MMCLIPSection)
    ablation: AblationSection = field(default_factory=AblationSection)
    eval: Toggle = field(default_factory=Toggle)
    llava: LlavaSection = field(default_factory=LlavaSection)
    questions: QuestionsSection = field(default_factory=QuestionsSection)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _build(cls: type, values: Any, where: str) -> Any:
    """Instantiate a (nested) dataclass from a mapping, rejecting unknown keys by name."""
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise RecipeError(f"{where}: expected a mapping, got {type(values).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {unknown}; valid: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if hasattr(default, "__dataclass_fields__"):
            value = _build(type(default), value, f"{where}.{name}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except RecipeError as exc:
        raise RecipeError(f"{where}: {exc}") from None


def load_recipe(path: str | Path) -> PipelineRecipe:
    """Read a pipeline recipe YAML, resolve its file references, validate it."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"pipeline recipe {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from exc
    recipe = _build(PipelineRecipe, raw, str(path))
    base = path.resolve().parent
    recipe.data.recipe = _shipped("data", recipe.data.recipe, base, f"{path}: data.recipe")
    recipe.mmclip.config = _shipped("mmclip", recipe.mmclip.config, base, f"{path}: mmclip.config")
    if recipe.ablation.enabled:
        recipe.ablation.recipe = _shipped("mmclip", recipe.ablation.recipe, base, f"{path}: ablation.recipe")
    if recipe.llava.deepspeed:
        recipe.llava.deepspeed = _shipped("zero", recipe.llava.deepspeed, base, f"{path}: llava.deepspeed")
    for name in ("stage1", "stage2"):
        stage = getattr(recipe.llava, name)
        if stage.deepspeed:
            stage.deepspeed = _shipped("zero", stage.deepspeed, base, f"{path}: llava.{name}.deepspeed")
    for key, value in (("data.workers", recipe.data.workers), ("questions.num", recipe.questions.num)):
        if not isinstance(value, int) or value < 1:
            raise RecipeError(f"{path}: {key} must be a positive integer, got {value!r}")
    return recipe
