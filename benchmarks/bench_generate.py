"""Benchmark generation: batched and left-padded (``llava_patches.batch_generate``) vs one question per call.

The baseline is the reference's loop (``llava/eval/model_vqa.py``, MMGeoLM's ``eval/multi_*.py``): one
``generate`` per question, here :func:`llava_patches.predict.answer`. Both run greedy on the same tiny
random LLaVA (a small Llama, a random MMCLIP tower) built locally, on the same probe questions, in the
same process, after one warm-up call each. Printed: seconds and questions/s of each, the speed-up, and
how many of the answers are identical (greedy decoding should give the same text).

    python benchmarks/bench_generate.py                       # CPU, 32 questions, batch 8: ~1 minute
    python benchmarks/bench_generate.py --num 64 --batch 16 --hidden 256 --device cuda
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from data_recipes.diagrams.probe import ProbeConfig, write_probe_set
from llava_patches.batch_generate import Query, generate_batch
from llava_patches.loader import load_pretrained_model
from llava_patches.predict import answer, load_image
from llava_patches.tiny_llava import build_tiny_llava


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=32, help="questions (default 32)")
    parser.add_argument("--batch", type=int, default=8, help="batch size of the batched path (default 8)")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=128, help="tiny Llama width (default 128)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        records = write_probe_set(str(root / "probe"), ProbeConfig(num=(args.num + 1) // 2, size_px=224))[: args.num]
        corpus = [r.question for r in records] * 4 + ["yes no 0 1 2 3 4 5 6 7 8 9 square rhombus"] * 8
        model_dir = build_tiny_llava(root / "llava", corpus, hidden_size=args.hidden, layers=args.layers)
        tokenizer, model, processor, _ = load_pretrained_model(model_dir, device=args.device)
        queries = [Query(r.id, root / "probe" / r.image, r.question) for r in records]

        def one_at_a_time() -> list[str]:
            return [answer(tokenizer, model, processor, load_image(q.image), q.prompt, "v1", args.max_new_tokens)
                    for q in queries]

        def batched() -> list[str]:
            out: list[str] = []
            for start in range(0, len(queries), args.batch):
                out += generate_batch(tokenizer, model, processor, queries[start:start + args.batch], "v1",
                                      args.max_new_tokens)
            return out

        answer(tokenizer, model, processor, load_image(queries[0].image), queries[0].prompt, "v1", 2)  # warm-up
        generate_batch(tokenizer, model, processor, queries[: args.batch], "v1", 2)
        timings, outputs = {}, {}
        for name, fn in (("one at a time (reference loop)", one_at_a_time), (f"batched x{args.batch}", batched)):
            start = time.perf_counter()
            outputs[name] = fn()
            timings[name] = time.perf_counter() - start
    (base, base_out), (ours, ours_out) = ((k, outputs[k]) for k in outputs)
    same = sum(a == b for a, b in zip(base_out, ours_out))
    print(f"tiny LLaVA (Llama width {args.hidden}, {args.layers} layers, random MMCLIP tower) on {args.device}, "
          f"{len(queries)} probe questions, {args.max_new_tokens} new tokens, greedy")
    for name, seconds in timings.items():
        print(f"  {name:32s} {seconds:7.2f} s   {len(queries) / seconds:6.2f} questions/s")
    print(f"speed-up batched / one at a time: {timings[base] / timings[ours]:.2f}x")
    print(f"identical answers: {same}/{len(queries)}")
    return 0 if same == len(queries) else 1


if __name__ == "__main__":
    raise SystemExit(main())
