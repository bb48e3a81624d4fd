"""Saving fixes for upstream LLaVA training: the CPU-safe final save and the trained-tower checkpoint.

Upstream ``safe_save_model_for_hf_trainer`` calls ``torch.cuda.synchronize()`` before a DeepSpeed save
whatever the device, which crashes on CPU. :func:`make_cpu_safe_save` wraps it: without CUDA the
DeepSpeed branch saves the same way minus the synchronisation; every other case runs the original.

Upstream also ignores the tower's weights on reload (the tower is rebuilt from its name). A tower trained
in stage 2 is therefore written as an MMCLIP checkpoint directory ``<checkpoint>/mmclip_tower`` and the
saved config's ``mm_vision_tower`` points at it (see :func:`save_tower_checkpoint`).
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

TOWER_SUBDIR = "mmclip_tower"
# Stored in the LLaVA config so the loader can find the tower next to a moved checkpoint.
TOWER_SUBDIR_KEY = "mmclip_tower_subdir"


def make_cpu_safe_save(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap upstream ``safe_save_model_for_hf_trainer`` so its DeepSpeed branch works without CUDA."""

    @functools.wraps(original)
    def safe_save_model_for_hf_trainer(trainer: Any, output_dir: str) -> None:
        adapter_only = getattr(trainer.args, "tune_mm_mlp_adapter", False)
        if trainer.deepspeed and not adapter_only and not torch.cuda.is_available():
            trainer.save_model(output_dir)
            return
        original(trainer=trainer, output_dir=output_dir)

    safe_save_model_for_hf_trainer.__mmclip_original__ = original
    return safe_save_model_for_hf_trainer


@contextlib.contextmanager
def gathered(module: torch.nn.Module) -> Iterator[None]:
    """Make a module's full parameters visible: a no-op unless DeepSpeed ZeRO-3 has partitioned them."""
    params = [p for p in module.parameters() if hasattr(p, "ds_id")]
    if not params:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield


def save_tower_checkpoint(tower: Any, directory: str | Path, metadata: dict | None = None) -> Path:
    """Write the tower's MMCLIP model to ``directory`` (atomically).

    Under ZeRO-3 call it inside :func:`gathered` (entered on every rank, written on one).

    Args:
        tower: an :class:`mmclip_plugin.tower.vision_tower.MMCLIPVisionTower` that is loaded.
        directory: target checkpoint directory.
        metadata: extra provenance stored in the checkpoint's config.

    Raises:
        TypeError: ``tower`` is not a loaded MMCLIP tower.
        RuntimeError: its parameters are ZeRO-3 partitions (not gathered).
    """
    from mmclip_plugin.tower.vision_tower import MMCLIPVisionTower

    if not isinstance(tower, MMCLIPVisionTower):
        raise TypeError(f"only an MMCLIP tower can be saved as an MMCLIP checkpoint, got {type(tower).__name__}")
    if not tower.is_loaded:
        raise TypeError(f"tower {tower.vision_tower_name!r} is not loaded; nothing to save")
    if any(hasattr(p, "ds_id") and p.numel() == 0 for p in tower.parameters()):
        raise RuntimeError(
            f"cannot save tower {tower.vision_tower_name!r} to {directory}: its parameters are ZeRO-3 partitions; "
            "save inside llava_patches.save.gathered(tower) on every rank"
        )
    from mmclip_plugin.model import load_checkpoint

    # The tower holds only the image encoder: rebuild the full MMCLIP model from the checkpoint it was
    # loaded from (text tower, configs) and put the trained encoder weights into it.
    model = load_checkpoint(tower.checkpoint)
    state = {k: v.detach().to(device="cpu", dtype=torch.float32) for k, v in tower.vision_tower.state_dict().items()}
    model.clip.visual.load_state_dict(state, strict=True)
    provenance = {"source_checkpoint": str(tower.checkpoint), **(metadata or {})}
    return model.save_pretrained(directory, metadata=provenance)
