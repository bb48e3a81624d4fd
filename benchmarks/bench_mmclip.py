"""MMCLIP train-step speed and memory against two named baselines, in one run.

At **equal images per step** (B captions x (1 + K) images for ours; B (1 + K) image-caption pairs for
plain CLIP), each variant runs full training steps (forward, loss, backward, AdamW step) of the same
model on random tensors:

* ``ours``: our trainer's step, ``ContrastiveForward`` + ``HardNegativeLoss`` (in-batch softmax,
  sigmoid image negatives, softmax caption negatives);
* ``clip``: plain open_clip training, ``open_clip.loss.ClipLoss`` on image-caption pairs (goal: ours
  >= 0.9x its images/s and <= 1.1x its peak memory);
* ``loop``: our forward with the reference's per-sample Python-loop loss
  (:func:`~mmclip_plugin.losses.reference.reference_loop_loss`; goal: ours faster).

Step times are medians over rounds that alternate the variants in one process (fair on a shared,
noisy machine). Peak memory is measured in a fresh process per variant: on CUDA
``torch.cuda.max_memory_allocated``; on CPU the peak resident set size of that process
(``ru_maxrss``: model, optimizer state, activations and the Python runtime). A second table times the
loss alone (forward + backward on random features, no encoder) at a larger batch, where the loop's
cost is not hidden behind the encoder. Model FLOP utilisation counts the step's FLOPs with
``torch.utils.flop_counter`` and divides by ``--peak-tflops`` (989: H100 dense bf16).

    python benchmarks/bench_mmclip.py                       # tiny ViT on CPU, about a minute
    python benchmarks/bench_mmclip.py --device cuda --model ViT-L-14-336 --precision bf16 --batch-size 32
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from measure import median, peak_memory, reset_peak_memory, sync, time_interleaved

VARIANTS = ("ours", "clip", "loop")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--model", default="mmclip-tiny-vit", help="open_clip model name (random weights)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--batch-size", type=int, default=8, help="captions per step for ours (B)")
    p.add_argument("--image-negatives", type=int, default=4, help="K image negatives per caption")
    p.add_argument("--text-negatives", type=int, default=4, help="K caption negatives per image")
    p.add_argument("--image-size", type=int, default=None, help="force the model's input size")
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant and round")
    p.add_argument("--rounds", type=int, default=6, help="timing rounds alternating the variants (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="accelerator peak for MFU (H100 bf16 dense)")
    p.add_argument("--loss-batch", type=int, default=256, help="batch of the loss-only comparison")
    p.add_argument("--full", action="store_true", help="bigger batch and more steps")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.full:
        args.batch_size, args.steps, args.rounds, args.loss_batch = max(args.batch_size, 32), 10, 5, 1024
    return args


# ------------------------------------------------------------------------------------- one variant
def build(args: argparse.Namespace) -> tuple[Any, Any, torch.device]:
    """The model (seed 0; ``args.grad_checkpointing`` optional) and our loss (caption negatives off at K = 0)."""
    from mmclip_plugin.config import ModelConfig
    from mmclip_plugin.losses import LossConfig, configure_scalars
    from mmclip_plugin.model import create_model

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model(ModelConfig(name=args.model, force_image_size=args.image_size,
                                     grad_checkpointing=getattr(args, "grad_checkpointing", False)), device=device)
    loss_cfg = LossConfig(in_batch="softmax", image_negatives="sigmoid",
                          text_negatives="softmax" if args.text_negatives else None)
    if args.worker != "clip":
        configure_scalars(model, loss_cfg)
    return model, loss_cfg, device


def make_batch(args: argparse.Namespace, model: Any, device: torch.device) -> dict[str, torch.Tensor]:
    """Random tensors shaped like one collated batch (every negative slot valid)."""
    g = torch.Generator().manual_seed(0)
    b, ki, kt, s = args.batch_size, args.image_negatives, args.text_negatives, model.image_size
    length = int(model.model_cfg["text_cfg"].get("context_length", 77))
    vocab = int(model.model_cfg["text_cfg"].get("vocab_size", 49408))
    batch = {
        "images": torch.randn(b, 3, s, s, generator=g),
        "texts": torch.randint(1, vocab, (b, length), generator=g),
        "neg_images": torch.randn(b, ki, 3, s, s, generator=g),
        "neg_image_mask": torch.ones(b, ki, dtype=torch.bool),
        "neg_texts": torch.randint(1, vocab, (b, kt, length), generator=g),
        "neg_text_mask": torch.ones(b, kt, dtype=torch.bool),
        "neg_text_kind": torch.zeros(b, kt, dtype=torch.long),
        # the plain-CLIP baseline's captions: one of its own for each of the B (1 + K) images
        "pair_texts": torch.randint(1, vocab, (b * (1 + ki), length), generator=g),
    }
    return {k: v.to(device) for k, v in batch.items()}


def make_loss_fn(args: argparse.Namespace, model: Any, loss_cfg: Any,
                 batch: dict[str, torch.Tensor]) -> Callable[[], torch.Tensor]:
    """A closure computing the chosen variant's loss on ``batch``; the caller sets autocast and grad mode."""
    from open_clip.loss import ClipLoss

    from mmclip_plugin.losses import HardNegativeLoss
    from mmclip_plugin.losses.reference import reference_loop_loss
    from mmclip_plugin.train_setup import ContrastiveForward

    if args.worker == "clip":
        # the same images as ours, as B (1 + K) plain image-caption pairs
        images = torch.cat([batch["images"], batch["neg_images"].flatten(0, 1)])
        texts = batch["pair_texts"]
        clip_loss = ClipLoss()

        def clip_loss_of() -> torch.Tensor:
            img = model.encode_image(images)
            txt = model.encode_text(texts)
            return clip_loss(img.float(), txt.float(), model.logit_scale.exp().float())

        return clip_loss_of
    forward = ContrastiveForward(model)
    ours = HardNegativeLoss(loss_cfg)

    def loss_of() -> torch.Tensor:
        f = forward(batch)
        feats = {k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in f.items()}
        if args.worker == "ours":
            return ours(feats["image_features"], feats["text_features"], feats["logit_scale"], feats["logit_bias"],
                        neg_image_features=feats["neg_image_features"], neg_image_mask=batch["neg_image_mask"],
                        neg_text_features=feats["neg_text_features"], neg_text_mask=batch["neg_text_mask"],
                        neg_text_kind=batch["neg_text_kind"])["loss"]
        return reference_loop_loss(feats["image_features"], feats["text_features"], feats["logit_scale"],
                                   feats["logit_bias"], neg_image_features=feats["neg_image_features"],
                                   neg_text_features=feats["neg_text_features"])["loss"]

    return loss_of


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Mixed precision the way our trainer applies it (``fp32``: autocast off)."""
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=amp, enabled=amp is not None)


def step_fn(args: argparse.Namespace, model: Any, loss_of: Callable[[], torch.Tensor],
            device: torch.device) -> Callable[[], torch.Tensor]:
    """One training step (autocast forward and loss, backward, AdamW step); returns the detached loss."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=getattr(args, "lr", 1e-5))

    def step() -> torch.Tensor:
        with autocast(device, args.precision):
            loss = loss_of()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()  # read by the caller after timing: .item() here would sync every step

    return step


class Prepared(NamedTuple):
    """One variant ready to run: its step, images per step, device, model and loss closure."""

    step: Callable[[], torch.Tensor]
    images_per_step: int
    device: torch.device
    model: Any
    loss_of: Callable[[], torch.Tensor]


def prepare(args: argparse.Namespace, variant: str) -> Prepared:
    """Model, batch and step closure of ``variant`` (each variant gets its own model and optimizer)."""
    args = argparse.Namespace(**{**vars(args), "worker": variant})
    model, loss_cfg, device = build(args)
    model.train()
    batch = make_batch(args, model, device)
    loss_of = make_loss_fn(args, model, loss_cfg, batch)
    return Prepared(step_fn(args, model, loss_of, device), args.batch_size * (1 + args.image_negatives), device,
                    model, loss_of)


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Peak memory and FLOPs of one step of ``args.worker``, alone in this process."""
    from torch.utils.flop_counter import FlopCounterMode

    if args.threads:
        torch.set_num_threads(args.threads)
    step, images, device, _, _ = prepare(args, args.worker)
    reset_peak_memory(device)
    for _ in range(max(2, args.warmup)):
        step()
    peak = peak_memory(device)  # CUDA; None on the CPU, where this process's peak RSS stands in
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return {"variant": args.worker, "images_per_step": images, "peak_bytes": peak,
            "flops_per_step": counter.get_total_flops()}


def time_variants(args: argparse.Namespace) -> dict[str, float]:
    """Seconds per step of each variant: rounds alternate the variants (fair on a shared machine); median."""
    prepared = {v: prepare(args, v) for v in args.variants}
    times = time_interleaved({v: p.step for v, p in prepared.items()}, args.device, args.warmup, args.rounds,
                             calls=args.steps)
    return {v: median(t) for v, t in times.items()}


def run_variant(variant: str, argv: list[str]) -> dict[str, Any]:
    """Run one variant in a fresh interpreter (its own peak memory) and read its JSON line."""
    proc = subprocess.run([sys.executable, __file__, *argv, "--worker", variant], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"variant {variant} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------- loss only
def loss_only(args: argparse.Namespace) -> dict[str, float]:
    """Forward + backward seconds of the two hard-negative losses alone, on random features."""
    from mmclip_plugin.losses import HardNegativeLoss, LossConfig
    from mmclip_plugin.losses.reference import reference_loop_loss

    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    b, ki, kt, d = args.loss_batch, args.image_negatives, args.text_negatives, 512

    def unit(*shape: int) -> torch.Tensor:
        x = torch.randn(*shape, generator=g)
        return (x / x.norm(dim=-1, keepdim=True)).to(device).requires_grad_(True)

    img, txt, nimg, ntxt = unit(b, d), unit(b, d), unit(b, ki, d), unit(b, kt, d)
    scale, bias = torch.tensor(10.0, device=device), torch.tensor(-5.0, device=device)
    ours = HardNegativeLoss(LossConfig(in_batch=None, image_negatives="sigmoid", text_negatives="softmax",
                                       hard_sigmoid_reduction="sum")).to(device)
    runs = {
        "ours": lambda: ours(img, txt, scale, bias, neg_image_features=nimg, neg_text_features=ntxt)["loss"],
        "loop": lambda: reference_loop_loss(img, txt, scale, bias, neg_image_features=nimg, neg_text_features=ntxt)["loss"],
    }
    out = {}
    for name, fn in runs.items():
        fn().backward()  # warm-up
        start = time.perf_counter()
        for _ in range(args.steps):
            fn().backward()
        sync(device)
        out[name] = (time.perf_counter() - start) / args.steps
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args)))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    b, ki = args.batch_size, args.image_negatives
    print(f"model {args.model} on {args.device} ({args.precision}), {b} captions x (1 + {ki}) images = "
          f"{b * (1 + ki)} images per step for every variant; median of {args.rounds} alternating rounds "
          f"of {args.steps} steps after {args.warmup}")
    results = {v: run_variant(v, argv) for v in args.variants}
    for v, seconds in time_variants(args).items():
        r = results[v]
        r.update(step_s=seconds, images_per_s=r["images_per_step"] / seconds,
                 mfu=r["flops_per_step"] / seconds / (args.peak_tflops * 1e12))
    unit = "peak CUDA memory" if args.device == "cuda" else "peak RSS"
    print(f"\n| variant | step s | images/s | {unit} MiB | GFLOP/step | MFU vs {args.peak_tflops:g} TFLOPS |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(f"| {name} | {r['step_s']:.3f} | {r['images_per_s']:.1f} | {r['peak_bytes'] / 2**20:.0f} | "
              f"{r['flops_per_step'] / 1e9:.1f} | {100 * r['mfu']:.2f}% |")
    ours = results.get("ours")
    if ours and "clip" in results:
        c = results["clip"]
        speed, memory = ours["images_per_s"] / c["images_per_s"], ours["peak_bytes"] / c["peak_bytes"]
        print(f"\nours vs open_clip ClipLoss: {speed:.2f}x images/s (goal >= 0.9), {memory:.2f}x {unit} (goal <= 1.1)")
    if ours and "loop" in results:
        print(f"ours vs per-sample loop loss (full step): {ours['images_per_s'] / results['loop']['images_per_s']:.2f}x "
              "images/s (goal > 1)")
    loss = loss_only(args)
    print(f"loss only (forward + backward, B={args.loss_batch}, K={ki}/{args.text_negatives}): ours "
          f"{1e3 * loss['ours']:.2f} ms, per-sample loop {1e3 * loss['loop']:.2f} ms: "
          f"{loss['loop'] / loss['ours']:.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
