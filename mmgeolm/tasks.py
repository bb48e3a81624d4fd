"""Small pipeline steps that are not a command of their own elsewhere (``python -m mmgeolm.tasks``)."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from data_recipes.formats.llava import write_llava_data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmgeolm.tasks")
    sub = parser.add_subparsers(dest="task", required=True)
    llava = sub.add_parser("llava-data", help="LLaVA stage-1/2 JSON and held-out questions from a data set")
    llava.add_argument("--data", required=True)
    llava.add_argument("--out", required=True)
    llava.add_argument("--num-questions", type=int, default=60)
    llava.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    files = write_llava_data(args.data, args.out, args.num_questions, args.seed)
    print(f"LLaVA data written to {args.out}: {files.counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
