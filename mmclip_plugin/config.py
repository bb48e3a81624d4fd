"""Training configuration: nested dataclasses, read from YAML with dotted ``key=value`` overrides.

YAML is only read here (:func:`load_config`); everything else takes a :class:`TrainConfig`. Values are
checked by the project's one config builder (:func:`mmgeolm_core.config.build_config`): unknown keys,
wrong types, NaN and duplicate YAML keys are refused with a :class:`ConfigError` naming the file and the
dotted key. The resolved config is saved next to every checkpoint (:func:`save_config`), so any
checkpoint says how it was made. Importing this module loads neither torch nor open_clip.

Example::

    cfg = load_config("mmclip_plugin/configs/tiny-cpu.yaml", ["data.train=runs/demo/data", "optim.lr=1e-3"])
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from data_recipes.formats.dataset import TEXT_KINDS
from mmgeolm_core.config import (
    ConfigError,
    build_config,
    check,
    check_choice,
    check_number,
    config_to_dict,
    load_yaml_mapping,
    merge_dicts,
    parse_overrides,
    save_config,
)
from mmgeolm_core.resources import resolve_shipped

SAMPLE_MODES = ("fixed", "random")
DEVICES = ("auto", "cpu", "cuda")
HF_PREFIX = "hf:"
"""``model.pretrained: hf:<dir>`` starts from a transformers CLIPModel / SiglipModel directory."""
TOKEN_CHECKS = ("warn", "drop", "error", "off")
"""What ``mmclip-train`` does with hard negatives that tokenize like their positive."""
PRECISIONS = ("fp32", "bf16", "fp16")
ROW_REDUCTIONS: tuple[str, ...] = ("mean", "sum")
"""How the entries of a sigmoid hard-negative row combine."""

__all__ = [
    "ConfigError", "DataConfig", "LossConfig", "ModelConfig", "OptimConfig", "TrainConfig", "build_config", "config_to_dict",
    "load_config", "merge_dicts", "save_config",
]


# ------------------------------------------------------------------------------------- model
@dataclass
class ModelConfig:
    """How to build the encoder pair.

    Attributes:
        name: open_clip model name (built-in, or registered from ``arch_json`` / our ``model_configs``),
            ``local-dir:<mmclip checkpoint>`` (e.g. written by ``mmclip-import``), or ``hf`` together with
            ``pretrained: hf:<dir>``.
        pretrained: open_clip pretrained tag (e.g. ``openai``), a local weights file, or ``hf:<dir>``: a
            transformers CLIPModel / SiglipModel directory converted when the model is built (architecture,
            weights, tokenizer and preprocessing all come from it; ``name`` must then be ``hf``); None for
            random init.
        arch_json: optional path to a custom architecture JSON (its file stem is the model name).
        lock_text: freeze the text tower (except its last ``lock_text_unlocked_layers`` blocks).
        lock_text_unlocked_layers: text blocks left trainable when ``lock_text``.
        freeze_vision_blocks: freeze the patch embedding and the first N vision blocks.
        freeze_bn_stats: the image tower's batch norms (conv towers) normalise with their running
            statistics during training and stop updating them; their affine weights still train. A batch
            statistic is a shortcut in hard-negative batches, whose images are near-copies of each other:
            it is unlike the statistics any image meets at test time (see ``docs/losses.md``).
        grad_checkpointing: trade compute for memory in both towers.
        force_image_size: override the architecture's input resolution.
        init_logit_bias: bias given to a model without one when a sigmoid loss needs it.
    """

    name: str = "mmclip-tiny-vit"
    pretrained: str | None = None
    arch_json: str | None = None
    lock_text: bool = False
    lock_text_unlocked_layers: int = 0
    freeze_vision_blocks: int = 0
    freeze_bn_stats: bool = False
    grad_checkpointing: bool = False
    force_image_size: int | None = None
    init_logit_bias: float = -10.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(bool(self.name), "name", "an open_clip model name or 'local-dir:<path>'", self.name)
        from_hf = isinstance(self.pretrained, str) and self.pretrained.startswith(HF_PREFIX)
        check(not from_hf or len(self.pretrained) > len(HF_PREFIX), "pretrained", "hf:<transformers model directory>",
              self.pretrained)
        check(from_hf == (self.name == "hf"), "name",
              "'hf' exactly when pretrained is 'hf:<dir>' (the architecture then comes from <dir>/config.json)",
              self.name)
        check_number(self.freeze_vision_blocks, "freeze_vision_blocks", ge=0, integer=True)
        check_number(self.lock_text_unlocked_layers, "lock_text_unlocked_layers", ge=0, integer=True)
        if self.force_image_size is not None:
            check_number(self.force_image_size, "force_image_size", ge=8, integer=True)


# ------------------------------------------------------------------------------------- loss
KIND_NAMES: tuple[str, ...] = TEXT_KINDS
"""Kinds of caption negatives; ``neg_text_kind`` holds indices into this tuple."""

TERM_NAMES: tuple[str, ...] = ("in_batch", "image_negatives", "text_negatives")


def _default_kind_weights() -> dict[str, float]:
    return {kind: 1.0 for kind in KIND_NAMES}


@dataclass
class LossConfig:
    """The loss terms and their weights.

    Attributes:
        in_batch: in-batch contrastive term over all pairs of the (gathered) batch: ``"softmax"`` (CLIP,
            open_clip ``ClipLoss``), ``"sigmoid"`` (SigLIP, open_clip ``SigLipLoss``) or None (off).
        image_negatives: each caption against its own image and its K image negatives.
        text_negatives: each image against its own caption and its K caption negatives.
        in_batch_weight: weight of the in-batch term in the total.
        image_negatives_weight: weight of the image-negative term.
        text_negatives_weight: weight of the text-negative term.
        text_kind_weights: per-kind weight of a caption negative (keys from ``KIND_NAMES``; missing
            keys weigh 1). Softmax: the negative counts ``w`` times in the partition function; sigmoid:
            its term is multiplied by ``w``; ``w = 0`` removes that kind. Applies wherever caption
            negatives appear (the text-negative term and NegCLIP columns).
        negclip_columns: also append the hard negatives as extra columns of the in-batch matrix (NegCLIP):
            caption negatives as extra text columns of the image->text rows, image negatives as extra
            image columns of the text->image rows (sigmoid: as extra rows scored -1 against every text).
        gather: gather features across ranks for the in-batch term (with gradients).
        local_loss: open_clip's ``local_loss``: with ``gather`` each rank computes the softmax in-batch
            rows of its own samples only (against all columns) instead of the full global matrix.
        drop_false_negatives: leave out of the in-batch term the entries whose caption or image is the
            row's own (two samples with the same caption text, or the same image file): ranking such a
            caption below the positive teaches a contradiction. Hard-negative batches are made of
            near-duplicates, where this happens often (see ``docs/losses.md``).
        hard_sigmoid_reduction: how the 1 + K entries of a sigmoid hard-negative row combine: ``"mean"``
            (divide by the row's number of valid entries, the default) or ``"sum"`` (the public
            reference's image loss).
    """

    in_batch: str | None = "softmax"
    image_negatives: str | None = "sigmoid"
    text_negatives: str | None = "softmax"
    in_batch_weight: float = 1.0
    image_negatives_weight: float = 1.0
    text_negatives_weight: float = 1.0
    text_kind_weights: dict[str, float] = field(default_factory=_default_kind_weights)
    negclip_columns: bool = False
    gather: bool = True
    local_loss: bool = False
    drop_false_negatives: bool = True
    hard_sigmoid_reduction: str = "mean"

    def __post_init__(self) -> None:
        from mmclip_plugin.losses.terms import (
            list_losses,  # the loss registry (torch) only when a config is built
        )

        kinds = list_losses()
        for term in TERM_NAMES:
            kind = getattr(self, term)
            check(kind is None or kind in kinds, term, f"null or one of {kinds}", kind)
            check_number(getattr(self, f"{term}_weight"), f"{term}_weight", ge=0)
            setattr(self, f"{term}_weight", float(getattr(self, f"{term}_weight")))
        if not self.active_terms:
            raise ConfigError(
                "at least one term must be on with a weight > 0 "
                f"(in_batch={self.in_batch!r} x {self.in_batch_weight}, image_negatives={self.image_negatives!r} "
                f"x {self.image_negatives_weight}, text_negatives={self.text_negatives!r} x {self.text_negatives_weight})"
            )
        check(isinstance(self.text_kind_weights, dict), "text_kind_weights", "a mapping kind -> weight",
              self.text_kind_weights)
        weights = _default_kind_weights()
        for kind, w in self.text_kind_weights.items():
            check_choice(kind, "text_kind_weights", KIND_NAMES)
            check_number(w, f"text_kind_weights.{kind}", ge=0)
            weights[kind] = float(w)
        self.text_kind_weights = weights
        check(not (self.negclip_columns and self.in_batch is None), "negclip_columns",
              "false while in_batch is null (NegCLIP columns are appended to the in-batch matrix)", True)
        check_choice(self.hard_sigmoid_reduction, "hard_sigmoid_reduction", ROW_REDUCTIONS)

    @property
    def active_terms(self) -> dict[str, str]:
        """Term name -> loss kind, for the terms that are on and weigh more than 0."""
        return {
            term: getattr(self, term)
            for term in TERM_NAMES
            if getattr(self, term) is not None and getattr(self, f"{term}_weight") > 0
        }

    @property
    def uses_logit_bias(self) -> bool:
        """True iff an active term is a kind that adds the logit bias (sigmoid)."""
        from mmclip_plugin.losses.terms import get_loss

        return any(get_loss(kind).uses_logit_bias for kind in self.active_terms.values())

    @property
    def kind_weight_vector(self) -> list[float]:
        """``text_kind_weights`` in ``KIND_NAMES`` order."""
        return [self.text_kind_weights[k] for k in KIND_NAMES]


# ------------------------------------------------------------------------------------- data
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
        tokenization_check: at start, find hard negatives whose token ids (the model's own tokenizer,
            cleaning and truncation included) equal their positive's: ``warn`` reports them, ``drop`` also
            removes them from training, ``error`` refuses to train, ``off`` skips the check.
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
    tokenization_check: str = "warn"

    def __post_init__(self) -> None:
        check_number(self.batch_size, "batch_size", ge=1, integer=True)
        check_choice(self.tokenization_check, "tokenization_check", TOKEN_CHECKS)
        for name in ("image_negatives", "text_negatives", "num_workers"):
            check_number(getattr(self, name), name, ge=0, integer=True)
        check_choice(self.sample, "sample", SAMPLE_MODES)
        check_choice(self.reference_text_kind, "reference_text_kind", TEXT_KINDS)
        kinds = self.text_negative_kinds
        check(kinds is None or (bool(kinds) and set(kinds) <= set(TEXT_KINDS)), "text_negative_kinds",
              f"null or a non-empty list of {list(TEXT_KINDS)}", kinds)
        check(self.train != [], "train", "a data-set directory, a reference JSON file or a non-empty list of them",
              self.train)

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
        check_number(self.lr, "lr", gt=0)
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "two numbers in [0, 1)",
              self.betas)
        check_number(self.weight_decay, "weight_decay", ge=0)
        check_number(self.eps, "eps", gt=0)
        check_number(self.warmup_steps, "warmup_steps", ge=0, integer=True)
        check_number(self.warmup_ratio, "warmup_ratio", ge=0, lt=1)
        check_number(self.min_lr_ratio, "min_lr_ratio", ge=0, le=1)
        check_number(self.grad_accum_steps, "grad_accum_steps", ge=1, integer=True)
        check_number(self.grad_clip, "grad_clip", ge=0)


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
        model: encoder pair (see :class:`ModelConfig`).
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
        check(self.steps is not None or self.epochs is not None, "steps", "steps (optimizer steps) or epochs set",
              None)
        for name in ("steps", "epochs"):
            if getattr(self, name) is not None:
                check_number(getattr(self, name), name, ge=1, integer=True)
        check_choice(self.device, "device", DEVICES)
        check_choice(self.precision, "precision", PRECISIONS)
        check_number(self.log_every, "log_every", ge=1, integer=True)
        check_number(self.save_every, "save_every", ge=0, integer=True)
        check_number(self.keep_last, "keep_last", ge=1, integer=True)
        for term in ("image_negatives", "text_negatives"):
            if term in self.loss.active_terms and getattr(self.data, term) == 0:
                raise ConfigError(f"{getattr(self.loss, term)!r} is on but data.{term}=0 gives it no negatives: "
                                  f"set data.{term} > 0 or loss.{term}=null", key=f"loss.{term}")


# ------------------------------------------------------------------------------------- YAML edge
def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML train config and apply dotted ``key=value`` overrides.

    Args:
        path: the YAML file, or a shipped config's short name (None: defaults only).
        overrides: ``key=value`` strings; nested keys dotted (``data.train=DIR``).

    Raises:
        ConfigError: unreadable or empty YAML, duplicate or unknown keys, wrong types or invalid values
            (naming the file and the key).
    """
    if path is not None:
        path = resolve_shipped("mmclip-config", path)
    raw: dict[str, Any] = load_yaml_mapping(path, "training config") if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    if overrides:
        source = f"{source} (with overrides {' '.join(overrides)})"
        raw = merge_dicts(raw, parse_overrides(overrides))
    return build_config(TrainConfig, raw, source)
