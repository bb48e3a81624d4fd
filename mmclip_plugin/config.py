"""Training configuration: nested dataclasses, read from YAML with dotted ``key=value`` overrides.

YAML is only read here (:func:`load_config`); everything else takes a :class:`TrainConfig`.
Values are type-checked against the dataclass annotations, unknown keys raise an error naming the
key and the valid ones, and the resolved config is saved next to every checkpoint
(:func:`save_config`), so any checkpoint says how it was made.

Example::

    cfg = load_config("mmclip_plugin/configs/tiny-cpu.yaml", ["data.train=runs/demo/data", "optim.lr=1e-3"])
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from mmclip_plugin.losses import LossConfig
from mmclip_plugin.model import PRECISIONS, ModelConfig

SAMPLE_MODES = ("fixed", "random")
TEXT_KINDS = ("perturbation", "rule", "retrieval")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the source, key and expectation."""


@dataclass
class DataConfig:
    """Where training data comes from and how batches are made.

    Attributes:
        train: a data-set directory built by ``mmgeolm-data`` (holding ``samples.jsonl``), a
            reference-format JSON file (image- or text-negative list), or a list of them.
        split: which ``split`` of a data-set directory to train on (reference JSON has no split).
        batch_size: samples per micro-batch per process.
        image_negatives: K image negatives per sample (padded with a mask when fewer exist; the
            reference uses 9).
        text_negatives: K caption negatives per sample (the reference uses 5).
        sample: ``fixed`` takes the first K negatives; ``random`` draws K seeded by (seed, epoch, index).
        hard_batches: also expose every image negative (with its own caption) as an item and batch each
            positive together with its negatives (grouped sampler), so in-batch negatives are hard.
        num_workers: DataLoader worker processes.
        augment: use the model's random-resized-crop training transform (off: crops cut diagram labels).
        image_root: base folder for relative image paths in reference JSON (default: the JSON's folder).
        reference_text_kind: kind given to the reference's ``negative_captions`` (it does not record one).
        drop_last: drop the last incomplete batch of an epoch.
        text_negative_kinds: keep only caption negatives of these kinds (None: every kind); the
            ablation's retrieval-only and rule-only arms use it.
    """

    train: str | list[str] | None = None
    split: str = "train"
    batch_size: int = 8
    image_negatives: int = 9
    text_negatives: int = 5
    sample: str = "fixed"
    hard_batches: bool = False
    num_workers: int = 0
    augment: bool = False
    image_root: str | None = None
    reference_text_kind: str = "rule"
    drop_last: bool = True
    text_negative_kinds: list[str] | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size",):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("image_negatives", "text_negatives", "num_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"data.{name} must be >= 0, got {getattr(self, name)}")
        if self.sample not in SAMPLE_MODES:
            raise ConfigError(f"data.sample must be one of {SAMPLE_MODES}, got {self.sample!r}")
        if self.reference_text_kind not in TEXT_KINDS:
            raise ConfigError(f"data.reference_text_kind must be one of {TEXT_KINDS}, got {self.reference_text_kind!r}")
        if self.text_negative_kinds is not None and (
            not self.text_negative_kinds or set(self.text_negative_kinds) - set(TEXT_KINDS)
        ):
            raise ConfigError(
                f"data.text_negative_kinds must be a non-empty list of {TEXT_KINDS} or null, got {self.text_negative_kinds!r}"
            )
        if isinstance(self.train, list) and not self.train:
            raise ConfigError("data.train is an empty list; give a data-set directory or a reference JSON file")

    @property
    def train_paths(self) -> list[str]:
        """``train`` as a list (empty when unset)."""
        if self.train is None:
            return []
        return [self.train] if isinstance(self.train, str) else list(self.train)


@dataclass
class OptimConfig:
    """AdamW with a cosine schedule and linear warmup.

    Attributes:
        lr: peak learning rate.
        weight_decay: AdamW weight decay; never applied to gains, biases, embeddings of size 1-D or logit scalars.
        betas: AdamW betas.
        eps: AdamW epsilon.
        warmup_steps: linear warmup length in optimizer steps (wins over ``warmup_ratio`` when > 0).
        warmup_ratio: warmup as a fraction of the total steps.
        min_lr_ratio: cosine floor as a fraction of ``lr``.
        grad_accum_steps: micro-batches per optimizer step.
        grad_clip: max global gradient norm (0 disables clipping).
    """

    lr: float = 5e-4
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_steps: int = 0
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.0
    grad_accum_steps: int = 1
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        if self.weight_decay < 0 or self.eps <= 0:
            raise ConfigError(f"optim.weight_decay must be >= 0 and optim.eps > 0, got {self.weight_decay}, {self.eps}")
        if self.warmup_steps < 0 or not 0 <= self.warmup_ratio < 1:
            raise ConfigError(
                f"optim.warmup_steps must be >= 0 and optim.warmup_ratio in [0, 1), got {self.warmup_steps}, {self.warmup_ratio}"
            )
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.grad_accum_steps < 1:
            raise ConfigError(f"optim.grad_accum_steps must be >= 1, got {self.grad_accum_steps}")
        if self.grad_clip < 0:
            raise ConfigError(f"optim.grad_clip must be >= 0 (0 disables), got {self.grad_clip}")


@dataclass
class TrainConfig:
    """Everything one ``mmclip-train`` run needs.

    Attributes:
        output_dir: where ``metrics.jsonl``, ``checkpoints/`` and ``final/`` are written.
        seed: seeds the data order, negative sampling and model initialisation.
        steps: optimizer steps to run (wins over ``epochs`` when both are set).
        epochs: passes over the data when ``steps`` is unset.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        precision: ``fp32``, or ``bf16`` / ``fp16`` autocast (fp16 with a gradient scaler).
        log_every: optimizer steps between metric lines.
        save_every: optimizer steps between checkpoints (0: only at the end).
        keep_last: checkpoints kept in ``output_dir/checkpoints`` (older ones are deleted).
        tensorboard: also log to TensorBoard (needs the ``tensorboard`` package).
        plot: write ``loss_curve.png`` at the end.
        progress: show a tqdm bar on rank 0.
        model: encoder pair (see :class:`~mmclip_plugin.model.ModelConfig`).
        loss: loss terms (see :class:`~mmclip_plugin.losses.LossConfig`).
        data: data sets and batching.
        optim: optimizer and schedule.
    """

    output_dir: str = "runs/mmclip"
    seed: int = 0
    steps: int | None = None
    epochs: int | None = 1
    device: str = "auto"
    precision: str = "fp32"
    log_every: int = 10
    save_every: int = 0
    keep_last: int = 2
    tensorboard: bool = False
    plot: bool = True
    progress: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        if self.steps is None and self.epochs is None:
            raise ConfigError("set steps (optimizer steps) or epochs")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.log_every < 1 or self.save_every < 0 or self.keep_last < 1:
            raise ConfigError(
                f"need log_every >= 1, save_every >= 0, keep_last >= 1; got {self.log_every}, {self.save_every}, {self.keep_last}"
            )
        for term, k_key in (("image_negatives", "image_negatives"), ("text_negatives", "text_negatives")):
            if term in self.loss.active_terms and getattr(self.data, k_key) == 0:
                raise ConfigError(
                    f"loss.{term}={getattr(self.loss, term)!r} is on but data.{k_key}=0 gives it no negatives: "
                    f"set data.{k_key} > 0 or loss.{term}=null"
                )


# ------------------------------------------------------------------------------------- building
def build_config(cls: type, data: Mapping[str, Any] | None, source: str = "<dict>", prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a (nested) mapping, checking keys and value types.

    Args:
        cls: the dataclass to build (nested dataclass fields are built recursively).
        data: the values; missing keys keep their defaults.
        source: where the values came from, for error messages (a file name).
        prefix: dotted path of ``cls`` inside the root config, for error messages.

    Raises:
        ConfigError: on an unknown key, a value of the wrong type, or a failed validation.
    """
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: {prefix or 'config'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f"under '{prefix}'" if prefix else "at top level"
        raise ConfigError(
            f"{source}: unknown key '{_join(prefix, unknown[0])}'; valid keys {where}: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        key = _join(prefix, name)
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = build_config(tp, value, source, key)
        else:
            kwargs[name] = _check_type(value, tp, key, source)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: invalid {prefix or 'config'}: {exc}") from exc


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_type(value: Any, tp: Any, key: str, source: str) -> Any:
    """Return ``value`` converted to annotation ``tp`` (ints to floats, numeric strings to numbers)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = ConfigError(f"{source}: {key} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is type(None):
                continue
            try:
                return _check_type(value, option, key, source)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: {key} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, Sequence, tuple):
        if not isinstance(value, list | tuple):
            raise bad
        item = args[0] if args else Any
        return [_check_type(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise bad
        kt, vt = args if args else (Any, Any)
        return {_check_type(k, kt, key, source): _check_type(v, vt, f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if tp is type(None):
        if value is not None:
            raise bad
        return None
    raise ConfigError(f"{source}: {key} has an unsupported annotation {tp!r}")


# ------------------------------------------------------------------------------------- YAML edge
def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn ``["data.train=DIR", "optim.lr=1e-3"]`` into a nested dict (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value (nested keys dotted, e.g. data.train=DIR)")
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: '{part}' was already given a value, not a section")
            node = child
        node[parts[-1]] = value
    return nested


def merge_dicts(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive merge: nested mappings merge, everything else is replaced."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML train config and apply dotted ``key=value`` overrides.

    Args:
        path: the YAML file (None: defaults only).
        overrides: ``key=value`` strings; nested keys dotted (``data.train=DIR``).

    Raises:
        ConfigError: unreadable YAML, unknown keys, wrong types or invalid values (naming file and key).
    """
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
        raw = dict(loaded or {})
    if overrides:
        source = f"{source} (with overrides {' '.join(overrides)})"
        raw = merge_dicts(raw, parse_overrides(overrides))
    return build_config(TrainConfig, raw, source)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write ``cfg`` as YAML atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path
