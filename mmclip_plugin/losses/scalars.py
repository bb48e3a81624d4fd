"""Keep the learnable logit scale and bias consistent with the configured loss terms.

A parameter that no loss term touches gets no gradient; DDP then fails ("Expected to have finished
reduction in the prior iteration ...") unless ``find_unused_parameters`` is on, the bug of the public
reference. The scale takes part in every term; the bias only in sigmoid terms, so it is frozen otherwise.
"""
from __future__ import annotations

from typing import Protocol

from torch import nn

from mmclip_plugin.config import LossConfig


class HasLogitScalars(Protocol):
    """What these helpers need from a model (``MMCLIPModel`` satisfies it)."""

    @property
    def logit_scale(self) -> nn.Parameter: ...

    @property
    def logit_bias(self) -> nn.Parameter | None: ...

    def ensure_logit_bias(self, init: float | None = None) -> nn.Parameter: ...


def configure_scalars(model: HasLogitScalars, cfg: LossConfig, init_bias: float | None = None) -> None:
    """Give the model a learnable bias when a sigmoid term needs one; freeze the bias when no term uses it.

    Args:
        model: the model whose ``logit_bias`` to adjust.
        cfg: the loss configuration.
        init_bias: initial value of a newly created bias (None: the model's default).
    """
    if cfg.uses_logit_bias:
        model.ensure_logit_bias(init_bias)
    elif model.logit_bias is not None:
        model.logit_bias.requires_grad_(False)


def check_scalars(model: HasLogitScalars, cfg: LossConfig) -> None:
    """Raise unless every trainable logit scalar takes part in the configured loss.

    Raises:
        ValueError: the model has a trainable ``logit_bias`` but no active term is sigmoid.
    """
    bias = model.logit_bias
    if bias is not None and bias.requires_grad and not cfg.uses_logit_bias:
        terms = ", ".join(f"{t}={k}" for t, k in cfg.active_terms.items())
        raise ValueError(
            f"the model's logit_bias is trainable but no active loss term uses it ({terms}; only sigmoid terms add "
            "the bias), so it would get no gradient and DDP would fail on an unused parameter: freeze it with "
            "mmclip_plugin.losses.configure_scalars(model, cfg) or model.logit_bias.requires_grad_(False)"
        )
