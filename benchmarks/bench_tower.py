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
import tempfile
import types
from collections.abc import Callable
from pathlib import Path

import torch
from measure import median, time_interleaved

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


# LLaVA LLM families built by the LLaVA step: name -> (upstream module, config class, model class). Qwen2 joins
# here once llava_patches serves a LLaVA-Qwen2 model.
LLAVA_LLMS: dict[str, tuple[str, str, str]] = {
    "llama": ("llava.model.language_model.llava_llama", "LlavaConfig", "LlavaLlamaForCausalLM"),
}
TINY_LLM = {"vocab_size": 1000, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 1024}


def build_llava(tower_name: str, args: argparse.Namespace, llm: str = "llama", llm_config: dict | None = None,
                attn_implementation: str | None = None) -> torch.nn.Module:
    """A random LLaVA model (default: a tiny 2-layer, width-256 Llama) whose vision tower is built by upstream's
    ``initialize_vision_modules`` with the ``mmclip:`` names registered.

    Args:
        tower_name: ``mmclip:<checkpoint>`` (ours) or an HF CLIP directory (upstream's tower).
        args: ``select_layer``, ``select_feature``, ``device`` and ``dtype`` of the run.
        llm: a key of :data:`LLAVA_LLMS`.
        llm_config: the language model's config keys (default :data:`TINY_LLM`).
        attn_implementation: transformers' attention (``sdpa``, ``eager``, ``flash_attention_2``); None: its default.
    """
    from llava_patches.register import registered

    if llm not in LLAVA_LLMS:
        raise ValueError(f"unknown LLM family {llm!r}; known: {sorted(LLAVA_LLMS)}")
    module, config_name, model_name = LLAVA_LLMS[llm]
    extra = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    config = get_upstream_symbol(module, config_name)(**(TINY_LLM if llm_config is None else llm_config), **extra)
    torch.manual_seed(0)
    model = get_upstream_symbol(module, model_name)(config)
    model_args = types.SimpleNamespace(
        vision_tower=tower_name, mm_vision_select_layer=args.select_layer, mm_vision_select_feature=args.select_feature,
        pretrain_mm_mlp_adapter=None, mm_patch_merge_type="flat", mm_projector_type="mlp2x_gelu",
    )
    with registered():
        model.get_model().initialize_vision_modules(model_args)
    # Loading each tower draws from the RNG differently, and the projector is built after it: draw the
    # projector again from one seed, so that models with either tower start from the same weights.
    torch.manual_seed(1)
    for layer in model.get_model().mm_projector.modules():
        if isinstance(layer, torch.nn.Linear):
            layer.reset_parameters()
    return model.to(device=args.device, dtype=DTYPES[args.dtype]).train()


def llava_inputs(batch: int, text_tokens: int, vocab: int, size: int, device: str, dtype: torch.dtype,
                 seed: int = 2) -> dict[str, torch.Tensor]:
    """Random ids with one image placeholder after the first token, labels masking those two, random images."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=gen).to(device=device, dtype=dtype)
    input_ids = torch.randint(3, vocab, (batch, text_tokens), generator=gen)
    input_ids[:, 1] = -200  # llava.constants.IMAGE_TOKEN_INDEX
    labels = input_ids.clone()
    labels[:, :2] = -100
    return {"input_ids": input_ids.to(device), "labels": labels.to(device), "images": images}


def make_llava_step(model: torch.nn.Module, inputs: dict[str, torch.Tensor],
                    lr: float = 1e-4) -> Callable[[], torch.Tensor]:
    """One training step (forward, backward, AdamW step over the trainable parameters; the tower stays
    frozen); returns the detached loss."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)

    def step() -> torch.Tensor:
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def llava_step_times(args: argparse.Namespace, names: dict[str, str], size: int) -> dict[str, float]:
    """Median seconds per LLaVA training step per tower, the towers' steps interleaved."""
    inputs = llava_inputs(args.batch, 64, TINY_LLM["vocab_size"], size, args.device, DTYPES[args.dtype])
    steps = {name: make_llava_step(build_llava(tower, args), inputs) for name, tower in names.items()}
    times = time_interleaved(steps, args.device, args.warmup, args.iters)
    return {name: median(t) for name, t in times.items()}


def compare_forward(ours: torch.nn.Module, upstream: torch.nn.Module, batch: int, device: str, dtype: torch.dtype,
                    warmup: int, iters: int) -> dict[str, float]:
    """Images/s of both towers' forward on one random batch (interleaved) and how far their features differ.

    Returns:
        ``ours_images_per_s``, ``upstream_images_per_s``, ``max_abs_feature_diff`` and
        ``rel_feature_diff`` (the norm of the difference over the norm of upstream's features).
    """
    size = ours.image_size
    pixels = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device=device, dtype=dtype)
    with torch.no_grad():
        a, b = ours(pixels).float(), upstream(pixels).float()
        diff = {"max_abs_feature_diff": (a - b).abs().max().item(),
                "rel_feature_diff": ((a - b).norm() / b.norm()).item()}
        del a, b
        times = time_interleaved({"ours": lambda: ours(pixels), "upstream": lambda: upstream(pixels)}, device,
                                 warmup, iters)
    return {f"{name}_images_per_s": batch / median(t) for name, t in times.items()} | diff


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
    r = compare_forward(ours, upstream, args.batch, args.device, DTYPES[args.dtype], args.warmup, args.iters)
    print(f"model {args.model} @ {ours.image_size}px, batch {args.batch}, {args.device} {args.dtype}, "
          f"select_layer {args.select_layer} / {args.select_feature}, {ours.num_patches} patches, "
          f"threads {torch.get_num_threads()}")
    print(f"  MMCLIPVisionTower (ours)          {r['ours_images_per_s']:9.2f} images/s")
    print(f"  upstream CLIPVisionTower (HF)     {r['upstream_images_per_s']:9.2f} images/s")
    print(f"  ratio ours / upstream             {r['ours_images_per_s'] / r['upstream_images_per_s']:9.3f}x   "
          "(goal >= 1.0x)")
    print(f"  max |feature difference|          {r['max_abs_feature_diff']:9.2e}")


if __name__ == "__main__":
    main()
