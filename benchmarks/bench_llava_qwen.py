"""LLaVA training step with a Qwen2 LLM vs a Llama LLM of the same size, same tower, same batch, same run.

Two random LLaVA models are built with identical sizes (hidden, layers, heads, KV heads, MLP width,
vocabulary): upstream's ``LlavaLlamaForCausalLM`` and our ``LlavaQwen2ForCausalLM`` (which differs only
by Qwen2's q/k/v biases), each with the same random MMCLIP tower (frozen, as in LLaVA-1.5) and an
``mlp2x_gelu`` projector. A training step (multimodal forward, loss, backward, AdamW step) is timed for
each, interleaved in one process so background load hits both alike. Printed: the median ms/step of each
and the ratio Llama / Qwen2 (goal ~1.0x: the Qwen path adds nothing beyond the biases).

``--preprocess`` (on by default) also times the per-sample label masking on a tokenizer trained here:
our ChatML ``qwen_2`` preprocess (segment by segment) on the tiny Qwen2 tokenizer vs upstream's ``v1`` on
the tiny Llama SentencePiece tokenizer, 3-turn samples, both through upstream's ``preprocess``.

    python benchmarks/bench_llava_qwen.py                         # hidden 256, 4 layers, batch 8, CPU: ~1 min
    python benchmarks/bench_llava_qwen.py --hidden 1024 --layers 8 --batch 4 --seq 256
    python benchmarks/bench_llava_qwen.py --device cuda --dtype bf16 --hidden 2048 --layers 16 --batch 16
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
import types
from pathlib import Path

import torch

from llava_patches.compat import get_upstream_symbol
from llava_patches.register import registered

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=8, help="key/value heads of both models")
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--seq", type=int, default=128, help="text tokens per sample (plus the image's patches)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=6, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-preprocess", dest="preprocess", action="store_false", help="skip the label-masking timing")
    return parser.parse_args(argv)


def build_models(args: argparse.Namespace, tower: str) -> dict[str, torch.nn.Module]:
    """The two LLaVA models, same sizes, same tower and projector initialisation."""
    from llava_patches.qwen2 import LlavaQwen2Config, LlavaQwen2ForCausalLM

    llama_config_cls = get_upstream_symbol("llava.model.language_model.llava_llama", "LlavaConfig")
    llama_cls = get_upstream_symbol("llava.model.language_model.llava_llama", "LlavaLlamaForCausalLM")
    sizes = dict(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 8 // 3,
                 num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                 max_position_embeddings=4096)  # fmt: skip
    model_args = types.SimpleNamespace(vision_tower=tower, mm_vision_select_layer=-2, mm_vision_select_feature="patch",
                                       pretrain_mm_mlp_adapter=None, mm_patch_merge_type="flat",
                                       mm_projector_type="mlp2x_gelu")  # fmt: skip
    models = {}
    for name, config, cls in (("llama", llama_config_cls(**sizes), llama_cls),
                              ("qwen2", LlavaQwen2Config(**sizes), LlavaQwen2ForCausalLM)):  # fmt: skip
        torch.manual_seed(0)
        model = cls(config)
        with registered():
            model.get_model().initialize_vision_modules(model_args)
        model.get_vision_tower().requires_grad_(False)
        models[name] = model.to(device=args.device, dtype=DTYPES[args.dtype]).train()
    return models


def step_times(args: argparse.Namespace, models: dict[str, torch.nn.Module]) -> dict[str, float]:
    """Median seconds per training step (forward, loss, backward, AdamW step) per model."""
    image_index = get_upstream_symbol("llava.constants", "IMAGE_TOKEN_INDEX")
    ignore_index = get_upstream_symbol("llava.constants", "IGNORE_INDEX")
    optimizers = {n: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4) for n, m in models.items()}
    size = next(iter(models.values())).get_vision_tower().config.image_size
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(args.batch, 3, size, size, generator=gen).to(args.device, DTYPES[args.dtype])
    input_ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen)
    input_ids[:, 4] = image_index
    labels = input_ids.clone()
    labels[:, : args.seq // 2] = ignore_index
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


def preprocess_times(root: Path, samples: int = 64) -> dict[str, float]:
    """Median seconds per 3-turn sample through upstream's ``preprocess``: qwen_2 (ours) vs v1 (upstream)."""
    from transformers import AutoTokenizer

    from llava_patches.args import ExtraArguments
    from llava_patches.tiny_llm import build_tiny_llama, build_tiny_qwen2
    from llava_patches.train import training_patches

    conversation = __import__("llava.conversation", fromlist=["conv_templates"])
    train = __import__("llava.train.train", fromlist=["preprocess"])
    turns = [("<image>\nWhat shape is shown in the diagram?", "The diagram shows triangle ABC."),
             ("Which letter is written in the corner?", "The letter A."), ("Is it a polygon?", "yes")]  # fmt: skip
    source = [m for q, a in turns for m in ({"from": "human", "value": q}, {"from": "gpt", "value": a})]
    corpus = [t for pair in turns for t in pair] * 4
    setups = {"qwen2 / qwen_2 (ours)": (build_tiny_qwen2, "qwen_2"), "llama / v1 (upstream)": (build_tiny_llama, "v1")}
    result = {}
    with training_patches(ExtraArguments()):
        for label, (build, version) in setups.items():
            directory = build(root / version, corpus, hidden_size=32, layers=1, vocab_size=512)
            tokenizer = AutoTokenizer.from_pretrained(str(directory), use_fast=False, model_max_length=512)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.unk_token
            conversation.default_conversation = conversation.conv_templates[version]
            times = []
            for _ in range(samples):
                start = time.perf_counter()
                train.preprocess([copy.deepcopy(source)], tokenizer, has_image=True)
                times.append(time.perf_counter() - start)
            result[label] = statistics.median(times)
    return result


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmclip_plugin.model import ModelConfig, create_model

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        checkpoint = create_model(ModelConfig(name="mmclip-tiny-vit")).save_pretrained(Path(tmp) / "mmclip")
        models = build_models(args, f"mmclip:{checkpoint}")
        params = {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()}
        tower = models["llama"].get_vision_tower()
        times = step_times(args, models)
        print(f"LLaVA training step: hidden {args.hidden}, {args.layers} layers, {args.heads} heads / {args.kv_heads} KV, "
              f"vocab {args.vocab}, {args.seq} text + {tower.num_patches} visual tokens, batch {args.batch}, "
              f"{args.device} {args.dtype}, threads {torch.get_num_threads()}, tower frozen")
        print(f"  LlavaLlamaForCausalLM (upstream)  {times['llama'] * 1000:9.1f} ms/step   {params['llama']:,} parameters")
        print(f"  LlavaQwen2ForCausalLM (ours)      {times['qwen2'] * 1000:9.1f} ms/step   {params['qwen2']:,} parameters")
        print(f"  speed ratio llama / qwen2         {times['llama'] / times['qwen2']:9.3f}x   (goal ~1.0x)")
        if args.preprocess:
            prep = preprocess_times(Path(tmp))
            print("label masking per 3-turn sample (upstream preprocess, slow tokenizers trained here)")
            for label, seconds in prep.items():
                print(f"  {label:<32}  {seconds * 1e6:9.1f} us/sample")
            ours, theirs = prep["qwen2 / qwen_2 (ours)"], prep["llama / v1 (upstream)"]
            print(f"  ratio v1 / qwen_2                 {theirs / ours:9.3f}x")


if __name__ == "__main__":
    main()
