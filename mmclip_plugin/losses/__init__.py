"""MMCLIP losses: in-batch, image-negative and text-negative contrastive terms (see ``docs/losses.md``)."""
from mmclip_plugin.config import KIND_NAMES, ROW_REDUCTIONS, TERM_NAMES, LossConfig

from .module import HardNegativeLoss, hard_accuracy
from .scalars import check_scalars, configure_scalars
from .terms import PairLoss, SigmoidLoss, SoftmaxLoss, get_loss, list_losses, register_loss

__all__ = [
    "KIND_NAMES",
    "ROW_REDUCTIONS",
    "TERM_NAMES",
    "HardNegativeLoss",
    "LossConfig",
    "PairLoss",
    "SigmoidLoss",
    "SoftmaxLoss",
    "check_scalars",
    "configure_scalars",
    "get_loss",
    "hard_accuracy",
    "list_losses",
    "register_loss",
]
