"""``python -m llava_patches.train ARGS``: upstream ``llava.train.train.train()`` with MMCLIP towers.

Accepts every upstream argument (``--vision_tower mmclip:<checkpoint>`` included) plus ours
(:mod:`llava_patches.args`), which are removed from ``sys.argv`` before upstream's parser sees it. Works
under ``deepspeed --module llava_patches.train`` and ``torchrun -m llava_patches.train``, and as a
single process with ``--deepspeed`` (:func:`single_process_env`).

Active only while :func:`training_patches` is entered, all restored on exit:
- the ``mmclip:`` tower builder (:func:`llava_patches.register.registered`);
- ``llava.train.train.LLaVATrainer`` -> a subclass for a trainable tower (:mod:`llava_patches.trainer`);
- ``llava.train.train.safe_save_model_for_hf_trainer`` -> its CPU-safe wrapper (:mod:`llava_patches.save`).
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator, MutableMapping, Sequence

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


def uses_deepspeed(argv: Sequence[str]) -> bool:
    """Whether upstream's arguments ask for DeepSpeed (``--deepspeed CONFIG`` or ``--deepspeed=CONFIG``)."""
    return any(a == "--deepspeed" or a.startswith("--deepspeed=") for a in argv)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def single_process_env(argv: Sequence[str], environ: MutableMapping[str, str] = os.environ) -> bool:
    """Give a launcher-less DeepSpeed run the environment of a one-process launch.

    transformers/accelerate enable DeepSpeed only in a launched process (``LOCAL_RANK`` set); run as
    plain ``python -m llava_patches.train --deepspeed ...`` they would silently train without it and
    crash at the first checkpoint. Nothing is changed when ``LOCAL_RANK`` is already set (deepspeed,
    torchrun) or DeepSpeed is not asked for.

    Returns:
        Whether the environment was completed.
    """
    if not uses_deepspeed(argv) or "LOCAL_RANK" in environ or any(a.startswith("--local_rank") for a in argv):
        return False
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_WORLD_SIZE", "1")):
        environ.setdefault(key, value)
    environ.setdefault("MASTER_ADDR", "127.0.0.1")
    environ.setdefault("MASTER_PORT", str(_free_port()))
    return True


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
    single_process_env(upstream_argv)
    train = get_upstream_symbol(TRAIN_MODULE, "train")
    with _argv(upstream_argv), training_patches(extra):
        train(attn_implementation=attn_implementation)


if __name__ == "__main__":
    main()
