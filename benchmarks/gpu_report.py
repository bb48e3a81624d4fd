"""What ``gpu_check.py`` records beside its figures (machine, versions, the measured matmul ceiling), its
goals, and the table it prints. Not a benchmark itself: ``gpu_check.py`` imports it as a sibling module.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import math
import platform
import sys
from typing import Any, NamedTuple

import torch
from measure import is_cuda, median, time_calls

# Dense bf16 peaks from the datasheets (TFLOP/s), matched against torch.cuda.get_device_name; first match wins.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4),
                                               ("A100", 312.0))
DISTRIBUTIONS = ("torch", "transformers", "tokenizers", "huggingface-hub", "accelerate", "open_clip_torch", "timm",
                 "llava-torch", "numpy")


class Goal(NamedTuple):
    """A figure of the report (``path`` of keys into it), its comparison and target."""

    name: str
    path: tuple[str, ...]
    op: str  # ">=" or "<="
    target: float


GOALS: tuple[Goal, ...] = (
    Goal("MMCLIP images/s, ours / ClipLoss, checkpointing", ("mmclip", "ratios", "checkpointing", "images_per_s"),
         ">=", 0.9),
    Goal("MMCLIP peak memory, ours / ClipLoss, checkpointing", ("mmclip", "ratios", "checkpointing", "peak_memory"),
         "<=", 1.1),
    Goal("MMCLIP images/s, ours / ClipLoss, no checkpointing", ("mmclip", "ratios", "no_checkpointing",
                                                               "images_per_s"), ">=", 0.9),
    Goal("MMCLIP peak memory, ours / ClipLoss, no checkpointing", ("mmclip", "ratios", "no_checkpointing",
                                                                  "peak_memory"), "<=", 1.1),
    Goal("MMCLIP MFU (bf16, Hopper), ours, checkpointing", ("mmclip", "runs", "checkpointing", "variants", "ours", "mfu"),
         ">=", 0.35),
    Goal("MMCLIP MFU (bf16, Hopper), ours, no checkpointing", ("mmclip", "runs", "no_checkpointing", "variants", "ours",
                                                                 "mfu"),
         ">=", 0.35),
    Goal("tower forward images/s, ours / upstream CLIPVisionTower", ("tower", "ratios", "images_per_s"), ">=", 1.0),
    Goal("LLaVA step tokens/s, our tower / upstream's", ("llava", "ratios", "tokens_per_s"), ">=", 0.97),
)


def default_peak_tflops(device: str) -> float | None:
    """The datasheet dense bf16 peak of the visible GPU, or None (CPU, unknown card)."""
    if not is_cuda(device):
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


def matmul_tflops(device: str, dtype: torch.dtype, size: int) -> float:
    """Achieved TFLOP/s of a ``size``-cubed matrix product on random data (median of 10 after 3 warm-ups)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds, _ = time_calls(lambda: a @ b, device, 3, 10)
    return 2 * size**3 / median(seconds) / 1e12


def meta(args: argparse.Namespace) -> dict[str, Any]:
    """Machine, versions, date and the settings that shape every figure."""
    versions = {}
    for dist in DISTRIBUTIONS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    cuda = is_cuda(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.precision]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()}, "
                                                            f"{torch.get_num_threads()} threads)",
        "cuda": torch.version.cuda if cuda else None, "python": sys.version.split()[0], "versions": versions,
        "tiny": args.tiny, "argv": sys.argv[1:], "precision": args.precision, "warmup_steps": args.warmup,
        "timed_repeats": args.repeats, "timer": "CUDA events" if cuda else "time.perf_counter",
        "statistic": "median of the timed repeats", "peak_tflops": args.peak_tflops,
        "matmul_tflops": matmul_tflops(args.device, dtype, 8192 if cuda else 256),
        "matmul_size": 8192 if cuda else 256,
    }


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (a NaN loss, say) as None: strict JSON; the flags say what it was."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _get(report: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = report
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def collect_goals(report: dict[str, Any], goals: tuple[Goal, ...]) -> list[dict[str, Any]]:
    """Each goal whose section ran, with its value and whether it is met (None where the figure is missing)."""
    out = []
    for goal in goals:
        if goal.path[0] not in report:
            continue
        value = _get(report, goal.path)
        met = None if value is None else (value >= goal.target if goal.op == ">=" else value <= goal.target)
        out.append({"name": goal.name, "path": ".".join(goal.path), "value": value, "goal": f"{goal.op} {goal.target:g}",
                    "met": met})
    return out


# ------------------------------------------------------------------------------------- the printed table
def _num(value: Any, fmt: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, fmt)


def _flops(value: int | None) -> str:
    if value is None:
        return "-"
    scale, unit = next((s or 1.0, u) for s, u in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (0.0, "")) if value >= s)
    return f"{value / scale:.3g} {unit}FLOP"


def _losses(record: dict[str, Any]) -> str:
    values = record.get("losses")
    if not values:
        return "-"
    return f"{values[0]:.4f} -> {values[-1]:.4f}" + ("" if record["loss_finite"] and record["loss_falling"] else " (!)")


def print_report(report: dict[str, Any]) -> None:
    """Markdown tables of every section and the goals."""
    m = report["meta"]
    label = "CPU figures: a code-path check, not the goals' conditions" if m["cuda"] is None else "GPU figures"
    print(f"\n{label}. {m['device']}, torch {m['versions']['torch']}, {m['precision']}; warm-up steps (not timed): "
          f"{m['warmup_steps']}; median of {m['timed_repeats']} timed ({m['timer']}); matmul {m['matmul_size']}^3: "
          f"{m['matmul_tflops']:.1f} TFLOP/s; MFU against {_num(m['peak_tflops'], 'g')} TFLOP/s")
    gib = 1 / 2**30
    if "mmclip" in report:
        r = report["mmclip"]
        print(f"\nMMCLIP {r['model']}: captions x (1 + {r['image_negatives']}) images per step for ours, as many "
              f"image-caption pairs for ClipLoss")
        print("| variant | checkpointing | images/step | status | step ms | images/s | peak GiB | FLOP/step | MFU "
              "| loss (timed steps) |")
        print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |")
        for setting in r["runs"].values():
            for name, x in setting["variants"].items():
                print(f"| {name} | {setting['grad_checkpointing']} | {setting['images_per_step']} | {x['status']} | "
                      f"{_num(x.get('step_s'), '.1f', 1e3)} | {_num(x.get('images_per_s'), '.1f')} | "
                      f"{_num(x.get('peak_memory_bytes'), '.2f', gib)} | {_flops(x['flops_per_step'])} | "
                      f"{_num(x.get('mfu'), '.1%')} | {_losses(x)} |")
        f = r["flops"]
        counted = f.get("counted", {})
        print(f"FLOPs (analytic, flops.py): image forward {_flops(f['image_forward'])} (flop_counter: "
              f"{_flops(counted.get('image_forward'))}), caption forward {_flops(f['text_forward'])}; training step "
              f"x3, gradient checkpointing's recomputation not counted")
        if "bf16_vs_fp32" in r:
            b = r["bf16_vs_fp32"]
            print(f"loss bf16 {b['loss_bf16']:.5f} vs fp32 {b['loss_fp32']:.5f}: relative difference "
                  f"{b['rel_diff']:.2e} (tolerance {b['tolerance_rel']:g}) -> {'ok' if b['within_tolerance'] else 'FAIL'}")
    if "tower" in report:
        t = report["tower"]
        print(f"\nTower forward {t['model']} @ {t['image_size']} px, batch {t['batch']}, {t['dtype']}, select layer "
              f"{t['select_layer']}: ours {t['ours_images_per_s']:.1f} images/s, upstream "
              f"{t['upstream_images_per_s']:.1f}; max |feature diff| {t['max_abs_feature_diff']:.2e} "
              f"(relative {t['rel_feature_diff']:.2e})")
    if "llava" in report:
        r = report["llava"]
        print(f"\nLLaVA step, {r['llm']} LLM, {r['batch']} x {r['seq_len']} tokens ({r['image_tokens']} image tokens "
              f"each), {r['dtype']}, {r['attn_implementation']}")
        print("| tower | status | LLM params | attention | step ms | tokens/s | peak GiB | loss (timed steps) |")
        print("| --- | --- | ---: | --- | ---: | ---: | ---: | --- |")
        for name, x in r["runs"].items():
            print(f"| {name} | {x['status']} | {_num(x.get('llm_parameters'), '.3g')} | {x.get('attention_class', '-')} | "
                  f"{_num(x.get('step_s'), '.1f', 1e3)} | {_num(x.get('tokens_per_s'), '.0f')} | "
                  f"{_num(x.get('peak_memory_bytes'), '.2f', gib)} | {_losses(x)} |")
    for section, error in report.get("errors", {}).items():
        print(f"\nsection {section} FAILED: {error['type']}: {error['message']}")
    print("\n| goal | value | target | met |")
    print("| --- | ---: | --- | --- |")
    for g in report["goals"]:
        met = "-" if g["met"] is None else ("yes" if g["met"] else "no")
        print(f"| {g['name']} | {_num(g['value'], '.3f')} | {g['goal']} | {met} |")
