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
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from mmclip_plugin import checkpoint as ckpt
from mmclip_plugin.config import TrainConfig
from mmclip_plugin.data import BadRecord
from mmclip_plugin.distributed import (
    DistEnv,
    all_reduce_mean,
    barrier,
    destroy_distributed,
    init_distributed,
)
from mmclip_plugin.losses import TERM_NAMES
from mmclip_plugin.train_setup import (
    ContrastiveForward,
    Run,
    build_run,
    check_output_dir,
    iterate_batches,
    move_aside,
)
from mmgeolm_core.errors import Interrupted
from mmgeolm_core.io import append_jsonl, atomic_write_json, atomic_write_text, atomic_write_with, iter_jsonl

log = logging.getLogger(__name__)

MAX_LOGIT_SCALE = math.log(100.0)


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


# ------------------------------------------------------------------------------------- helpers of the loop
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
def train(cfg: TrainConfig, resume: str | None = None, stop_at_step: int | None = None,
          overwrite: bool = False) -> TrainResult:
    """Train an MMCLIP encoder as configured; return what was produced.

    A fresh run saves its starting weights to ``output_dir/init`` (what evaluation compares against).

    Args:
        cfg: the resolved training config.
        resume: ``"latest"`` or a checkpoint directory to continue from exactly; None starts fresh.
        stop_at_step: stop after this optimizer step as if interrupted (a checkpoint is written, no
            ``final/``); the schedule still spans the configured steps, so ``resume`` continues it.
        overwrite: a fresh run into a directory holding another run moves that run aside first.

    Raises:
        InputError: a fresh run into another run's directory without ``overwrite`` (see :func:`check_output_dir`).
    """
    check_output_dir(Path(cfg.output_dir), resume, overwrite)
    env = init_distributed()
    try:
        return _train(cfg, resume, env, stop_at_step)
    finally:
        destroy_distributed()


def _train(cfg: TrainConfig, resume: str | None, env: DistEnv, stop_at_step: int | None) -> TrainResult:
    run = build_run(cfg, env)
    if resume is not None:
        path = run.restore(resume)
        if env.is_main:
            # lines logged after this checkpoint by the interrupted run are logged again from here
            rewrite_metrics_until(run.out_dir / "metrics.jsonl", run.step)
            log.info("resumed from %s at step %d (epoch %d, batch %d)", path, run.step, run.epoch, run.position)
    elif env.is_main:
        _start_fresh(run)
    if env.is_main:
        _report_token_check(run.dataset, cfg, run.out_dir)
    barrier()
    forward = ContrastiveForward(run.model)
    if env.distributed:
        forward = DistributedDataParallel(forward, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    batches = iterate_batches(run.dataset, run.sampler, run.collate, cfg, run.epoch, run.position, run.device)
    meter = Meter(["loss", *run.loss_fn.kinds, "i2t_hard_acc", "t2i_hard_acc"])
    progress = tqdm(total=run.total_steps, initial=run.step, disable=not (env.is_main and cfg.progress),
                    desc="mmclip-train")
    writer = _tensorboard(run.out_dir) if cfg.tensorboard and env.is_main else None
    last_step = run.total_steps if stop_at_step is None else min(stop_at_step, run.total_steps)

    run.model.train()
    with stop_on_interrupt(enabled=not env.distributed) as stop:
        while run.step < last_step:
            lr = run.scheduler.get_last_lr()[0]
            grad_norm = train_step(run, forward, batches, meter)
            progress.update(1)
            stopping = stop.requested  # Ctrl-C during this step: log and save it, then stop
            if run.step % cfg.log_every == 0 or run.step == last_step or stopping:
                record = _log_metrics(run, meter, lr, grad_norm, writer)
                progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}")
            if (cfg.save_every and run.step % cfg.save_every == 0) or run.step == last_step or stopping:
                run.load_bad = _merge_bad(run.load_bad, env)
                if env.is_main:
                    ckpt.save_checkpoint(run.out_dir, run.step, run.model, cfg, run.trainer_state(), cfg.keep_last,
                                         metadata={"step": run.step})
                barrier()
            if stopping:
                break
    progress.close()
    batches.close()  # shuts down DataLoader workers of an unfinished epoch
    if writer is not None:
        writer.close()
    if stop.requested and run.step < last_step:
        raise Interrupted(f"stopped after step {run.step} of {run.total_steps}; its checkpoint is in "
                          f"{run.out_dir / ckpt.CHECKPOINT_DIR / ckpt.step_dir_name(run.step)}: run the same command "
                          f"with --resume latest to continue exactly")
    return _finish(run)


class _StopRequest:
    """SIGINT handler: the first Ctrl-C asks the loop to stop after the current step, a second one stops at once."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: finishing this step and saving a checkpoint (Ctrl-C again to stop at once)")


@contextlib.contextmanager
def stop_on_interrupt(enabled: bool = True) -> Iterator[_StopRequest]:
    """Within the block, Ctrl-C sets ``.requested`` instead of raising (main thread of a single process only:
    under torchrun every rank would have to agree on the step, so Ctrl-C keeps its default there and the
    run resumes from its last checkpoint)."""
    stop = _StopRequest()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _start_fresh(run: Run) -> None:
    """A fresh run: move an earlier run aside when allowed, save the starting weights, start the metrics."""
    if (run.out_dir / ckpt.FINAL_DIR).exists() or ckpt.list_checkpoints(run.out_dir):
        log.warning("moved the earlier run in %s aside to %s", run.out_dir, move_aside(run.out_dir))
    run.out_dir.mkdir(parents=True, exist_ok=True)
    run.model.save_pretrained(run.out_dir / ckpt.INIT_DIR, metadata={"step": 0, "seed": run.cfg.seed})
    rewrite_metrics_until(run.out_dir / "metrics.jsonl", 0)
    for bad in run.index_bad[:20]:
        log.warning("skipped: %s", bad)


def train_step(run: Run, forward: nn.Module, batches: Iterator[tuple[int, int, dict[str, Any]]],
               meter: Meter) -> torch.Tensor:
    """One optimizer step over ``grad_accum_steps`` micro-batches; returns the gradient norm before clipping."""
    cfg, env, accum = run.cfg, run.env, run.cfg.optim.grad_accum_steps
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]
    for micro in range(accum):
        run.epoch, run.position, batch = next(batches)
        for bad in batch.pop("bad"):
            run.load_bad.setdefault((bad.file, bad.record, bad.field), bad)
        if env.distributed:
            batch = _equalize_batch(batch)  # gathering needs the same batch size on every rank
        if batch["images"].shape[0] == 0:
            continue  # every item failed to load (on some rank, under DDP: all ranks skip together)
        batch = _to_device(batch, run.device)
        sync = micro == accum - 1 or not env.distributed
        with contextlib.nullcontext() if sync else forward.no_sync():
            with torch.autocast(run.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                f = forward(batch)
                losses = run.loss_fn(
                    f["image_features"].float(), f["text_features"].float(), f["logit_scale"].float(),
                    None if f["logit_bias"] is None else f["logit_bias"].float(),
                    neg_image_features=f["neg_image_features"].float(), neg_image_mask=batch["neg_image_mask"],
                    neg_text_features=f["neg_text_features"].float(), neg_text_mask=batch["neg_text_mask"],
                    neg_text_kind=batch["neg_text_kind"], pair_ids=batch["pair_ids"],
                )
            run.scaler.scale(losses["loss"] / accum).backward()
        meter.add(losses, images=batch["images"].shape[0] + int(batch["neg_image_mask"].sum()))
    run.scaler.unscale_(run.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.optim.grad_clip or float("inf"))
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    with torch.no_grad():
        run.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
    run.step += 1
    return grad_norm


def _log_metrics(run: Run, meter: Meter, lr: float, grad_norm: torch.Tensor, writer: Any) -> dict[str, Any]:
    """Reduce the meter over ranks; rank 0 appends the line to ``metrics.jsonl`` (and TensorBoard)."""
    run.load_bad = _merge_bad(run.load_bad, run.env)
    record = {"step": run.step, "epoch": run.epoch, "lr": lr, **meter.reduce(run.env.world_size),
              "grad_norm": float(grad_norm), "logit_scale": float(run.model.logit_scale.detach().exp()),
              "bad_records": len(run.index_bad) + len(run.load_bad)}
    if run.env.is_main:
        append_jsonl(run.out_dir / "metrics.jsonl", record)
        if writer is not None:
            for key, value in record.items():
                writer.add_scalar(f"train/{key}", value, run.step)
    return record


def _finish(run: Run) -> TrainResult:
    """Rank 0 writes ``final/`` (when every step ran), ``train_summary.json`` and the loss curve."""
    out_dir, bad_all = run.out_dir, run.index_bad + list(run.load_bad.values())
    history: list[dict[str, Any]] = []
    if run.env.is_main:
        if run.step == run.total_steps:
            ckpt.save_model_dir(out_dir / ckpt.FINAL_DIR, run.model, run.cfg, metadata={"step": run.step})
        history = [record for _, record in iter_jsonl(out_dir / "metrics.jsonl")]
        atomic_write_json(out_dir / "train_summary.json", {
            "steps": run.step, "final_loss": history[-1]["loss"] if history else None,
            "bad_records": len(bad_all), "bad_at_index": len(run.index_bad), "bad_at_load": len(run.load_bad),
            "bad_record_details": [str(b) for b in bad_all],
        })
        if run.cfg.plot:
            plot_loss_curve(history, out_dir / "loss_curve.png")
        log.info("done: %d steps, %d bad records skipped (%d at index time, %d at load time); model in %s",
                 run.step, len(bad_all), len(run.index_bad), len(run.load_bad), out_dir / ckpt.FINAL_DIR)
    barrier()
    return TrainResult(out_dir, out_dir / ckpt.FINAL_DIR, run.step, history, bad_all)


def _report_token_check(dataset: Any, cfg: TrainConfig, out_dir: Path) -> None:
    """Log the tokenization check of the training captions and keep it as ``tokenization_check.json``."""
    report = getattr(dataset, "token_check", None)
    if report is None:
        return
    atomic_write_json(out_dir / "tokenization_check.json", {"mode": cfg.data.tokenization_check, **report.to_dict()})
    if report.collisions:
        action = "dropped from training" if cfg.data.tokenization_check == "drop" else "kept (data.tokenization_check=warn)"
        log.warning("%s\n  these negatives are %s", report.summary(), action)
    else:
        log.info("%s", report.summary())


def _tensorboard(out_dir: Path) -> Any:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise ImportError("tensorboard=true needs the tensorboard package: pip install tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out_dir / "tensorboard"))


# ------------------------------------------------------------------------------------- outputs
def rewrite_metrics_until(path: Path, step: int) -> None:
    """Drop metric lines after ``step`` (all of them for a fresh run, ``step`` 0), atomically; a line that is not
    JSON (torn by a kill in the middle of a write) goes too."""
    if not path.is_file():
        return
    kept = []
    for _, record in iter_jsonl(path, return_errors=True):
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            log.warning("dropped from the metrics: %s", record if isinstance(record, Exception) else f"{path}: {record!r:.80}")
        elif record["step"] <= step:
            kept.append(record)
    atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in kept))


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
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
