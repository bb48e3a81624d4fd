"""``python -m llava_patches.train ARGS``: upstream ``llava.train.train.train()`` with MMCLIP towers.

Accepts every upstream argument (``--vision_tower mmclip:<checkpoint>`` included) plus ours
(:mod:`llava_patches.args`), which are removed from ``sys.argv`` before upstream's parser sees it. Works
under ``deepspeed --module llava_patches.train`` and ``torchrun -m llava_patches.train``.

Active only while :func:`training_patches` is entered, all restored on exit:
- the ``mmclip:`` tower builder (:func:`llava_patches.register.registered`);
- ``llava.train.train.LLaVATrainer`` -> a subclass for a trainable tower (:mod:`llava_patches.trainer`);
- ``llava.train.train.safe_save_model_for_hf_trainer`` -> its CPU-safe wrapper (:mod:`llava_patches.save`).
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence

from llava_patches.args import ExtraArguments, parse_extra_args
from llava_patches.compat import check_upstream, get_upstream_symbol, warn_on_untested_versions
from llava_patches.patching import patched
from llava_patches.register import registered

TRAIN_MODULE = "llava.train.train"


@contextlib.contextmanager
def training_patches(extra: ExtraArguments) -> Iterator[None]:
    """Enter every patch the training entry point needs; restore upstream on exit."""
    from llava_patches.save import make_cpu_safe_save
    from llava_patches.trainer import make_trainer_class

    check_upstream()
    base_trainer = get_upstream_symbol(TRAIN_MODULE, "LLaVATrainer")
    upstream_save = get_upstream_symbol(TRAIN_MODULE, "safe_save_model_for_hf_trainer")
    with (
        registered(),
        patched(TRAIN_MODULE, "LLaVATrainer", make_trainer_class(base_trainer, extra)),
        patched(TRAIN_MODULE, "safe_save_model_for_hf_trainer", make_cpu_safe_save(upstream_save)),
    ):
        yield


@contextlib.contextmanager
def _argv(argv: Sequence[str]) -> Iterator[None]:
    saved = sys.argv
    sys.argv = [saved[0] if saved else "llava_patches.train", *argv]
    try:
        yield
    finally:
        sys.argv = saved


def main(argv: Sequence[str] | None = None, attn_implementation: str | None = None) -> None:
    """Parse our extra arguments, then run upstream ``train()`` inside :func:`training_patches`.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).
        attn_implementation: passed to upstream ``train()`` (None: transformers' default).
    """
    extra, upstream_argv = parse_extra_args(sys.argv[1:] if argv is None else argv)
    warn_on_untested_versions()
    train = get_upstream_symbol(TRAIN_MODULE, "train")
    with _argv(upstream_argv), training_patches(extra):
        train(attn_implementation=attn_implementation)


if __name__ == "__main__":
    main()
