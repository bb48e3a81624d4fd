"""``mmgeolm-bench``: generate answers to a geometry benchmark with a LLaVA checkpoint, and score them.

    mmgeolm-bench generate BENCH --model-path CKPT --questions FILE [--image-root DIR] --out DIR
    mmgeolm-bench score BENCH --questions FILE --predictions FILE --out DIR [--mode official|robust]
    mmgeolm-bench list

BENCH is one of the registered benchmarks (``geoqa``, ``mathvista``, ``wemath``, ``mmmath``, ``probe``).
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from mmgeolm.bench.base import MODES, PROMPT_STYLES, Benchmark
from mmgeolm.bench.registry import get_benchmark, list_benchmarks
from mmgeolm_core.cli import run_cli
from mmgeolm_core.errors import InputError

logger = logging.getLogger(__name__)
PREDICTIONS_FILE = "predictions.jsonl"


def _bench_arg(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("bench", metavar="BENCH", help=f"benchmark: {', '.join(list_benchmarks())}")


def _questions_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--questions", required=True, type=Path,
                     help="the benchmark's question file in its native format (a probe folder for probe)")
    sub.add_argument("--answers", type=Path, default=None,
                     help="GeoQA's answer file (default: test_answers.jsonl beside --questions)")


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    _bench_arg(parser)
    parser.add_argument("--model-path", required=True, help="LLaVA checkpoint directory")
    parser.add_argument("--model-base", default=None, help="base LLM for LoRA / projector-only checkpoints")
    _questions_args(parser)
    parser.add_argument("--image-root", type=Path, default=None,
                        help="folder the records' image paths are relative to (default: the question file's folder)")
    parser.add_argument("--out", required=True, type=Path, help=f"output folder ({PREDICTIONS_FILE}; a re-run resumes)")
    parser.add_argument("--conv-mode", default="v1", help="upstream conversation template (default: v1)")
    parser.add_argument("--batch-size", type=int, default=8, help="questions per generate call (default 8)")
    parser.add_argument("--max-new-tokens", type=int, default=1024, help="default 1024, as the reference's scripts")
    parser.add_argument("--prompt", choices=PROMPT_STYLES, default="official",
                        help="official: the benchmark's own prompt; answer-line: ask for a final 'Answer: X' line")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda:LOCAL_RANK when available)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N items (a quick look)")


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    _bench_arg(parser)
    _questions_args(parser)
    parser.add_argument("--predictions", required=True, type=Path,
                        help='JSON lines {"id", "response"}, or the reference\'s output (the item plus "text")')
    parser.add_argument("--out", required=True, type=Path, help="output folder: results.jsonl, scores.json, report.md")
    parser.add_argument("--mode", choices=MODES, default="robust",
                        help="official: the benchmark's own scorer, quirks included; robust (default): quirks fixed")
    parser.add_argument("--judge-url", default=None, help="OpenAI-compatible endpoint for answers the rules miss")
    parser.add_argument("--judge-model", default=None, help="the judge endpoint's model name")


def read_items(bench: Benchmark, questions: Path, answers: Path | None):
    items = bench.read(questions, answers)
    if not items:
        raise InputError(f"{questions}: no {bench.name} items")
    return items


def run_score(args: argparse.Namespace) -> int:
    from mmgeolm.bench.judge import CACHE_FILE, Judge
    from mmgeolm.bench.predictions import read_predictions
    from mmgeolm.bench.score import score_items, write_scores

    bench = get_benchmark(args.bench)
    items = read_items(bench, args.questions, args.answers)
    responses = read_predictions(args.predictions, bench, {i.id for i in items})
    judge = None
    if args.judge_url or args.judge_model:
        if not (args.judge_url and args.judge_model):
            raise InputError("--judge-url and --judge-model go together")
        args.out.mkdir(parents=True, exist_ok=True)
        judge = Judge(args.judge_url, args.judge_model, cache=args.out / CACHE_FILE)
    scored = score_items(bench, items, responses, args.mode, judge)
    write_scores(args.out, bench, scored)
    s = scored.scores
    numbers = ", ".join(f"{k} {100 * s[k]:.1f}%" for k in bench.headline if isinstance(s.get(k), int | float))
    print(f"{bench.name} ({args.mode}): {numbers} on {s['num_items']} items; unparsed {s['num_unparsed']}, "
          f"missing {s['num_missing']}, judged {s['num_judged']} -> {args.out}")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from mmgeolm.bench.generate import generate_benchmark

    generate_benchmark(args)
    return 0


def run_list(args: argparse.Namespace) -> int:
    for name in list_benchmarks():
        print(f"{name:10s} {get_benchmark(name).title}")
    return 0


# subcommand -> (add its arguments, run it, one-line help)
COMMANDS = {
    "generate": (add_generate_arguments, run_generate,
                 "answer a benchmark with a LLaVA checkpoint (batched, left-padded, greedy, resumable)"),
    "score": (add_score_arguments, run_score, "score predictions (ours or the reference's output)"),
    "list": (lambda parser: None, run_list, "list the registered benchmarks"),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        top = argparse.ArgumentParser(prog="mmgeolm-bench", description=__doc__.splitlines()[0])
        sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
        for name, (_, _, help_text) in COMMANDS.items():
            sub.add_parser(name, help=help_text, add_help=False)
        top.parse_args(argv)  # prints help or "invalid choice" and exits 2
        return 2
    add, fn, help_text = COMMANDS[argv[0]]
    parser = argparse.ArgumentParser(prog=f"mmgeolm-bench {argv[0]}", description=help_text)
    add(parser)
    return run_cli(f"mmgeolm-bench {argv[0]}", parser, fn, argv[1:])


if __name__ == "__main__":
    sys.exit(main())
