"""A minimal extension of upstream ``LLaVATrainer`` for a trainable MMCLIP tower (LLaVA-NeXT semantics).

:func:`make_trainer_class` subclasses whatever ``LLaVATrainer`` upstream defines. The subclass

- unfreezes the vision tower when ``--unfreeze_mm_vision_tower True`` (casting it to the LLM's parameter
  dtype, because upstream casts the tower to fp16/bf16 for frozen inference),
- gives the tower its own learning rate in extra optimizer parameter groups when ``--mm_vision_tower_lr``
  is set (upstream's own groups are built first, untouched),
- saves the trained tower as an MMCLIP checkpoint inside every LLaVA checkpoint and points the saved
  config's ``mm_vision_tower`` at it.

With the tower frozen (the default) the subclass behaves exactly like upstream's trainer.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from llava_patches.args import ExtraArguments
from llava_patches.save import TOWER_SUBDIR, TOWER_SUBDIR_KEY, gathered, save_tower_checkpoint


def unfreeze_tower(model: Any) -> torch.nn.Module:
    """Make the model's vision tower trainable in the dtype of the language model's parameters."""
    from mmclip_plugin.tower.vision_tower import MMCLIPVisionTower

    tower = model.get_vision_tower()
    if not isinstance(tower, MMCLIPVisionTower) or not tower.is_loaded:
        raise ValueError(
            f"--unfreeze_mm_vision_tower True needs a loaded MMCLIP tower (--vision_tower mmclip:<dir>), got "
            f"{type(tower).__name__}: only an MMCLIP tower can be saved with the checkpoint and restored on reload"
        )
    tower.to(dtype=model.get_input_embeddings().weight.dtype)
    tower.requires_grad_(True)
    return tower


def tower_param_groups(
    model: torch.nn.Module, tower: torch.nn.Module, decay_names: set[str], weight_decay: float, lr: float
) -> list[dict[str, Any]]:
    """Two parameter groups (with and without weight decay) for the tower's trainable parameters.

    Args:
        model: the full LLaVA model; ``decay_names`` are names in its ``named_parameters``.
        tower: the vision tower, a submodule of ``model``.
        decay_names: parameter names that take weight decay (the trainer's rule).
        weight_decay: the decay of the first group.
        lr: the learning rate of both groups.
    """
    tower_ids = {id(p) for p in tower.parameters()}
    named = [(n, p) for n, p in model.named_parameters() if id(p) in tower_ids and p.requires_grad]
    groups = [
        {"params": [p for n, p in named if n in decay_names], "weight_decay": weight_decay, "lr": lr},
        {"params": [p for n, p in named if n not in decay_names], "weight_decay": 0.0, "lr": lr},
    ]
    return [g for g in groups if g["params"]]


@contextlib.contextmanager
def _frozen(module: torch.nn.Module) -> Iterator[None]:
    trainable = [p for p in module.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


def make_trainer_class(base: type, extra: ExtraArguments) -> type:
    """Subclass upstream's ``LLaVATrainer`` (``base``) with the behaviour ``extra`` asks for."""

    class MMCLIPLLaVATrainer(base):
        mmclip_extra = extra

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.mmclip_tower = None
            if extra.unfreeze_mm_vision_tower:
                if getattr(self.args, "tune_mm_mlp_adapter", False):
                    raise ValueError(
                        "--unfreeze_mm_vision_tower True cannot be combined with --tune_mm_mlp_adapter True: "
                        "stage 1 saves only mm_projector.bin, so a trained tower would be lost; "
                        "unfreeze it in stage 2"
                    )
                if getattr(self.args, "lora_enable", False):
                    raise ValueError(
                        "--unfreeze_mm_vision_tower True cannot be combined with --lora_enable True: upstream's "
                        "LoRA save writes non_lora_trainables.bin, which its loader applies before the tower is "
                        "loaded, so a trained tower would be lost on reload"
                    )
                self.mmclip_tower = unfreeze_tower(self.model)

        def create_optimizer(self) -> torch.optim.Optimizer:
            if self.mmclip_tower is None or extra.mm_vision_tower_lr is None or self.optimizer is not None:
                return super().create_optimizer()
            # Upstream builds its groups from requires_grad parameters: hide the tower, then add its groups.
            with _frozen(self.mmclip_tower):
                optimizer = super().create_optimizer()
            decay = set(self.get_decay_parameter_names(self.model))
            for group in tower_param_groups(
                self.model, self.mmclip_tower, decay, self.args.weight_decay, extra.mm_vision_tower_lr
            ):
                optimizer.add_param_group(group)
            return optimizer

        def _tower_dir(self, output_dir: str | None) -> str:
            output_dir = output_dir if output_dir is not None else self.args.output_dir
            return os.path.abspath(os.path.join(output_dir, TOWER_SUBDIR))

        def _write_tower(self, tower_dir: str) -> None:
            save_tower_checkpoint(self.mmclip_tower, tower_dir, metadata={"trained_in": "llava_patches.train"})
            self._mmclip_tower_written = tower_dir

        def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
            # Runs on every rank (DeepSpeed saves are collective): gather ZeRO-3 shards here, write on one.
            if self.mmclip_tower is not None:
                tower_dir = self._tower_dir(output_dir)
                with gathered(self.mmclip_tower):
                    if self.args.should_save:
                        self._write_tower(tower_dir)
            try:
                super().save_model(output_dir, _internal_call=_internal_call)
            finally:
                self._mmclip_tower_written = None

        def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
            # Called on the saving rank only, by save_model or by upstream's final non-DeepSpeed save.
            if self.mmclip_tower is None:
                super()._save(output_dir, state_dict)
                return
            tower_dir = self._tower_dir(output_dir)
            if getattr(self, "_mmclip_tower_written", None) != tower_dir:
                self._write_tower(tower_dir)
            config = self.model.config
            saved_name = config.mm_vision_tower
            config.mm_vision_tower = f"mmclip:{tower_dir}"
            setattr(config, TOWER_SUBDIR_KEY, TOWER_SUBDIR)
            try:
                super()._save(output_dir, state_dict)
            finally:
                config.mm_vision_tower = saved_name

    MMCLIPLLaVATrainer.__qualname__ = f"MMCLIP{base.__qualname__}"
    return MMCLIPLLaVATrainer
