"""The MMCLIP training loop: hard-negative contrastive fine-tuning of an open_clip encoder pair.

:func:`train` composes ``build_*`` steps and then runs a loop that reads top to bottom:
learning rate, autocast, forward, loss, backward, clip, step, log, checkpoint. It runs in one process
(CPU or GPU) or under ``torchrun`` (DDP; gloo on CPU, NCCL on GPU), and ``resume`` continues a run
exactly: same data order, same losses, same weights as an uninterrupted run.

The ablation runner calls :func:`train` with a :class:`~mmclip_plugin.config.TrainConfig` and reads
the returned :class:`TrainResult`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from mmclip_plugin import checkpoint as ckpt
from mmclip_plugin.config import TrainConfig
from mmclip_plugin.data import BadRecord, Collate, ContrastiveDataset, build_dataset
from mmclip_plugin.distributed import DistEnv, all_reduce_mean, barrier, destroy_distributed, init_distributed
from mmclip_plugin.losses import TERM_NAMES, HardNegativeLoss, check_scalars, configure_scalars
from mmclip_plugin.model import MMCLIPModel, create_model
from mmclip_plugin.sampler import GroupedBatchSampler, RandomBatchSampler

MAX_LOGIT_SCALE = math.log(100.0)
logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished run produced.

    Attributes:
        output_dir: the run directory.
        final_dir: ``output_dir/final``, the trained model (loadable as ``mmclip:<dir>``).
        steps: optimizer steps done in total (resumed runs included).
        history: every metrics line of ``metrics.jsonl`` (rank 0; other ranks get an empty list).
        bad_records: problems found in the data (at index time and at load time), each reported once.
    """

    output_dir: Path
    final_dir: Path
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    bad_records: list[BadRecord] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.history[-1]["loss"] if self.history else float("nan")


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


class Meter:
    """Running means of the loss outputs between two log steps, reduced over ranks."""

    def __init__(self, keys: list[str]):
        self.keys = keys
        self._reset()

    def _reset(self) -> None:
        self.sums = dict.fromkeys(self.keys, 0.0)
        self.counts = dict.fromkeys(self.keys, 0)
        self.images, self.start = 0, time.perf_counter()

    def add(self, losses: dict[str, torch.Tensor], images: int) -> None:
        for key in self.keys:
            if key in losses:  # hard accuracies are absent when no row has a negative
                self.sums[key] += float(losses[key].detach())
                self.counts[key] += 1
        self.images += images

    def reduce(self, world_size: int) -> dict[str, float]:
        """Means over steps and ranks, plus ``images_per_s`` summed over ranks; then start afresh."""
        # the same fixed-length vector on every rank: sums, counts, images/s
        local = [self.sums[k] for k in self.keys] + [float(self.counts[k]) for k in self.keys]
        local.append(self.images / (time.perf_counter() - self.start))
        totals = all_reduce_mean(torch.tensor(local, dtype=torch.float64)).tolist()
        n = len(self.keys)
        out = {k: totals[i] / totals[n + i] for i, k in enumerate(self.keys) if totals[n + i] > 0}
        out["images_per_s"] = totals[-1] * world_size
        self._reset()
        return out


# ------------------------------------------------------------------------------------- builders
def resolve_device(name: str, env: DistEnv) -> torch.device:
    """``auto``/``cpu``/``cuda`` -> a device (``cuda:<local_rank>`` under torchrun)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but CUDA is not available; use device=cpu or device=auto")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", env.local_rank)


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
    if d.hard_batches:
        return GroupedBatchSampler(dataset.groups, d.batch_size, seed=cfg.seed, rank=env.rank,
                                   world_size=env.world_size, drop_last=d.drop_last)
    return RandomBatchSampler(len(dataset), d.batch_size, seed=cfg.seed, rank=env.rank,
                              world_size=env.world_size, drop_last=d.drop_last)


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
                            pin_memory=device.type == "cuda")
        for batch in loader:
            position += 1
            yield epoch, position, batch
        epoch, position = epoch + 1, 0


def _equalize_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """Cut every rank's batch to the smallest one (items that failed to load shrink a batch)."""
    size = torch.tensor([batch["images"].shape[0]])
    dist.all_reduce(size, op=dist.ReduceOp.MIN)
    b = int(size)
    if b == batch["images"].shape[0]:
        return batch
    return {k: v[:b] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _merge_bad(load_bad: dict[tuple[str, str, str], BadRecord], env: DistEnv) -> dict[tuple[str, str, str], BadRecord]:
    """Union of every rank's load-time bad records (each record reported once)."""
    if not env.distributed:
        return load_bad
    parts: list[Any] = [None] * env.world_size
    dist.all_gather_object(parts, list(load_bad.values()))
    return {(b.file, b.record, b.field): b for part in parts for b in part}


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# ------------------------------------------------------------------------------------- the loop
def train(cfg: TrainConfig, resume: str | None = None, stop_at_step: int | None = None) -> TrainResult:
    """Train an MMCLIP encoder as configured; return what was produced.

    Args:
        cfg: the resolved training config.
        resume: ``"latest"`` or a checkpoint directory to continue from exactly; None starts fresh.
        stop_at_step: stop after this optimizer step as if interrupted (a checkpoint is written, no
            ``final/``); the schedule still spans the configured steps, so ``resume`` continues it.
    """
    env = init_distributed()
    try:
        return _train(cfg, resume, env, stop_at_step)
    finally:
        destroy_distributed()


def _train(cfg: TrainConfig, resume: str | None, env: DistEnv, stop_at_step: int | None) -> TrainResult:
    out_dir = Path(cfg.output_dir)
    device = resolve_device(cfg.device, env)
    main = env.is_main
    model = build_model(cfg, device)
    dataset, index_bad = build_dataset(cfg.data, model, cfg.seed)
    sampler = build_batch_sampler(dataset, cfg, env)
    collate = Collate(cfg.data.image_negatives, cfg.data.text_negatives, model.image_size,
                      int(model.model_cfg["text_cfg"].get("context_length", 77)))
    accum = cfg.optim.grad_accum_steps
    total_steps = cfg.steps or cfg.epochs * max(1, len(sampler) // accum)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    loss_fn = HardNegativeLoss(cfg.loss, rank=env.rank, world_size=env.world_size)
    step, epoch, position = 0, 0, 0
    load_bad: dict[tuple[str, str, str], BadRecord] = {}
    if resume is not None:
        path = ckpt.resolve_resume(resume, out_dir)
        ckpt.load_model_weights(model, path)
        state = ckpt.load_trainer_state(path)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        sampler.load_state_dict(state["sampler"])  # raises if batch size, ranks or data changed
        ckpt.set_rng_state(state["rng"])
        step, epoch, position = state["step"], state["epoch"], state["position"]
        load_bad = {(b["file"], b["record"], b["field"]): BadRecord(**b) for b in state["load_bad"]}
        if main:
            print(f"resumed from {path} at step {step} (epoch {epoch}, batch {position})", file=sys.stderr)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        # a fresh run starts a new metrics file; a resumed one keeps the lines up to its checkpoint
        rewrite_metrics_until(out_dir / "metrics.jsonl", step)
        for bad in index_bad[:20]:
            print(f"skipped: {bad}", file=sys.stderr)
        _report_token_check(dataset, cfg, out_dir)
    forward = ContrastiveForward(model)
    if env.distributed:
        forward = DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None)
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]
    writer = _tensorboard(out_dir) if cfg.tensorboard and main else None
    batches = iterate_batches(dataset, sampler, collate, cfg, epoch, position, device)
    progress = tqdm(total=total_steps, initial=step, disable=not (main and cfg.progress), desc="mmclip-train")
    meter = Meter(["loss", *loss_fn.kinds, "i2t_hard_acc", "t2i_hard_acc"])

    def trainer_state() -> dict[str, Any]:
        return {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "step": step, "epoch": epoch, "position": position, "rng": ckpt.rng_state(),
                "sampler": sampler.state_dict(batches_done=position),
                "load_bad": [vars(b) for b in load_bad.values()]}

    model.train()
    last_step = total_steps if stop_at_step is None else min(stop_at_step, total_steps)
    while step < last_step:
        lr = scheduler.get_last_lr()[0]
        for micro in range(accum):
            epoch, position, batch = next(batches)
            for bad in batch.pop("bad"):
                load_bad.setdefault((bad.file, bad.record, bad.field), bad)
            if env.distributed:
                batch = _equalize_batch(batch)  # gathering needs the same batch size on every rank
            if batch["images"].shape[0] == 0:
                continue  # every item failed to load (on some rank, under DDP: all ranks skip together)
            batch = _to_device(batch, device)
            sync = micro == accum - 1 or not env.distributed
            with contextlib.nullcontext() if sync else forward.no_sync():
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    f = forward(batch)
                    losses = loss_fn(
                        f["image_features"].float(), f["text_features"].float(), f["logit_scale"].float(),
                        None if f["logit_bias"] is None else f["logit_bias"].float(),
                        neg_image_features=f["neg_image_features"].float(), neg_image_mask=batch["neg_image_mask"],
                        neg_text_features=f["neg_text_features"].float(), neg_text_mask=batch["neg_text_mask"],
                        neg_text_kind=batch["neg_text_kind"],
                    )
                scaler.scale(losses["loss"] / accum).backward()
            meter.add(losses, images=batch["images"].shape[0] + int(batch["neg_image_mask"].sum()))
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or float("inf"))
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        step += 1
        progress.update(1)

        if step % cfg.log_every == 0 or step == last_step:
            load_bad = _merge_bad(load_bad, env)
            record = {"step": step, "epoch": epoch, "lr": lr, **meter.reduce(env.world_size),
                      "grad_norm": float(grad_norm), "logit_scale": float(model.logit_scale.detach().exp()),
                      "bad_records": len(index_bad) + len(load_bad)}
            if main:
                append_jsonl(out_dir / "metrics.jsonl", record)
                progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}")
                if writer is not None:
                    for key, value in record.items():
                        writer.add_scalar(f"train/{key}", value, step)

        if (cfg.save_every and step % cfg.save_every == 0) or step == last_step:
            load_bad = _merge_bad(load_bad, env)
            if main:
                ckpt.save_checkpoint(out_dir, step, model, cfg, trainer_state(), cfg.keep_last, metadata={"step": step})
            barrier()
    progress.close()
    batches.close()  # shuts down DataLoader workers of an unfinished epoch

    bad_all = index_bad + list(load_bad.values())
    history: list[dict[str, Any]] = []
    if main:
        if step == total_steps:
            ckpt.save_model_dir(out_dir / ckpt.FINAL_DIR, model, cfg, metadata={"step": step})
        history = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        write_json(out_dir / "train_summary.json", {
            "steps": step, "final_loss": history[-1]["loss"] if history else None,
            "bad_records": len(bad_all), "bad_at_index": len(index_bad), "bad_at_load": len(load_bad),
            "bad_record_details": [str(b) for b in bad_all],
        })
        if cfg.plot:
            plot_loss_curve(history, out_dir / "loss_curve.png")
        if writer is not None:
            writer.close()
        print(f"done: {step} steps, {len(bad_all)} bad records skipped ({len(index_bad)} at index time, "
              f"{len(load_bad)} at load time); model in {out_dir / ckpt.FINAL_DIR}", file=sys.stderr)
    barrier()
    return TrainResult(out_dir, out_dir / ckpt.FINAL_DIR, step, history, bad_all)


def _report_token_check(dataset: ContrastiveDataset, cfg: TrainConfig, out_dir: Path) -> None:
    """Log the tokenization check of the training captions and keep it as ``tokenization_check.json``."""
    report = getattr(dataset, "token_check", None)
    if report is None:
        return
    write_json(out_dir / "tokenization_check.json", {"mode": cfg.data.tokenization_check, **report.to_dict()})
    if report.collisions:
        action = "dropped from training" if cfg.data.tokenization_check == "drop" else "kept (data.tokenization_check=warn)"
        logger.warning("%s\n  these negatives are %s", report.summary(), action)
    else:
        logger.info("%s", report.summary())


def _tensorboard(out_dir: Path) -> Any:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise ImportError("tensorboard=true needs the tensorboard package: pip install tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out_dir / "tensorboard"))


# ------------------------------------------------------------------------------------- outputs
def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (flushed, so a crash loses at most the line being written)."""
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()


def rewrite_metrics_until(path: Path, step: int) -> None:
    """Drop metric lines after ``step`` (all of them for a fresh run, ``step`` 0), atomically."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    _atomic_write_text(path, "".join(line + "\n" for line in kept))


def write_json(path: Path, obj: Any) -> None:
    _atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def plot_loss_curve(history: list[dict[str, Any]], path: Path) -> None:
    """Loss (and each loss term) against step, as a PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in [k for k in ("loss", *TERM_NAMES) if k in history[-1]]:
        ax.plot(steps, [h.get(key, float("nan")) for h in history], label=key, lw=2 if key == "loss" else 1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("MMCLIP training loss")
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
