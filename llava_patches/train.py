"""``python -m llava_patches.train ARGS``: upstream ``llava.train.train.train()`` with MMCLIP towers.

Accepts every upstream argument (``--vision_tower mmclip:<checkpoint>`` included) plus ours
(:mod:`llava_patches.args`), which are removed from ``sys.argv`` before upstream's parser sees it. Works
under ``deepspeed --module llava_patches.train`` and ``torchrun -m llava_patches.train``, and as a
single process with ``--deepspeed`` (:func:`single_process_env`).

Active only while :func:`training_patches` is entered, all restored on exit:
- the ``mmclip:`` tower builder, the ``llava_qwen`` Auto classes and the ``qwen_*`` templates
  (:func:`llava_patches.register.registered`);
- ``llava.train.train.LLaVATrainer`` -> a subclass for a trainable tower (:mod:`llava_patches.trainer`);
- ``llava.train.train.safe_save_model_for_hf_trainer`` -> its CPU-safe wrapper (:mod:`llava_patches.save`);
- ``llava.train.train.LlavaLlamaForCausalLM`` -> a stand-in that picks the class from the checkpoint's
  ``config.model_type`` (Qwen2 -> ``LlavaQwen2ForCausalLM``; :mod:`llava_patches.dispatch`);
- ``llava.train.train.preprocess`` -> ChatML label masking for the ``qwen_*`` templates, upstream's otherwise
  (:mod:`llava_patches.qwen_chat`);
- ``llava.train.train.make_supervised_data_module`` -> the pad-token fix, the template check and a dataset
  that carries its template into spawned worker processes (:mod:`llava_patches.train_data`);
- ``llava.conversation.default_conversation``, which upstream ``train()`` sets from ``--version``, is put back.

Before upstream runs, :func:`check_arguments` refuses the combinations upstream would silently get wrong:
an unknown ``--version`` (upstream falls back to ``vicuna_v1``), and a non-MPT checkpoint whose path
contains ``"mpt"`` or a non-Llama LLM without ``--vision_tower`` (upstream picks those classes by path);
:func:`check_inputs` checks the training JSON (every record, every image), the MMCLIP tower's checkpoint
and the output folder, so bad input fails in seconds with one line (exit 2), not after the LLM is loaded.
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path

from llava_patches.args import ExtraArguments, parse_extra_args
from llava_patches.compat import check_upstream, get_upstream_symbol, warn_on_untested_versions
from llava_patches.patching import patched
from llava_patches.register import registered
from mmgeolm_core.cli import guarded, setup_logging
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import check_model_path, check_output_dir

TRAIN_MODULE = "llava.train.train"
# The names in llava.train.train replaced while training (see the module doc).
PATCHED_NAMES = (
    "LLaVATrainer", "safe_save_model_for_hf_trainer", "LlavaLlamaForCausalLM", "preprocess",
    "make_supervised_data_module",
)  # fmt: skip


@contextlib.contextmanager
def training_patches(extra: ExtraArguments) -> Iterator[None]:
    """Enter every patch the training entry point needs; restore upstream on exit."""
    from llava_patches.dispatch import ModelClassByConfig
    from llava_patches.qwen_chat import make_preprocess
    from llava_patches.save import make_cpu_safe_save
    from llava_patches.train_data import make_data_module_factory
    from llava_patches.trainer import make_trainer_class

    check_upstream()
    upstream = {name: get_upstream_symbol(TRAIN_MODULE, name) for name in PATCHED_NAMES}
    replacements = {
        "LLaVATrainer": make_trainer_class(upstream["LLaVATrainer"], extra),
        "safe_save_model_for_hf_trainer": make_cpu_safe_save(upstream["safe_save_model_for_hf_trainer"]),
        "LlavaLlamaForCausalLM": ModelClassByConfig(upstream["LlavaLlamaForCausalLM"], where=f"{TRAIN_MODULE}.train()"),
        "preprocess": make_preprocess(upstream["preprocess"]),
        "make_supervised_data_module": make_data_module_factory(upstream["make_supervised_data_module"]),
    }
    conversation = get_upstream_symbol("llava.conversation", "default_conversation")
    with contextlib.ExitStack() as stack:
        stack.enter_context(registered())
        for name in PATCHED_NAMES:
            stack.enter_context(patched(TRAIN_MODULE, name, replacements[name]))
        # upstream train() sets llava.conversation.default_conversation and never restores it
        stack.enter_context(patched("llava.conversation", "default_conversation", conversation))
        yield


def _flag(argv: Sequence[str], name: str) -> str | None:
    """The value of ``--name VALUE`` / ``--name=VALUE`` in ``argv`` (the last one wins, as in argparse)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg[len(name) + 1 :]
    return value


def check_arguments(argv: Sequence[str]) -> None:
    """Refuse upstream arguments that upstream ``train()`` would silently mishandle (see the module doc).

    Raises:
        InputError: naming the argument, its value and what to do instead.
    """
    from llava_patches.dispatch import MODEL_TYPE_FAMILY, checkpoint_model_type
    from llava_patches.qwen_chat import TEMPLATE_NAMES

    version = _flag(argv, "--version")
    conv_templates = get_upstream_symbol("llava.conversation", "conv_templates")
    known = {"v0", "v0.5", *conv_templates, *TEMPLATE_NAMES}
    if version is not None and version not in known:
        raise InputError(f"--version {version!r} is not a conversation template (upstream would silently use "
                         f"vicuna_v1); known: {', '.join(sorted(known))}")
    path = _flag(argv, "--model_name_or_path")
    if path is None:
        return
    check_model_path(path, "--model_name_or_path")
    cache_dir = _flag(argv, "--cache_dir")
    family = MODEL_TYPE_FAMILY.get(checkpoint_model_type(path, **({"cache_dir": cache_dir} if cache_dir else {})))
    if _flag(argv, "--vision_tower") is None:
        if family != "llama":
            raise InputError(f"--model_name_or_path {path}: without --vision_tower upstream trains it as "
                             "transformers.LlamaForCausalLM; only Llama-family models are supported there")
    elif "mpt" in path and family != "mpt":
        raise InputError(f"--model_name_or_path {path} contains 'mpt', so upstream train() would build an MPT model "
                         "for it; rename or symlink the directory")


def check_inputs(argv: Sequence[str]) -> None:
    """Check, before a model is loaded, the files upstream would fail on only later: after loading the LLM,
    or hours into the run when the batch holding a bad record or a missing image comes.

    Raises:
        InputError: a bad training JSON record or a missing image (file, record, key), an MMCLIP tower
            checkpoint with a misspelt key or truncated weights, a missing projector or DeepSpeed file, an
            unwritable ``--output_dir``.
    """
    from data_recipes.formats.llava import read_llava_records
    from mmclip_plugin.checkpoint_files import check_weights_file
    from mmclip_plugin.tower.weights import is_mmclip_name, read_vision_config, resolve_checkpoint

    data, images = _flag(argv, "--data_path"), _flag(argv, "--image_folder")
    if data is not None:
        records = read_llava_records(data, images)
        if images is None and any("image" in r for r in records):
            raise InputError(f"--data_path {data}: its records have images; give --image_folder (the folder their "
                             f"paths are relative to)")
    tower = _flag(argv, "--vision_tower")
    if tower is not None and is_mmclip_name(tower):
        checkpoint = resolve_checkpoint(tower)  # both JSON files of the checkpoint, checked
        read_vision_config(checkpoint)
        check_weights_file(checkpoint)
    for flag in ("--pretrain_mm_mlp_adapter", "--deepspeed"):
        value = _flag(argv, flag)
        if value is not None and not Path(value).is_file():
            raise InputError(f"{flag} {value}: no such file")
    output = _flag(argv, "--output_dir")
    if output is not None:
        check_output_dir(output, "--output_dir")


def seed_before_building(argv: Sequence[str]) -> None:
    """Seed every generator with ``--seed`` (the HF default 42 without it) before upstream builds the model.

    Upstream ``train()`` creates the projector (and LoRA adapters) before the HF Trainer applies ``--seed``, so
    their initial weights came from torch's per-process random seed: two runs of the same command trained
    differently from step 0. A seed that is not an integer is left to upstream's parser to refuse.
    """
    from transformers import set_seed

    value = _flag(argv, "--seed")
    try:
        seed = 42 if value is None else int(value)
    except ValueError:
        return
    set_seed(seed)


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


PROG = "python -m llava_patches.train"


def main(argv: Sequence[str] | None = None, attn_implementation: str | None = None, prog: str = PROG) -> int:
    """Parse our extra arguments, check the inputs, then run upstream ``train()`` inside :func:`training_patches`.

    Bad input ends as one line and exit status 2, a Ctrl-C as 130 (:mod:`mmgeolm_core.cli`); ``--debug``
    (ours, taken out before upstream's parser) prints the traceback too.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).
        attn_implementation: passed to upstream ``train()`` (None: transformers' default).
        prog: the command's name in messages.

    Returns:
        The exit status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    setup_logging()
    return guarded(prog, lambda: _train(argv, attn_implementation), debug=debug)


def _train(argv: list[str], attn_implementation: str | None) -> int:
    try:
        extra, upstream_argv = parse_extra_args(argv)
    except ValueError as exc:  # a combination of our flags that makes no sense
        raise InputError(str(exc)) from None
    warn_on_untested_versions()
    single_process_env(upstream_argv)
    train = get_upstream_symbol(TRAIN_MODULE, "train")
    with _argv(upstream_argv), training_patches(extra):
        check_arguments(upstream_argv)
        check_inputs(upstream_argv)
        seed_before_building(upstream_argv)
        train(attn_implementation=attn_implementation)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
