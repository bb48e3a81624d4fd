"""Our extra training arguments, parsed apart from upstream's ``HfArgumentParser``.

Upstream's parser rejects unknown flags, so :func:`parse_extra_args` takes ours out of the command line
and returns the rest untouched for upstream. The semantics follow LLaVA-NeXT: the vision tower is
trained in stage 2 when ``--unfreeze_mm_vision_tower True``, optionally with its own learning rate.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def parse_bool(value: str) -> bool:
    """Parse HF-style booleans (``True``/``False``/``1``/``0``/``yes``/``no``), case-insensitively."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean ({sorted(_TRUE | _FALSE)}), got {value!r}")


@dataclasses.dataclass(frozen=True)
class ExtraArguments:
    """Arguments upstream ``llava.train.train`` does not know.

    Attributes:
        unfreeze_mm_vision_tower: train the MMCLIP tower together with the projector and LLM (stage 2);
            the trained tower is saved as an MMCLIP checkpoint inside every LLaVA checkpoint.
        mm_vision_tower_lr: learning rate of the tower's parameter groups (None: the global lr).
    """

    unfreeze_mm_vision_tower: bool = False
    mm_vision_tower_lr: float | None = None

    def __post_init__(self) -> None:
        lr = self.mm_vision_tower_lr
        if lr is not None and not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"--mm_vision_tower_lr must be a positive finite number, got {lr}")
        if lr is not None and not self.unfreeze_mm_vision_tower:
            raise ValueError(
                f"--mm_vision_tower_lr {lr} given without --unfreeze_mm_vision_tower True: the tower is frozen, "
                "so it has no learning rate"
            )


def _parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a prefix of an upstream flag must never be taken for one of ours.
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--unfreeze_mm_vision_tower", type=parse_bool, nargs="?", const=True, default=False)
    parser.add_argument("--mm_vision_tower_lr", type=float, default=None)
    return parser


def parse_extra_args(argv: Sequence[str]) -> tuple[ExtraArguments, list[str]]:
    """Split ``argv`` into our :class:`ExtraArguments` and the arguments left for upstream.

    Args:
        argv: command-line arguments without the program name.

    Returns:
        The parsed extra arguments and the remaining arguments, in their original order.

    Raises:
        SystemExit: one of our flags has a malformed value (argparse's usual error).
        ValueError: the combination of values is invalid (see :class:`ExtraArguments`).
    """
    namespace, rest = _parser().parse_known_args(list(argv))
    return ExtraArguments(**vars(namespace)), rest
