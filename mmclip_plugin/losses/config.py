"""``LossConfig``: which contrastive terms MMCLIP training optimises, and how."""
from __future__ import annotations

from dataclasses import dataclass, field

from .terms import ROW_REDUCTIONS, get_loss, list_losses

KIND_NAMES: tuple[str, ...] = ("perturbation", "rule", "retrieval")
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
    hard_sigmoid_reduction: str = "mean"

    def __post_init__(self) -> None:
        for term in TERM_NAMES:
            kind = getattr(self, term)
            if kind is not None and kind not in list_losses():
                raise ValueError(f"loss.{term}={kind!r} is not a loss; choices: {', '.join(list_losses())} or null")
            weight = getattr(self, f"{term}_weight")
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight >= 0:
                raise ValueError(f"loss.{term}_weight must be a number >= 0, got {weight!r}")
            setattr(self, f"{term}_weight", float(weight))
        if not self.active_terms:
            raise ValueError(
                "loss: at least one term must be on with a weight > 0 "
                f"(in_batch={self.in_batch!r} x {self.in_batch_weight}, image_negatives={self.image_negatives!r} "
                f"x {self.image_negatives_weight}, text_negatives={self.text_negatives!r} x {self.text_negatives_weight})"
            )
        if not isinstance(self.text_kind_weights, dict):
            raise ValueError(f"loss.text_kind_weights must be a mapping kind -> weight, got {self.text_kind_weights!r}")
        unknown = sorted(set(self.text_kind_weights) - set(KIND_NAMES))
        if unknown:
            raise ValueError(f"loss.text_kind_weights has unknown kinds {unknown}; known kinds: {', '.join(KIND_NAMES)}")
        weights = _default_kind_weights()
        for kind, w in self.text_kind_weights.items():
            if not isinstance(w, (int, float)) or isinstance(w, bool) or not w >= 0:
                raise ValueError(f"loss.text_kind_weights[{kind!r}] must be a number >= 0, got {w!r}")
            weights[kind] = float(w)
        self.text_kind_weights = weights
        if self.negclip_columns and self.in_batch is None:
            raise ValueError("loss.negclip_columns=true appends columns to the in-batch matrix: set loss.in_batch too")
        if self.hard_sigmoid_reduction not in ROW_REDUCTIONS:
            raise ValueError(
                f"loss.hard_sigmoid_reduction={self.hard_sigmoid_reduction!r}; choices: {', '.join(ROW_REDUCTIONS)}"
            )

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
        return any(get_loss(kind).uses_logit_bias for kind in self.active_terms.values())

    @property
    def kind_weight_vector(self) -> list[float]:
        """``text_kind_weights`` in ``KIND_NAMES`` order."""
        return [self.text_kind_weights[k] for k in KIND_NAMES]
