"""The pipeline recipe: which stages run, on what, with which settings.

A recipe is YAML read once at the edge (:func:`load_recipe`) and built by the project's one config
builder (:func:`mmgeolm_core.config.build_config`): unknown keys, wrong types (``enabled: "false"``),
NaN and duplicate keys are refused naming the file and the dotted key. File references inside a recipe
are resolved against the recipe's own folder, else as shipped short names (``demo``, ``tiny-cpu``,
``zero2``); then :func:`check_stage_settings` loads every stage's own config (data recipe, MMCLIP
config with its overrides, ablation recipe), so a bad setting fails before the first stage starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmgeolm_core.config import (
    ConfigError,
    build_config,
    check,
    check_number,
    config_to_dict,
    internal_field,
    load_yaml_mapping,
)
from mmgeolm_core.errors import InputError
from mmgeolm_core.resources import resolve_shipped


@dataclass
class DataSection:
    """The data stage: a ``mmgeolm-data`` recipe (file or shipped name), its size and worker processes."""

    recipe: str = "demo"
    num: int | None = None
    workers: int = 2

    def __post_init__(self) -> None:
        if self.num is not None:
            check_number(self.num, "num", ge=1, integer=True)
        check_number(self.workers, "workers", ge=1, integer=True)


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


@dataclass
class MMCLIPSection:
    """MMCLIP training: an ``mmclip-train`` config (file or shipped name) and ``key=value`` overrides.

    ``launcher`` prefixes the command for several processes, e.g. ``[torchrun, --nproc_per_node, "8", -m]``
    (the module ``mmclip_plugin.cli`` follows); empty: the ``mmclip-train`` console script.
    """

    enabled: bool = True
    config: str = "tiny-cpu"
    overrides: list[str] = field(default_factory=list)
    launcher: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check(all("=" in o for o in self.overrides), "overrides", "a list of key=value strings", self.overrides)


@dataclass
class Toggle:
    enabled: bool = True


@dataclass
class AblationSection:
    """The ablation of negative types (``mmclip-ablate`` on the run's data set).

    ``arms`` / ``seeds`` override the ablation recipe's (None: the recipe's own); ``jobs`` runs side by side.
    """

    enabled: bool = False
    recipe: str = "ablation-cpu"
    arms: list[str] | None = None
    seeds: list[int] | None = None
    jobs: int = 1

    def __post_init__(self) -> None:
        check_number(self.jobs, "jobs", ge=1, integer=True)
        if self.seeds is not None:
            check(bool(self.seeds) and len(set(self.seeds)) == len(self.seeds), "seeds",
                  "a non-empty list of distinct integers", self.seeds)
        if self.arms is not None:
            from mmclip_plugin.ablation.arms import list_arms  # torch-free registry module

            known = list_arms()
            check(bool(self.arms) and all(a in known for a in self.arms), "arms", f"arms among {known}", self.arms)


ABLATION_TOWER = "ablation:"
E2E_ROWS = ("original", "in_batch", "hard_negatives")


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
        check(self.max_steps > 0 or self.max_steps == -1, "max_steps", "a positive integer, or -1 for epochs",
              self.max_steps)
        check_number(self.epochs, "epochs", gt=0)
        check_number(self.learning_rate, "learning_rate", gt=0)
        check_number(self.batch_size, "batch_size", ge=1, integer=True)
        check_number(self.grad_accum, "grad_accum", ge=1, integer=True)


@dataclass
class LlavaSection:
    """LLaVA stages 1 and 2 and their answers.

    ``tower``: ``mmclip`` (the mmclip stage's trained encoder) or ``ablation:<arm>`` (that ablation arm's
    encoder for the run's seed; ``ablation:no_finetune`` is the arms' common start).
    ``stage2_data``: ``all`` (captions and every fact question of the train split) or ``paired-yes-no``
    (yes/no questions only, each asked on a positive and on its image negative with opposite answers).
    """

    enabled: bool = True
    # built locally on the run's texts: "tiny"/"tiny-llama" (random Llama), "tiny-qwen2" (random Qwen2);
    # else a model path or hub name (Llama, Mistral, MPT, Qwen2/Qwen2.5)
    llm: str = "tiny"
    version: str = "v1"  # stage 2's template: v1 for Llama/Vicuna, qwen_2 / qwen_2_5 for Qwen
    tower: str = "mmclip"
    stage2_data: str = "all"
    dataloader_workers: int = 0  # image loading beside training: one worker hides it on a 2-core machine
    deepspeed: str | None = None
    launcher: list[str] = field(default_factory=list)  # e.g. [deepspeed, --hostfile, hosts, --module]
    entry: str = "llava_patches.train"
    max_length: int = 256
    stage1: LlavaStage = field(default_factory=LlavaStage)
    stage2: LlavaStage = field(default_factory=lambda: LlavaStage(learning_rate=2e-4))
    extra_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check(bool(self.llm), "llm", "'tiny' or a model path or hub name", self.llm)
        check_number(self.max_length, "max_length", ge=8, integer=True)
        check_number(self.dataloader_workers, "dataloader_workers", ge=0, integer=True)
        check(self.stage2_data in ("all", "paired-yes-no"), "stage2_data", "all or paired-yes-no", self.stage2_data)
        check(self.tower == "mmclip" or (self.tower.startswith(ABLATION_TOWER) and len(self.tower) > len(ABLATION_TOWER)),
              "tower", "'mmclip' or 'ablation:<arm>'", self.tower)


@dataclass
class E2ESection:
    """The paper's headline in miniature: the same LLaVA stages (LLM, data, steps, seeds) with three towers,
    scored on held-out paired yes/no questions (``mmgeolm-data probe-set``; a pair counts when both
    members are right).

    Attributes:
        enabled: run the ``e2e`` stage.
        original: the ablation arm whose encoder is the tower "as it started" (``no_finetune``: the start).
        in_batch: the arm fine-tuned with random in-batch negatives only.
        hard_negatives: the arm fine-tuned with hard negatives (the paper's best: hard-negative batches).
        seeds: LLaVA seeds; seed ``s`` takes each arm's seed-``s`` encoder (the ablation must run them).
        probe: pairs to make, on the probe's own seed stream (no data build draws from it).
        probe_seed: the probe's seed (None: the run's). Choose settings on one probe seed, report another.
        probe_size: probe image side in pixels.
        relations: relations asked about (``groundable``: visible without reading letters).
        kinds: question kinds (``yes_no``; ``value`` questions need reading numbers).
        letter_free: only pairs answerable without reading vertex letters.
        max_new_tokens: tokens generated per answer (the scorer reads the first word).
        jobs: runs trained side by side (one intra-op thread each when > 1).
        bootstrap: resamples of the pairs for the confidence intervals.
    """

    enabled: bool = False
    original: str = "no_finetune"
    in_batch: str = "in_batch"
    hard_negatives: str = "all_hard_batches"
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    probe: int = 100
    probe_seed: int | None = None
    probe_size: int = 96
    relations: list[str] = field(default_factory=lambda: ["groundable"])
    kinds: list[str] = field(default_factory=lambda: ["yes_no"])
    letter_free: bool = True
    max_new_tokens: int = 4
    bootstrap: int = 2000
    jobs: int = 2

    def __post_init__(self) -> None:
        check(bool(self.seeds) and len(set(self.seeds)) == len(self.seeds), "seeds",
              "a non-empty list of distinct integers", self.seeds)
        check_number(self.max_new_tokens, "max_new_tokens", ge=1, integer=True)
        check_number(self.jobs, "jobs", ge=1, integer=True)
        check_number(self.probe, "probe", ge=1, integer=True)
        if self.probe_seed is not None:
            check_number(self.probe_seed, "probe_seed", ge=0, integer=True)
        check_number(self.probe_size, "probe_size", ge=32, integer=True)
        check_number(self.bootstrap, "bootstrap", ge=100, integer=True)
        check(bool(self.kinds) and set(self.kinds) <= {"yes_no", "value"}, "kinds", "yes_no and/or value", self.kinds)

    @property
    def arms(self) -> dict[str, str]:
        """Row name -> ablation arm, in the paper's row order."""
        return {row: getattr(self, row) for row in E2E_ROWS}


@dataclass
class QuestionsSection:
    num: int = 60
    max_new_tokens: int = 8

    def __post_init__(self) -> None:
        check_number(self.num, "num", ge=1, integer=True)
        check_number(self.max_new_tokens, "max_new_tokens", ge=1, integer=True)


BENCHMARKS = ("geoqa", "mathvista", "wemath", "mmmath", "probe")


@dataclass
class BenchSection:
    """The ``bench`` stage: benchmark files (native formats) to answer with the trained model and score.

    Each of ``geoqa``, ``mathvista``, ``wemath``, ``mmmath`` is a question file (relative to the recipe,
    GeoQA's ``test_answers.jsonl`` beside it); ``probe`` is a probe folder, or a number of pairs to make
    with ``mmgeolm-data probe-set`` from the run's seed. Unset benchmarks are skipped.
    """

    geoqa: str | None = None
    mathvista: str | None = None
    wemath: str | None = None
    mmmath: str | None = None
    probe: str | int | None = None
    probe_size: int = 112
    batch_size: int = 8
    max_new_tokens: int = 64
    prompt: str = "official"
    mode: str = "robust"

    def __post_init__(self) -> None:
        if isinstance(self.probe, int):
            check_number(self.probe, "probe", ge=1, integer=True)
        check_number(self.probe_size, "probe_size", ge=32, integer=True)
        check_number(self.batch_size, "batch_size", ge=1, integer=True)
        check_number(self.max_new_tokens, "max_new_tokens", ge=1, integer=True)
        check(self.prompt in ("official", "answer-line"), "prompt", "official or answer-line", self.prompt)
        check(self.mode in ("official", "robust"), "mode", "official or robust", self.mode)

    def selected(self) -> dict[str, str | int]:
        """``{benchmark: file or probe size}`` of the benchmarks set, in table order."""
        return {name: getattr(self, name) for name in BENCHMARKS if getattr(self, name) is not None}


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
    bench: BenchSection = field(default_factory=BenchSection)
    e2e: E2ESection = field(default_factory=E2ESection)
    source: str = internal_field("<recipe>")

    def __post_init__(self) -> None:
        check_number(self.seed, "seed", ge=0, integer=True)
        uses_ablation = self.e2e.enabled or (self.llava.enabled and self.llava.tower.startswith(ABLATION_TOWER))
        if uses_ablation and not self.ablation.enabled:
            raise ConfigError("the ablation stage is off but its encoders are asked for "
                              f"(llava.tower={self.llava.tower!r}, e2e.enabled={self.e2e.enabled})", key="ablation.enabled")
        if self.llava.enabled and self.llava.tower == "mmclip" and not self.mmclip.enabled:
            raise ConfigError("llava.tower is 'mmclip' but the mmclip stage is off: name an ablation arm "
                              "('ablation:<arm>') or turn mmclip on", key="llava.tower")
        if self.e2e.enabled and not self.llava.enabled:
            raise ConfigError("e2e runs the LLaVA stages of the llava section, which is off", key="e2e.enabled")

    def to_dict(self) -> dict[str, Any]:
        out = config_to_dict(self)
        out.pop("source")
        return out


def load_recipe(path: str | Path) -> PipelineRecipe:
    """Read a pipeline recipe (a file or a shipped short name), resolve its file references, validate it.

    Raises:
        ConfigError: unreadable YAML, an unknown key, a wrong type or value, a reference to nothing.
    """
    path = resolve_shipped("pipeline-recipe", path)
    recipe = build_config(PipelineRecipe, load_yaml_mapping(path, "pipeline recipe"), str(path),
                          internal={"source": str(path)})
    base = path.parent

    def shipped(kind: str, value: str, key: str) -> str:
        try:
            return str(resolve_shipped(kind, value, base))
        except InputError as exc:
            raise ConfigError(str(exc), key=key, source=str(path)) from None

    recipe.data.recipe = shipped("data-recipe", recipe.data.recipe, "data.recipe")
    recipe.mmclip.config = shipped("mmclip-config", recipe.mmclip.config, "mmclip.config")
    if recipe.ablation.enabled:
        recipe.ablation.recipe = shipped("mmclip-config", recipe.ablation.recipe, "ablation.recipe")
    if recipe.llava.deepspeed:
        recipe.llava.deepspeed = shipped("zero-config", recipe.llava.deepspeed, "llava.deepspeed")
    for name, value in recipe.bench.selected().items():
        if isinstance(value, str):
            target = Path(value) if Path(value).is_absolute() else base / value
            if not target.exists():
                raise ConfigError(f"{target} does not exist (expected the benchmark's question file)",
                                  key=f"bench.{name}", source=str(path))
            setattr(recipe.bench, name, str(target.resolve()))
    for name in ("stage1", "stage2"):
        stage = getattr(recipe.llava, name)
        if stage.deepspeed:
            stage.deepspeed = shipped("zero-config", stage.deepspeed, f"llava.{name}.deepspeed")
    return recipe


def check_stage_settings(recipe: PipelineRecipe) -> None:
    """Load every stage's own config as its stage will, so that a bad setting fails before any stage runs.

    Raises:
        ConfigError: the data recipe (with ``data.num``), the MMCLIP config (with ``mmclip.overrides``)
            or the ablation recipe is invalid; the message names that file and key.
    """
    from data_recipes.build.recipe import load_recipe as load_data_recipe
    from mmclip_plugin.ablation.config import load_ablation
    from mmclip_plugin.config import load_config

    checks = [("data", lambda: load_data_recipe(recipe.data.recipe).with_overrides(num=recipe.data.num,
                                                                                     seed=recipe.seed))]
    if recipe.mmclip.enabled:
        checks.append(("mmclip", lambda: load_config(recipe.mmclip.config, recipe.mmclip.overrides)))
    if recipe.ablation.enabled:
        checks.append(("ablation", lambda: check_ablation_arms(recipe, load_ablation(recipe.ablation.recipe))))
    for section, load in checks:
        try:
            load()
        except ConfigError as exc:
            raise ConfigError(f"the {section} stage's settings: {exc}", source=recipe.source) from None


def ablation_arms_and_seeds(recipe: PipelineRecipe, ablation: Any) -> tuple[list[str], list[int]]:
    """The arms and seeds the ablation stage runs: the pipeline recipe's, else the ablation recipe's."""
    return (list(recipe.ablation.arms or ablation.arms), list(recipe.ablation.seeds or ablation.seeds))


def check_ablation_arms(recipe: PipelineRecipe, ablation: Any) -> None:
    """The arms and seeds that ``llava.tower`` and ``e2e`` take encoders from are ones the ablation runs.

    Raises:
        ConfigError: naming the arm or seed missing and what the ablation runs.
    """
    arms, seeds = ablation_arms_and_seeds(recipe, ablation)
    wanted = {"llava.tower": recipe.llava.tower[len(ABLATION_TOWER):]} if (
        recipe.llava.enabled and recipe.llava.tower.startswith(ABLATION_TOWER)) else {}
    if recipe.e2e.enabled:
        wanted.update({f"e2e.{row}": arm for row, arm in recipe.e2e.arms.items()})
        missing = sorted(set(recipe.e2e.seeds) - set(seeds))
        if missing:
            raise ConfigError(f"seeds {missing} are not among the ablation's seeds {seeds}", key="e2e.seeds")
    for key, arm in wanted.items():
        if arm not in arms:
            raise ConfigError(f"arm {arm!r} is not among the ablation's arms {arms}", key=key)
    if recipe.llava.enabled and recipe.llava.tower.startswith(ABLATION_TOWER) and recipe.seed not in seeds:
        raise ConfigError(f"the run's seed {recipe.seed} is not among the ablation's seeds {seeds}", key="llava.tower")
