"""Contrastive loss kinds (``softmax``, ``sigmoid``) registered by name.

Every term of :class:`~mmclip_plugin.losses.HardNegativeLoss` (in-batch, image negatives, text negatives)
is reduced to the same shape: a logits matrix ``(R, C)`` in which row ``r`` has at most one positive column
``target[r]`` (``-1``: no positive), a ``valid`` mask (False = padding, never counted) and optional
non-negative per-entry ``weight``. A loss kind only has to say what one row costs; the module builds
the rows once and reuses the kind for the hard and the in-batch cases.

- ``softmax``: cross-entropy of the positive among the row's valid entries. A weight ``w`` adds
  ``log w`` to that entry's logit, i.e. the entry counts ``w`` times in the partition function
  (``w = 1``: plain CE; ``w = 0``: excluded like padding).
- ``sigmoid``: SigLIP's binary log-likelihood, label +1 for the positive and -1 for every other valid
  entry, each entry multiplied by its weight; ``reduction="sum"`` adds them up (SigLIP, and the
  reference's image loss), ``reduction="mean"`` divides the row by its number of counted entries
  (valid and weight > 0) so that rows with different numbers of negatives weigh the same.
"""
from __future__ import annotations

import abc
from collections.abc import Callable

import torch
import torch.nn.functional as F

from mmclip_plugin.config import ROW_REDUCTIONS
from mmgeolm_core.registry import Registry

_LOSSES: Registry[type[PairLoss]] = Registry("loss")


def register_loss(name: str) -> Callable[[type[PairLoss]], type[PairLoss]]:
    """Class decorator registering a :class:`PairLoss` subclass under ``name``.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def decorator(cls: type[PairLoss]) -> type[PairLoss]:
        _LOSSES.register(name, cls)
        cls.name = name
        return cls

    return decorator


def list_losses() -> list[str]:
    """Names of the registered loss kinds, sorted."""
    return _LOSSES.names()


def get_loss(name: str) -> PairLoss:
    """A fresh instance of the loss kind registered as ``name``; unknown names raise listing the known ones."""
    return _LOSSES.get(name)()


class PairLoss(abc.ABC):
    """One way of scoring a row of image-text logits against its positive.

    Attributes:
        name: registry name (set by :func:`register_loss`).
        uses_logit_bias: whether the logits of this kind include the learnable bias. Softmax is
            invariant to a shared bias, so it never takes one (a bias only a softmax loss sees would get
            an exactly-zero gradient and DDP would report it unused).
        symmetric_in_batch: whether the in-batch term needs the text->image direction too (softmax:
            CE over columns differs from CE over rows; sigmoid: each pair is already scored once).
    """

    name: str = ""
    uses_logit_bias: bool = False
    symmetric_in_batch: bool = True

    @abc.abstractmethod
    def row_losses(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        valid: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        reduction: str = "sum",
    ) -> torch.Tensor:
        """Loss of every row.

        Args:
            logits: (R, C) scaled (and, for kinds that use it, biased) similarities.
            target: (R,) long, column of each row's positive; -1 for a row without a positive.
            valid: (R, C) bool, False for padding; None = all valid. The target entry must be valid.
            weight: (R, C) float >= 0 per-entry weights; None = all 1.
            reduction: how a row's entries combine, one of ``ROW_REDUCTIONS`` (kinds where it makes no
                difference ignore it).

        Returns:
            (R,) per-row losses.
        """

    def in_batch(
        self, i2t_rows: torch.Tensor, t2i_rows: torch.Tensor | None, num_positives: int
    ) -> torch.Tensor:
        """Combine the per-row losses of the in-batch term into a scalar.

        Args:
            i2t_rows: per-row losses of the image->text rows (``reduction="sum"``), plus any extra rows.
            t2i_rows: per-row losses of the text->image rows (only for ``symmetric_in_batch`` kinds).
            num_positives: number of positive pairs among the rows (the SigLIP normaliser).
        """
        raise NotImplementedError


def _counted(logits: torch.Tensor, valid: torch.Tensor | None, weight: torch.Tensor | None) -> torch.Tensor | None:
    """(R, C) bool of the entries that take part (valid and weight > 0), or None when all do."""
    if valid is None and weight is None:
        return None
    counted = torch.ones_like(logits, dtype=torch.bool) if valid is None else valid
    if weight is not None:
        counted = counted & (weight > 0)
    return counted


def _check_rows(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None, weight: torch.Tensor | None) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must be (R, C), got shape {tuple(logits.shape)}")
    if target.shape != logits.shape[:1]:
        raise ValueError(f"target must be ({logits.shape[0]},), got shape {tuple(target.shape)}")
    for name, mask in (("valid", valid), ("weight", weight)):
        if mask is not None and mask.shape != logits.shape:
            raise ValueError(f"{name} must have the logits' shape {tuple(logits.shape)}, got {tuple(mask.shape)}")


@register_loss("softmax")
class SoftmaxLoss(PairLoss):
    """Cross-entropy of the positive among the row (CLIP / InfoNCE)."""

    uses_logit_bias = False
    symmetric_in_batch = True

    def row_losses(self, logits, target, valid=None, weight=None, reduction="sum"):
        # every row needs a positive: a target of -1 makes cross_entropy raise (not checked here, it would sync)
        _check_rows(logits, target, valid, weight)
        if weight is not None:
            # log(0) = -inf removes the entry exactly like padding; log(1) = 0 leaves it untouched.
            logits = logits + weight.to(logits.dtype).log()
        counted = _counted(logits, valid, weight)
        if counted is not None:
            logits = logits.masked_fill(~counted, float("-inf"))
        return F.cross_entropy(logits, target, reduction="none")

    def in_batch(self, i2t_rows, t2i_rows, num_positives):
        if t2i_rows is None:
            raise ValueError("the softmax in-batch term needs the text->image rows")
        return (i2t_rows.mean() + t2i_rows.mean()) / 2


@register_loss("sigmoid")
class SigmoidLoss(PairLoss):
    """SigLIP's pairwise binary log-likelihood: +1 for the positive, -1 for every other entry."""

    uses_logit_bias = True
    symmetric_in_batch = False

    def row_losses(self, logits, target, valid=None, weight=None, reduction="sum"):
        _check_rows(logits, target, valid, weight)
        if reduction not in ROW_REDUCTIONS:
            raise ValueError(f"unknown row reduction {reduction!r}; choices: {', '.join(ROW_REDUCTIONS)}")
        columns = torch.arange(logits.shape[1], device=logits.device)
        is_positive = columns[None, :] == target[:, None]  # target -1 matches no column
        labels = torch.where(is_positive, 1.0, -1.0).to(logits.dtype)
        entries = -F.logsigmoid(labels * logits)
        if weight is not None:
            entries = entries * weight.to(entries.dtype)
        counted = _counted(logits, valid, weight)
        if counted is not None:
            entries = entries.masked_fill(~counted, 0.0)
        per_row = entries.sum(dim=1)
        if reduction == "mean":
            n = logits.new_full(per_row.shape, logits.shape[1]) if counted is None else counted.sum(1).to(per_row.dtype)
            per_row = per_row / n.clamp_min(1)
        return per_row

    def in_batch(self, i2t_rows, t2i_rows, num_positives):
        return i2t_rows.sum() / num_positives
