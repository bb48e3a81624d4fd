"""Ablation arms: each a set of overrides of one base training config, registered by name.

An arm is ``fn(base: TrainConfig) -> nested overrides`` registered with :func:`register_arm`; a recipe
lists the arms it runs, in table order (default :data:`PAPER_ARMS`, the order of the paper's Table 3).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmclip_plugin.config import TrainConfig
from mmgeolm_core.registry import Registry


# ------------------------------------------------------------------------------------- arms
@dataclass(frozen=True)
class Arm:
    """One ablation arm.

    Attributes:
        name: registry name (used in paths and the JSON).
        label: the table's row label.
        trains: False for the untrained starting model.
        overrides: base config -> nested overrides (a mapping merged onto the base config).
    """

    name: str
    label: str
    trains: bool
    overrides: Callable[[TrainConfig], dict[str, Any]]


_ARMS: Registry[Arm] = Registry("ablation arm")

PAPER_ARMS = ("no_finetune", "in_batch", "retrieval", "rule", "image", "all", "all_hard_batches")
"""The default arms, in the order of the paper's table (the table lists arms in the recipe's order)."""


def register_arm(name: str, label: str, trains: bool = True) -> Callable[[Callable], Callable]:
    """Register ``fn(base: TrainConfig) -> overrides`` as arm ``name``; a duplicate name raises."""

    def decorator(fn: Callable[[TrainConfig], dict[str, Any]]) -> Callable[[TrainConfig], dict[str, Any]]:
        _ARMS.register(name, Arm(name, label, trains, fn))
        return fn

    return decorator


def list_arms() -> list[str]:
    """Registered arm names, sorted."""
    return _ARMS.names()


def get_arm(name: str) -> Arm:
    """The arm called ``name``; raises listing the known arms."""
    return _ARMS.get(name)


def _kind(value: str | None, default: str) -> str:
    return value or default


def _terms(base: TrainConfig, image: bool, text: list[str] | None, hard_batches: bool = False) -> dict[str, Any]:
    """In-batch term always on; the image-/text-negative terms on or off, with the base's loss kinds."""
    loss = base.loss
    return {
        "loss": {
            "in_batch": _kind(loss.in_batch, "softmax"),
            "image_negatives": _kind(loss.image_negatives, "sigmoid") if image else None,
            "text_negatives": _kind(loss.text_negatives, "softmax") if text else None,
            "negclip_columns": loss.negclip_columns and (image or bool(text)),
        },
        "data": {
            "image_negatives": base.data.image_negatives if image else 0,
            "text_negatives": base.data.text_negatives if text else 0,
            "text_negative_kinds": text,
            "hard_batches": hard_batches,
        },
    }


@register_arm("no_finetune", "no fine-tuning (starting model)", trains=False)
def _no_finetune(base: TrainConfig) -> dict[str, Any]:
    return {}


@register_arm("in_batch", "in-batch only (random negatives)")
def _in_batch(base: TrainConfig) -> dict[str, Any]:
    return _terms(base, image=False, text=None)


@register_arm("retrieval", "+ retrieval text negatives")
def _retrieval(base: TrainConfig) -> dict[str, Any]:
    return _terms(base, image=False, text=["retrieval"])


@register_arm("rule", "+ rule text negatives")
def _rule(base: TrainConfig) -> dict[str, Any]:
    return _terms(base, image=False, text=["rule"])


@register_arm("image", "+ image negatives")
def _image(base: TrainConfig) -> dict[str, Any]:
    return _terms(base, image=True, text=None)


@register_arm("all", "all negative types")
def _all(base: TrainConfig) -> dict[str, Any]:
    return _terms(base, image=True, text=["perturbation", "rule", "retrieval"])


@register_arm("all_hard_batches", "all + hard-negative batches")
def _all_hard_batches(base: TrainConfig) -> dict[str, Any]:
    return _terms(base, image=True, text=["perturbation", "rule", "retrieval"], hard_batches=True)

