"""Training checkpoints: atomic directories, keep-last-M rotation, and resume.

Layout of ``output_dir``::

    checkpoints/step_000100/   # one per save, the last ``keep_last`` kept
        open_clip_config.json, open_clip_model.safetensors, mmclip_config.json   # MMCLIPModel.save_pretrained
        train_config.yaml      # the resolved TrainConfig
        trainer_state.pt       # optimizer, scheduler, scaler, step, epoch, sampler position, RNG states
    init/                      # the starting weights of a fresh run (what evaluation compares against)
    final/                     # the last model (+ train_config.yaml); what `mmclip:<dir>` loads

Every directory is written under a temporary name and renamed into place, so a crash never leaves a
half-written checkpoint under a real name (``find_latest`` also ignores directories without a
``trainer_state.pt``).
"""
from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmclip_plugin.model import MMCLIPModel, check_checkpoint_dir
from mmgeolm_core.config import save_config
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import FormatError, atomic_directory

CHECKPOINT_DIR = "checkpoints"
FINAL_DIR = "final"
INIT_DIR = "init"
TRAIN_CONFIG = "train_config.yaml"
TRAINER_STATE = "trainer_state.pt"
_STEP_RE = re.compile(r"^step_(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def save_model_dir(directory: str | os.PathLike, model: MMCLIPModel, train_config: Any,
                   trainer_state: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None) -> Path:
    """Write model + ``train_config.yaml`` (+ ``trainer_state.pt``) as one directory, atomically.

    Args:
        directory: the final directory (replaced if it exists).
        model: the (unwrapped) model.
        train_config: the resolved :class:`~mmclip_plugin.config.TrainConfig`.
        trainer_state: optimizer/scheduler/RNG state to resume from; None for model-only directories.
        metadata: free-form metadata stored in ``mmclip_config.json``.
    """
    with atomic_directory(directory) as tmp:
        model.write_files(tmp, metadata)
        save_config(train_config, tmp / TRAIN_CONFIG)
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER_STATE)
    return Path(directory)


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``output_dir/checkpoints`` as (step, path), oldest first."""
    root = Path(output_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_RE.match(path.name)
        if match and (path / TRAINER_STATE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def save_checkpoint(output_dir: str | os.PathLike, step: int, model: MMCLIPModel, train_config: Any,
                    trainer_state: dict[str, Any], keep_last: int, metadata: dict[str, Any] | None = None) -> Path:
    """Save ``checkpoints/step_{step:06d}`` and delete all but the newest ``keep_last`` checkpoints."""
    path = save_model_dir(Path(output_dir) / CHECKPOINT_DIR / step_dir_name(step), model, train_config,
                          trainer_state, metadata)
    for _, old in list_checkpoints(output_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def find_latest(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint directory, or None."""
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def resolve_resume(spec: str, output_dir: str | os.PathLike) -> Path:
    """``latest`` -> the newest checkpoint in ``output_dir``; otherwise a checkpoint directory path.

    Raises:
        InputError: nothing to resume from, naming where it looked.
    """
    if spec == "latest":
        path = find_latest(output_dir)
        if path is None:
            raise InputError(f"--resume latest: no checkpoint with {TRAINER_STATE} under "
                             f"{Path(output_dir) / CHECKPOINT_DIR} (nothing to resume; start without --resume)")
        return path
    path = check_checkpoint_dir(spec)
    if not (path / TRAINER_STATE).is_file():
        raise InputError(f"--resume {spec}: {path} has no {TRAINER_STATE} (a model-only directory cannot resume)")
    return path


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """A model directory from a checkpoint directory or an ``mmclip-train`` output directory.

    A checkpoint directory is returned as it is; a training run gives its ``final/``, or, before the
    run has finished, its newest complete checkpoint.

    Raises:
        FileNotFoundError: neither a checkpoint nor a run with ``final/`` or a checkpoint (naming what was looked for).
    """
    from mmclip_plugin.model import is_checkpoint_dir

    path = Path(path)
    if is_checkpoint_dir(path):
        return path
    if is_checkpoint_dir(path / FINAL_DIR):
        return path / FINAL_DIR
    latest = find_latest(path)
    if latest is not None:
        return latest
    if path.is_dir() and any((path / name).exists() for name in (FINAL_DIR, CHECKPOINT_DIR, "metrics.jsonl")):
        raise FileNotFoundError(f"{path} is an mmclip-train output directory without a model yet: no {FINAL_DIR}/ and no "
                                f"complete checkpoint under {CHECKPOINT_DIR}/")
    check_checkpoint_dir(path)  # raises the checkpoint error (missing directory or files)
    return path


def load_trainer_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``trainer_state.pt`` (our own file: it holds RNG states, so not ``weights_only``)."""
    return torch.load(Path(path) / TRAINER_STATE, map_location="cpu", weights_only=False)


def load_model_weights(model: MMCLIPModel, path: str | os.PathLike) -> None:
    """Load a checkpoint's safetensors weights into an already built model of the same architecture.

    Raises:
        FormatError: the weights file is truncated or does not fit the model (naming the file).
    """
    from safetensors.torch import load_file

    from mmclip_plugin.checkpoint_files import check_weights_file, weights_mismatch

    weights = check_weights_file(path)
    try:
        missing, unexpected = model.clip.load_state_dict(load_file(str(weights)), strict=False)
    except RuntimeError as exc:  # a tensor of another shape
        raise weights_mismatch(path, exc) from None
    if missing or unexpected:
        raise FormatError(weights, f"does not match the configured model: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}")


def rng_state() -> dict[str, Any]:
    """Every global RNG the trainer may touch (torch, CUDA, numpy, python)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
