"""Vision-tower forward throughput: MMCLIPVisionTower vs upstream LLaVA's CLIPVisionTower, same weights.

One random open_clip ViT is saved as an MMCLIP checkpoint and exported (``mmclip_plugin.tower.hf_export``) to a
transformers CLIPVisionModel directory; upstream's ``CLIPVisionTower`` loads the export, ours loads
the checkpoint. Both run the same batch, interleaved in the same process (so background load hits
both alike), with LLaVA-1.5's settings (``mm_vision_select_layer=-2``, ``'patch'``). Printed: the
median images/s of each, the ratio ours / upstream (goal >= 1.0x), and the max feature difference.

    python benchmarks/bench_tower.py                         # ViT-B-32 @ 224, batch 8, CPU: ~1 minute
    python benchmarks/bench_tower.py --llava-step            # + a tiny LLaVA training step with each tower
    python benchmarks/bench_tower.py --full                  # ViT-L-14-336, batch 16
    python benchmarks/bench_tower.py --model ViT-L-14-336 --device cuda --dtype bf16 --batch 32
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import types
from pathlib import Path

import torch

from llava_patches.compat import get_upstream_symbol
from mmclip_plugin.config import ModelConfig
from mmclip_plugin.model import create_model
from mmclip_plugin.tower.hf_export import export_hf_clip
from mmclip_plugin.tower.vision_tower import MMCLIPVisionTower

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture (random weights)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per tower")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--select-layer", type=int, default=-2)
    parser.add_argument("--select-feature", choices=["patch", "cls_patch"], default="patch")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--full", action="store_true", help="the goal size: ViT-L-14-336, batch 16")
    parser.add_argument("--llava-step", action="store_true",
                        help="also time a LLaVA training step (tiny Llama) with each tower")
    args = parser.parse_args(argv)
    if args.full:
        args.model, args.batch = "ViT-L-14-336", max(args.batch, 16)
    return args


def build_towers(args: argparse.Namespace, root: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(ours, upstream) on the same random weights, moved to the device and dtype like LLaVA's train.py."""
    torch.manual_seed(0)
    ckpt = create_model(ModelConfig(name=args.model)).save_pretrained(root / "mmclip")
    hf_dir = export_hf_clip(ckpt, root / "hf", verify=False)  # the feature difference is printed below
    tower_args = types.SimpleNamespace(mm_vision_select_layer=args.select_layer,
                                       mm_vision_select_feature=args.select_feature)
    upstream_cls = get_upstream_symbol("llava.model.multimodal_encoder.clip_encoder", "CLIPVisionTower")
    ours = MMCLIPVisionTower(f"mmclip:{ckpt}", tower_args)
    upstream = upstream_cls(str(hf_dir), tower_args)
    dtype = DTYPES[args.dtype]
    return ours.to(device=args.device, dtype=dtype), upstream.to(device=args.device, dtype=dtype)


def build_llava(tower_name: str, args: argparse.Namespace) -> torch.nn.Module:
    """A tiny random LLaVA-Llama (2 layers, width 256) whose vision tower is built by upstream's
    ``initialize_vision_modules`` with the ``mmclip:`` names registered."""
    from llava_patches.register import registered

    module = "llava.model.language_model.llava_llama"
    config = get_upstream_symbol(module, "LlavaConfig")(
        vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=1024,
    )
    torch.manual_seed(0)
    model = get_upstream_symbol(module, "LlavaLlamaForCausalLM")(config)
    model_args = types.SimpleNamespace(
        vision_tower=tower_name, mm_vision_select_layer=args.select_layer, mm_vision_select_feature=args.select_feature,
        pretrain_mm_mlp_adapter=None, mm_patch_merge_type="flat", mm_projector_type="mlp2x_gelu",
    )
    with registered():
        model.get_model().initialize_vision_modules(model_args)
    return model.to(device=args.device, dtype=DTYPES[args.dtype]).train()


def llava_step_times(args: argparse.Namespace, names: dict[str, str], size: int) -> dict[str, float]:
    """Median seconds per LLaVA training step (forward, backward, AdamW step; tower frozen) per tower."""
    models = {name: build_llava(tower, args) for name, tower in names.items()}
    optimizers = {name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
                  for name, m in models.items()}
    gen = torch.Generator().manual_seed(2)
    images = torch.randn(args.batch, 3, size, size, generator=gen).to(device=args.device, dtype=DTYPES[args.dtype])
    input_ids = torch.randint(3, 1000, (args.batch, 64), generator=gen)
    input_ids[:, 1] = -200  # llava.constants.IMAGE_TOKEN_INDEX
    labels = input_ids.clone()
    labels[:, :2] = -100
    input_ids, labels = input_ids.to(args.device), labels.to(args.device)

    def step(name: str) -> float:
        _sync(args.device)
        start = time.perf_counter()
        loss = models[name](input_ids=input_ids, labels=labels, images=images).loss
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)
        _sync(args.device)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(args.warmup + args.iters):
        for name in list(models)[:: 1 if i % 2 == 0 else -1]:
            elapsed = step(name)
            if i >= args.warmup:
                times[name].append(elapsed)
    return {name: statistics.median(t) for name, t in times.items()}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_once(tower: torch.nn.Module, pixels: torch.Tensor, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    tower(pixels)
    _sync(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_tower-") as tmp:
        ours, upstream = build_towers(args, Path(tmp))
        report_forward(args, ours, upstream)
        if args.llava_step:
            names = {"ours": f"mmclip:{Path(tmp) / 'mmclip'}", "upstream": str(Path(tmp) / "hf")}
            step = llava_step_times(args, names, ours.image_size)
            print(f"LLaVA training step (tiny 2-layer Llama, 64 text tokens + {ours.num_patches} visual tokens, "
                  f"batch {args.batch}, tower frozen)")
            print(f"  with MMCLIPVisionTower (ours)     {step['ours'] * 1000:9.1f} ms/step")
            print(f"  with upstream CLIPVisionTower     {step['upstream'] * 1000:9.1f} ms/step")
            print(f"  speed ratio ours / upstream       {step['upstream'] / step['ours']:9.3f}x   (goal >= 0.97x)")


def report_forward(args: argparse.Namespace, ours: torch.nn.Module, upstream: torch.nn.Module) -> None:
    size = ours.image_size
    pixels = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    pixels = pixels.to(device=args.device, dtype=DTYPES[args.dtype])
    with torch.no_grad():
        diff = (ours(pixels).float() - upstream(pixels).float()).abs().max().item()
        for _ in range(args.warmup):
            time_once(ours, pixels, args.device)
            time_once(upstream, pixels, args.device)
        times: dict[str, list[float]] = {"ours": [], "upstream": []}
        for i in range(args.iters):  # interleaved, alternating who goes first
            order = [("ours", ours), ("upstream", upstream)][:: 1 if i % 2 == 0 else -1]
            for name, tower in order:
                times[name].append(time_once(tower, pixels, args.device))
    ips = {name: args.batch / statistics.median(t) for name, t in times.items()}
    print(f"model {args.model} @ {size}px, batch {args.batch}, {args.device} {args.dtype}, "
          f"select_layer {args.select_layer} / {args.select_feature}, {ours.num_patches} patches, "
          f"threads {torch.get_num_threads()}")
    print(f"  MMCLIPVisionTower (ours)          {ips['ours']:9.2f} images/s")
    print(f"  upstream CLIPVisionTower (HF)     {ips['upstream']:9.2f} images/s")
    print(f"  ratio ours / upstream             {ips['ours'] / ips['upstream']:9.3f}x   (goal >= 1.0x)")
    print(f"  max |feature difference|          {diff:9.2e}")


if __name__ == "__main__":
    main()
