"""What an MMCLIP training run is built from: model, data, sampler, optimizer, schedule, loss, position.

:func:`build_run` composes the ``build_*`` steps into a :class:`Run`; :mod:`mmclip_plugin.train` runs it.
"""
from __future__ import annotations

import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from mmclip_plugin import checkpoint as ckpt
from mmclip_plugin.config import TrainConfig
from mmclip_plugin.data import BadRecord, Collate, ContrastiveDataset, build_dataset
from mmclip_plugin.distributed import DistEnv, resolve_device
from mmclip_plugin.losses import HardNegativeLoss, check_scalars, configure_scalars
from mmclip_plugin.model import MMCLIPModel, create_model
from mmclip_plugin.sampler import GroupedBatchSampler, RandomBatchSampler
from mmgeolm_core.config import ConfigError
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import check_output_dir as check_writable_dir


class ContrastiveForward(nn.Module):
    """One forward pass of positives and valid negatives, batched, as DDP needs a ``forward``.

    Negatives are concatenated with the positives and encoded in one pass per tower, then split and
    scattered back to their (B, K) slots; padding slots stay zero (their masks are False).
    """

    def __init__(self, model: MMCLIPModel):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, texts = batch["images"], batch["texts"]  # (B, 3, H, W), (B, L)
        b = images.shape[0]
        ki, kt = batch["neg_image_mask"].shape[1], batch["neg_text_mask"].shape[1]
        neg_images = batch["neg_images"][batch["neg_image_mask"]]  # (Ni, 3, H, W) valid negatives only
        neg_texts = batch["neg_texts"][batch["neg_text_mask"]]  # (Nt, L)
        image_features = self.model.encode_image(torch.cat([images, neg_images]))  # (B + Ni, D)
        text_features = self.model.encode_text(torch.cat([texts, neg_texts]))  # (B + Nt, D)
        bias = self.model.logit_bias
        return {
            "image_features": image_features[:b],
            "text_features": text_features[:b],
            "neg_image_features": _scatter(image_features[b:], batch["neg_image_mask"], b, ki),
            "neg_text_features": _scatter(text_features[b:], batch["neg_text_mask"], b, kt),
            "logit_scale": self.model.logit_scale.exp(),
            "logit_bias": bias,
        }


def _scatter(valid: torch.Tensor, mask: torch.Tensor, b: int, k: int) -> torch.Tensor:
    """(N, D) features of the True slots of ``mask`` (B, K) -> (B, K, D), zeros elsewhere."""
    slots = mask.reshape(-1).nonzero().squeeze(1)  # (N,)
    out = valid.new_zeros(b * k, valid.shape[-1])
    return out.index_copy(0, slots, valid).view(b, k, valid.shape[-1])


# ------------------------------------------------------------------------------------- builders
def build_model(cfg: TrainConfig, device: torch.device) -> MMCLIPModel:
    """Create the model (seeded) and give it a logit bias, or freeze it, as the loss requires."""
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, device=device)
    configure_scalars(model, cfg.loss)  # an unused learnable logit bias would break DDP
    check_scalars(model, cfg.loss)
    return model.to(device)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; gains, biases and logit scalars (every parameter with fewer than 2 dims) get no weight decay."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup then cosine decay to ``min_lr_ratio * lr`` over ``total_steps``."""
    o = cfg.optim
    warmup = o.warmup_steps or int(round(o.warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_batch_sampler(dataset: ContrastiveDataset, cfg: TrainConfig, env: DistEnv) -> Any:
    """Grouped batches (each positive with its negatives) when ``data.hard_batches``, random otherwise."""
    d = cfg.data
    try:
        if d.hard_batches:
            return GroupedBatchSampler(dataset.groups, d.batch_size, seed=cfg.seed, rank=env.rank,
                                       world_size=env.world_size, drop_last=d.drop_last)
        return RandomBatchSampler(len(dataset), d.batch_size, seed=cfg.seed, rank=env.rank,
                                  world_size=env.world_size, drop_last=d.drop_last)
    except ValueError as exc:  # too few items for one batch: the config asks for more than the data holds
        raise ConfigError(f"{exc} (data.drop_last)", key="data.batch_size") from None


def iterate_batches(dataset: ContrastiveDataset, sampler: Any, collate: Collate, cfg: TrainConfig,
                    epoch: int, position: int, device: torch.device) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """Endless (epoch, position after this batch, batch), starting at batch ``position`` of ``epoch``.

    The sampler skips the consumed batches of a resumed epoch without loading them.
    """
    while True:
        sampler.set_epoch(epoch, start_batch=position)
        dataset.set_epoch(epoch)
        batches = list(sampler)  # the epoch's remaining index lists
        loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=cfg.data.num_workers,
                            pin_memory=device.type == "cuda", worker_init_fn=ignore_interrupts)
        for batch in loader:
            position += 1
            yield epoch, position, batch
        epoch, position = epoch + 1, 0


def ignore_interrupts(_worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process, which finishes its step and saves a checkpoint
    (a worker killed by the terminal's SIGINT would break that step)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ------------------------------------------------------------------------------------- the run
@dataclass
class Run:
    """Everything a training run holds between steps, and its position (restored exactly on resume)."""

    cfg: TrainConfig
    env: DistEnv
    device: torch.device
    model: MMCLIPModel
    dataset: ContrastiveDataset
    index_bad: list[BadRecord]
    sampler: Any
    collate: Collate
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    loss_fn: HardNegativeLoss
    total_steps: int
    step: int = 0
    epoch: int = 0
    position: int = 0
    load_bad: dict[tuple[str, str, str], BadRecord] = field(default_factory=dict)

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg.output_dir)

    def trainer_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "step": self.step, "epoch": self.epoch, "position": self.position,
                "rng": ckpt.rng_state(), "sampler": self.sampler.state_dict(batches_done=self.position),
                "load_bad": [vars(b) for b in self.load_bad.values()]}

    def restore(self, resume: str) -> Path:
        """Continue from ``resume`` (``latest`` or a checkpoint directory) exactly where it stopped."""
        path = ckpt.resolve_resume(resume, self.out_dir)
        ckpt.load_model_weights(self.model, path)
        state = ckpt.load_trainer_state(path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        try:
            self.sampler.load_state_dict(state["sampler"])  # raises if batch size, ranks or data changed
        except ValueError as exc:
            raise InputError(f"--resume {resume}: cannot continue {path} exactly: {exc}") from None
        ckpt.set_rng_state(state["rng"])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.load_bad = {(b["file"], b["record"], b["field"]): BadRecord(**b) for b in state["load_bad"]}
        return path


def build_run(cfg: TrainConfig, env: DistEnv) -> Run:
    """Model, data, sampler, optimizer, schedule and loss of a run, at step 0."""
    device = resolve_device(cfg.device, env.local_rank)
    model = build_model(cfg, device)
    dataset, index_bad = build_dataset(cfg.data, model, cfg.seed)
    sampler = build_batch_sampler(dataset, cfg, env)
    collate = Collate(cfg.data.image_negatives, cfg.data.text_negatives, model.image_size,
                      int(model.model_cfg["text_cfg"].get("context_length", 77)))
    total_steps = cfg.steps or cfg.epochs * max(1, len(sampler) // cfg.optim.grad_accum_steps)
    optimizer = build_optimizer(model, cfg)
    return Run(cfg, env, device, model, dataset, index_bad, sampler, collate, optimizer,
               build_scheduler(optimizer, cfg, total_steps),
               torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16"),
               HardNegativeLoss(cfg.loss, rank=env.rank, world_size=env.world_size), total_steps)


def check_output_dir(out_dir: Path, resume: str | None, overwrite: bool) -> None:
    """Checked before the model and data are built: ``output_dir`` can be written, ``--resume`` names
    something to resume, and a fresh run never replaces another run's model or checkpoints unless told to
    move them aside.

    Raises:
        InputError: ``out_dir`` is a file or not writable; it holds a finished run (``final/``) or
            checkpoints, and neither ``resume`` nor ``overwrite`` was given; or ``resume`` names nothing
            to resume from.
    """
    check_writable_dir(out_dir, "output_dir")
    if resume is not None:
        ckpt.resolve_resume(resume, out_dir)
    has_run = (out_dir / ckpt.FINAL_DIR).exists() or bool(ckpt.list_checkpoints(out_dir))
    if resume is None and has_run and not overwrite:
        what = "a finished run (final/)" if (out_dir / ckpt.FINAL_DIR).exists() else "the checkpoints of a run"
        raise InputError(f"{out_dir} holds {what}; continue it with --resume latest, or start afresh with "
                         f"--overwrite (the old run is moved aside, not deleted)")


def move_aside(out_dir: Path) -> Path:
    """Rename an existing run directory to ``<out_dir>.replaced-<time>`` (never deleted)."""
    aside = out_dir.with_name(f"{out_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while aside.exists():
        n += 1
        aside = aside.with_name(f"{out_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
    out_dir.rename(aside)
    return aside


