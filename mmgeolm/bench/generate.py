"""``mmgeolm-bench generate``: a benchmark's questions, with its prompts and images, answered by a LLaVA checkpoint.

This module only builds the queries and checks the output folder; the model work is
:func:`llava_patches.batch_generate.run_generation` (imported when called, so scoring never loads torch).
The generation settings are saved to ``generation.json``; resuming a folder with other settings is
refused rather than mixing answers of two set-ups.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from mmgeolm.bench.base import PROMPT_STYLES, Benchmark, Item
from mmgeolm.bench.registry import get_benchmark
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import atomic_write_json, check_model_path, check_output_dir, read_json

logger = logging.getLogger(__name__)
SETTINGS_FILE = "generation.json"
IMAGE_PLACEHOLDER = "<image>"


def query_text(bench: Benchmark, item: Item, style: str) -> str:
    """The prompt without any image placeholder (the conversation template adds the image token)."""
    text = bench.prompt(item, style)
    return text.replace(f"{IMAGE_PLACEHOLDER}\n", "").replace(IMAGE_PLACEHOLDER, "").strip("\n")


def build_queries(bench: Benchmark, items: list[Item], image_root: Path, style: str) -> list[Any]:
    """One :class:`llava_patches.batch_generate.Query` per item; every image must exist.

    Raises:
        InputError: an item without an image, or whose image file is missing (naming the item).
    """
    from llava_patches.batch_generate import Query

    if style not in PROMPT_STYLES:
        raise InputError(f"--prompt {style!r}: expected one of {list(PROMPT_STYLES)}")
    queries = []
    for item in items:
        if not item.image:
            raise InputError(f"{bench.name} item {item.id} ({item.where}) has no image")
        path = image_root / item.image
        if not path.is_file():
            raise InputError(f"{bench.name} item {item.id} ({item.where}): image {path} does not exist "
                             "(set --image-root to the folder its paths are relative to)")
        queries.append(Query(item.id, path, query_text(bench, item, style)))
    return queries


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    path = out / SETTINGS_FILE
    if path.is_file():
        old = read_json(path)
        changed = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v and k != "limit"}
        if changed:
            raise InputError(f"{out} holds answers generated with other settings {changed}; use another --out "
                             "or delete it")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, settings)


def generate_benchmark(args: argparse.Namespace) -> Path:
    """Run ``mmgeolm-bench generate`` from its parsed arguments; returns the predictions file."""
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise InputError(f"--batch-size and --max-new-tokens must be >= 1, got {args.batch_size}, {args.max_new_tokens}")
    check_output_dir(args.out)
    check_model_path(str(args.model_path))
    if args.model_base:
        check_model_path(str(args.model_base), "--model-base")
    bench = get_benchmark(args.bench)
    items = bench.read(args.questions, args.answers)
    if args.limit:
        items = items[: args.limit]
    if not items:
        raise InputError(f"{args.questions}: no {bench.name} items")
    image_root = args.image_root or (args.questions if args.questions.is_dir() else args.questions.parent)
    queries = build_queries(bench, items, image_root, args.prompt)
    settings = {"benchmark": bench.name, "questions": str(Path(args.questions).resolve()),
                "model_path": str(args.model_path), "model_base": args.model_base, "conv_mode": args.conv_mode,
                "prompt": args.prompt, "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
                "limit": args.limit}
    _check_settings(args.out, settings)
    from llava_patches.batch_generate import run_generation

    path = run_generation(queries, args.out, args.model_path, args.model_base, conv_mode=args.conv_mode,
                          batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, device=args.device,
                          progress=logger.isEnabledFor(logging.INFO))
    logger.info("%s: %d questions answered -> %s", bench.name, len(queries), path)
    return path
