"""The GPU path, measured in one run: MMCLIP training steps, the vision tower, a LLaVA step; one JSON.

Each figure is set against its baseline measured in the same run and printed next to its goal:

1. ``mmclip``: training steps of a randomly initialised open_clip ``ViT-L-14-336`` (bf16 autocast, AdamW),
   with and without gradient checkpointing: ours (32 captions x (1 + 9) images, ``HardNegativeLoss``)
   against plain open_clip ``ClipLoss`` on the same 320 images as 320 pairs. Images/s, peak memory, MFU
   from the analytic FLOP count of ``flops.py`` (checked against ``torch.utils.flop_counter``), the
   losses of the timed steps (finite, falling), and the bf16 loss against the fp32 loss on one batch.
2. ``tower``: forward of ``MMCLIPVisionTower`` against upstream LLaVA's ``CLIPVisionTower`` on the same
   weights (exported by ``mmclip-export``): bf16, batch 64, 336 px, select layer -2.
3. ``llava``: a LLaVA training step (upstream's ``LlavaLlamaForCausalLM`` built through ``llava_patches``,
   a random ~0.5B Llama, SDPA, bf16, 8 x 2048 tokens, tower frozen) with our tower and with upstream's.

Warm-up steps run first and are not timed; each figure is the median of the timed repeats (CUDA events
on a GPU, ``perf_counter`` on the CPU). Variants run one after another, each freed before the next, so
that each peak-memory figure is its own (CUDA ``max_memory_allocated``; the CPU has no such counter).
A variant that runs out of GPU memory is recorded as ``out_of_memory``, and the check goes on.

    bash benchmarks/gpu_check.sh                            # on the device: wheels, then this, JSON in $OUT
    python benchmarks/gpu_check.py --device cuda --out gpu_check.json
    python benchmarks/gpu_check.py --tiny --out /tmp/gpu_check.json   # the same code paths on the CPU, seconds
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import bench_mmclip
import bench_tower
import flops
import torch
from gpu_report import GOALS, collect_goals, default_peak_tflops, json_safe, meta, print_report
from measure import free_memory, is_cuda, median, peak_memory, reset_peak_memory, time_calls

SECTIONS = ("mmclip", "tower", "llava")
# LLM sizes per family (bench_tower.LLAVA_LLMS names the families); "full" is ~0.48B parameters.
LLM_SIZES: dict[str, dict[str, dict[str, int]]] = {
    "llama": {
        "full": {"vocab_size": 32000, "hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 32,
                 "num_attention_heads": 8, "num_key_value_heads": 8, "max_position_embeddings": 4096},
        "tiny": bench_tower.TINY_LLM,
    },
}
# Without gradient checkpointing a 336-px ViT-L/14 keeps ~0.54 GB of bf16 activations per trained image
# (~38 bytes x 1024 wide x 577 tokens x 24 blocks): 320 images (~170 GB) fit neither an H100 nor an H200, so
# that pair runs at 8 x (1 + 9) = 80 images per step (~43 GB), ours and ClipLoss alike.
FULL = {"mmclip_model": "ViT-L-14-336", "captions": 32, "captions_no_checkpointing": 8, "image_negatives": 9,
        "tower_model": "ViT-L-14-336", "tower_batch": 64, "llava_batch": 8, "seq_len": 2048, "warmup": 3,
        "repeats": 10}
TINY = {"mmclip_model": "mmclip-tiny-vit", "captions": 2, "captions_no_checkpointing": 2, "image_negatives": 3,
        "tower_model": "mmclip-tiny-vit", "tower_batch": 4, "llava_batch": 2, "seq_len": 48, "warmup": 1,
        "repeats": 3}
BF16_TOLERANCE = 0.02  # |bf16 - fp32| / |fp32| of the loss: bf16 keeps 8 mantissa bits (~0.4% per rounding)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[-1])
    p.add_argument("--tiny", action="store_true", help="small configs and few steps (CPU, seconds)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="gpu_check.json", help="the JSON written (after every section, atomically)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default="bf16")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the accelerator's dense peak for MFU (default: known for H100/H200/A100; none on the CPU)")
    p.add_argument("--llm", choices=sorted(LLM_SIZES), default="llama", help="LLM family of the LLaVA step")
    p.add_argument("--attn", default="sdpa", help="the LLM's attention implementation: sdpa, eager, flash_attention_2")
    p.add_argument("--text-negatives", type=int, default=0, help="caption negatives per caption in ours (K_t)")
    p.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate of the MMCLIP steps")
    p.add_argument("--bf16-tolerance", type=float, default=BF16_TOLERANCE)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; --tiny: 1, as tiny ops only lose time to thread sync)")
    for key, value in FULL.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None,
                       help=f"default {value} (--tiny: {TINY[key]})")
    args = p.parse_args(argv)
    for key, value in (TINY if args.tiny else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.sections = [s for s in SECTIONS if s in args.sections]
    if args.threads is None and args.tiny:
        args.threads = 1
    if args.peak_tflops is None:
        args.peak_tflops = default_peak_tflops(args.device)
    return args


# ------------------------------------------------------------------------------------- 1. MMCLIP
def mmclip_section(args: argparse.Namespace) -> dict[str, Any]:
    """Ours vs ``ClipLoss`` steps, with and without gradient checkpointing; FLOPs; bf16 vs fp32 loss."""
    import open_clip

    from mmclip_plugin.model import register_model_configs

    register_model_configs()
    model_cfg = open_clip.get_model_config(args.mmclip_model)
    image_f, text_f = flops.image_forward_flops(model_cfg), flops.text_forward_flops(model_cfg)
    out: dict[str, Any] = {
        "model": args.mmclip_model, "image_negatives": args.image_negatives, "text_negatives": args.text_negatives,
        "precision": args.precision, "lr": args.lr,
        "flops": {"image_forward": image_f.total, "image_forward_attention": image_f.attention,
                  "text_forward": text_f.total, "text_forward_attention": text_f.attention,
                  "formula": "3 x (images x image forward + texts x text forward), matrix products only; "
                             "the recomputation of gradient checkpointing is not counted"},
        "runs": {}, "ratios": {},
    }
    for key, checkpointing, captions in (("checkpointing", True, args.captions),
                                         ("no_checkpointing", False, args.captions_no_checkpointing)):
        images = captions * (1 + args.image_negatives)
        texts = {"ours": captions * (1 + args.text_negatives), "clip": images}
        setting = out["runs"][key] = {"grad_checkpointing": checkpointing, "captions": captions,
                                      "images_per_step": images, "texts_per_step": texts, "variants": {}}
        for variant in ("ours", "clip"):
            first = checkpointing and variant == "ours"
            record = run_mmclip_variant(args, variant, checkpointing, captions, out if first else None)
            record["flops_per_step"] = flops.training_step_flops(model_cfg, images, texts[variant])
            record["mfu"] = _mfu(record["flops_per_step"], record.get("step_s"), args.peak_tflops)
            setting["variants"][variant] = record
        out["ratios"][key] = _ratios(setting["variants"]["ours"], setting["variants"]["clip"], "images_per_s")
    return out


def run_mmclip_variant(args: argparse.Namespace, variant: str, checkpointing: bool, captions: int,
                       checks: dict[str, Any] | None) -> dict[str, Any]:
    """Build, (optionally check,) warm up and time one variant; free it; ``checks`` receives the model checks."""
    ns = argparse.Namespace(device=args.device, model=args.mmclip_model, precision=args.precision,
                            batch_size=captions, image_negatives=args.image_negatives,
                            text_negatives=args.text_negatives, image_size=None, lr=args.lr,
                            grad_checkpointing=checkpointing)
    record: dict[str, Any] = {}
    prepared = None
    reset_peak_memory(args.device)
    try:
        prepared = bench_mmclip.prepare(ns, variant)
        if checks is not None:
            checks["flops"]["counted"] = _counted(prepared.model, prepared.device)
            checks["bf16_vs_fp32"] = bf16_vs_fp32(prepared, args.bf16_tolerance)
            reset_peak_memory(args.device)  # the fp32 forward of the check is not part of a step
        seconds, losses = time_calls(prepared.step, args.device, args.warmup, args.repeats)
        record.update(status="ok", peak_memory_bytes=peak_memory(args.device))
        record.update(_timing(seconds, prepared.images_per_step, "images"), **_loss_trend(losses))
    except torch.OutOfMemoryError as exc:
        record.update(status="out_of_memory", error=str(exc).splitlines()[0], peak_memory_bytes=peak_memory(args.device))
    finally:
        del prepared
        free_memory(args.device)
    return record


def _counted(model: Any, device: torch.device) -> dict[str, int]:
    counted = flops.counted_forward_flops(model, device)
    return {"image_forward": counted["image"], "text_forward": counted["text"],
            "note": "torch.utils.flop_counter on one image and one caption; it sees CUDA attention kernels, "
                    "not the CPU one"}


def bf16_vs_fp32(prepared: Any, tolerance: float) -> dict[str, Any]:
    """The loss of one batch in bf16 autocast and in full fp32 (TF32 off), before any step."""
    saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False  # the patch embedding is a convolution
    try:
        with torch.no_grad():
            fp32 = float(prepared.loss_of())
            with bench_mmclip.autocast(prepared.device, "bf16"):
                bf16 = float(prepared.loss_of())
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32 = saved[1]
    rel = abs(bf16 - fp32) / max(abs(fp32), 1e-12)
    return {"loss_fp32": fp32, "loss_bf16": bf16, "abs_diff": abs(bf16 - fp32), "rel_diff": rel,
            "tolerance_rel": tolerance, "within_tolerance": bool(rel <= tolerance)}


# ------------------------------------------------------------------------------------- 2. tower forward
def tower_section(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Our tower's forward vs upstream's ``CLIPVisionTower`` on the exported weights (interleaved, median)."""
    ns = _tower_namespace(args, args.tower_model)
    ours, upstream = bench_tower.build_towers(ns, root)
    try:
        result = bench_tower.compare_forward(ours, upstream, args.tower_batch, args.device,
                                             bench_tower.DTYPES[args.precision], args.warmup, args.repeats)
        out = {"model": args.tower_model, "image_size": ours.image_size, "batch": args.tower_batch,
               "select_layer": ns.select_layer, "select_feature": ns.select_feature, "dtype": args.precision,
               "num_patches": ours.num_patches, **result}
        out["ratios"] = {"images_per_s": result["ours_images_per_s"] / result["upstream_images_per_s"]}
        return out
    finally:
        del ours, upstream
        free_memory(args.device)


# ------------------------------------------------------------------------------------- 3. LLaVA step
def llava_section(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """A LLaVA training step with our tower and with upstream's, one after the other (own peak memory each)."""
    from mmclip_plugin.tower.weights import read_vision_config

    if not (root / "mmclip").is_dir() or not (root / "hf").is_dir():
        raise RuntimeError("the LLaVA step needs the tower section's checkpoints, which it did not write (see errors.tower)")
    vision = read_vision_config(root / "mmclip")
    patches = (vision.image_size // vision.patch_size) ** 2
    text_tokens = args.seq_len - patches + 1  # the image placeholder becomes `patches` embeddings
    if text_tokens < 3:
        raise ValueError(f"--seq-len {args.seq_len} leaves no text beside the {patches} image tokens of {vision.checkpoint}")
    llm_config = LLM_SIZES[args.llm]["tiny" if args.tiny else "full"]
    out: dict[str, Any] = {"llm": args.llm, "llm_config": llm_config, "attn_implementation": args.attn,
                           "batch": args.llava_batch, "seq_len": args.seq_len, "image_tokens": patches,
                           "tokens_per_step": args.llava_batch * args.seq_len, "dtype": args.precision, "runs": {}}
    ns = _tower_namespace(args, args.tower_model)
    for name, tower in (("ours", f"mmclip:{root / 'mmclip'}"), ("upstream", str(root / "hf"))):
        record: dict[str, Any] = {"tower": tower}
        model = step = None
        reset_peak_memory(args.device)
        try:
            model = bench_tower.build_llava(tower, ns, llm=args.llm, llm_config=llm_config,
                                            attn_implementation=args.attn)
            inputs = bench_tower.llava_inputs(args.llava_batch, text_tokens, llm_config["vocab_size"], vision.image_size,
                                              args.device, bench_tower.DTYPES[args.precision])
            record.update(_llava_model_facts(model))
            step = bench_tower.make_llava_step(model, inputs)
            seconds, losses = time_calls(step, args.device, args.warmup, args.repeats)
            record.update(status="ok", peak_memory_bytes=peak_memory(args.device))
            record.update(_timing(seconds, out["tokens_per_step"], "tokens"), **_loss_trend(losses))
        except torch.OutOfMemoryError as exc:
            record.update(status="out_of_memory", error=str(exc).splitlines()[0],
                          peak_memory_bytes=peak_memory(args.device))
        finally:
            del model, step
            free_memory(args.device)
        out["runs"][name] = record
    out["ratios"] = _ratios(out["runs"]["ours"], out["runs"]["upstream"], "tokens_per_s")
    return out


def _llava_model_facts(model: Any) -> dict[str, Any]:
    tower_ids = {id(p) for p in model.get_model().get_vision_tower().parameters()}
    params = [p for p in model.parameters() if id(p) not in tower_ids]
    return {"attention_class": type(model.get_model().layers[0].self_attn).__name__,
            "tower_class": type(model.get_model().get_vision_tower()).__name__,
            "llm_parameters": sum(p.numel() for p in params),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}


# ------------------------------------------------------------------------------------- shared pieces
def _tower_namespace(args: argparse.Namespace, model: str) -> argparse.Namespace:
    return argparse.Namespace(model=model, select_layer=-2, select_feature="patch", dtype=args.precision,
                              device=args.device)


def _timing(seconds: list[float], per_step: int, unit: str) -> dict[str, Any]:
    step_s = median(seconds)
    return {"step_s": step_s, f"{unit}_per_s": per_step / step_s, "step_s_all": seconds}


def _loss_trend(losses: list[torch.Tensor]) -> dict[str, Any]:
    values = [float(v) for v in losses]
    return {"losses": values, "loss_finite": all(math.isfinite(v) for v in values),
            "loss_falling": len(values) > 1 and values[-1] < values[0]}


def _mfu(step_flops: int, step_s: float | None, peak_tflops: float | None) -> float | None:
    if step_s is None or peak_tflops is None:
        return None
    return step_flops / step_s / (peak_tflops * 1e12)


def _ratios(ours: dict[str, Any], base: dict[str, Any], speed_key: str) -> dict[str, float | None]:
    """ours / baseline for speed and peak memory, None where either did not run (or memory is not measured)."""
    def ratio(key: str) -> float | None:
        a, b = ours.get(key), base.get(key)
        return a / b if a is not None and b else None

    return {speed_key: ratio(speed_key), "peak_memory": ratio("peak_memory_bytes")}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every asked section, the JSON rewritten after each (a run cut short still leaves its figures).

    A section that fails is recorded under ``errors`` with its traceback and the next one runs: on a
    device lent for minutes, one failure must not hide the other figures. (The LLaVA step needs the
    tower section's checkpoints and runs it first when it was not asked for.)
    """
    from mmgeolm_core.io import atomic_write_json

    report: dict[str, Any] = {"meta": meta(args), "goals": [], "errors": {}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        root = Path(tmp)
        todo = list(args.sections)
        if "llava" in todo and "tower" not in todo:
            todo.insert(todo.index("llava"), "tower")
        for section in todo:
            t0 = time.perf_counter()
            print(f"== {section}", flush=True)
            try:
                report[section] = {"mmclip": lambda: mmclip_section(args), "tower": lambda: tower_section(args, root),
                                   "llava": lambda: llava_section(args, root)}[section]()
            except Exception as exc:  # noqa: BLE001 - recorded with its traceback, and the exit status says so
                report["errors"][section] = {"type": type(exc).__name__, "message": str(exc),
                                             "traceback": traceback.format_exc()}
                print(traceback.format_exc(), file=sys.stderr, flush=True)
            report["meta"].setdefault("section_seconds", {})[section] = time.perf_counter() - t0
            report["meta"]["total_seconds"] = time.perf_counter() - start
            report["goals"] = collect_goals(report, GOALS)
            atomic_write_json(args.out, json_safe(report))
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if is_cuda(args.device) and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible; use --tiny --device cpu for the CPU run")
    report = run(args)
    print_report(report)
    print(f"\nJSON: {args.out}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
