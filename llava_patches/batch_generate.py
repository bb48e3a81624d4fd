"""Batched, resumable, shardable generation for benchmark questions, through upstream LLaVA.

The reference answers one question per ``generate`` call (``llava/eval/model_vqa.py`` and the MMGeoLM
``eval/multi_*.py`` scripts). Here a batch of prompts is tokenized with upstream's
``tokenizer_image_token``, padded on the **left** (the prompt must end where generation starts; Qwen2's
FlashAttention path refuses right padding with a cache), and generated in one call, greedy by default.
Upstream's ``prepare_inputs_labels_for_multimodal`` drops the padding, splices the image features in and
pads again on the side named by ``model.config.tokenizer_padding_side``, which we set to ``left`` for the
duration of the call (:func:`padding_side`) and restore.

:func:`run_generation` appends one ``{"id", "response"}`` line per answered question as batches finish,
skips ids already answered (a re-run resumes), and under ``torchrun`` gives rank r the questions
``i % world == r``; rank 0 merges every rank's file into ``predictions.jsonl`` in question order.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from llava_patches.compat import get_upstream_symbol
from llava_patches.loader import load_pretrained_model
from llava_patches.predict import build_prompt, load_image

logger = logging.getLogger(__name__)
PREDICTIONS_FILE = "predictions.jsonl"


@dataclass(frozen=True)
class Query:
    """One question to answer: its id, image file and the text asked with it."""

    id: str
    image: Path
    prompt: str


@contextlib.contextmanager
def padding_side(model: Any, side: str) -> Iterator[None]:
    """Set ``model.config.tokenizer_padding_side`` (read by upstream's multimodal input preparation), then restore it."""
    missing = object()
    old = getattr(model.config, "tokenizer_padding_side", missing)
    model.config.tokenizer_padding_side = side
    try:
        yield
    finally:
        if old is missing:
            delattr(model.config, "tokenizer_padding_side")
        else:
            model.config.tokenizer_padding_side = old


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``(input_ids, attention_mask)`` of prompts holding upstream's image placeholder."""
    tokenizer_image_token = get_upstream_symbol("llava.mm_utils", "tokenizer_image_token")
    image_token_index = get_upstream_symbol("llava.constants", "IMAGE_TOKEN_INDEX")
    ids = [tokenizer_image_token(p, tokenizer, image_token_index, return_tensors="pt") for p in prompts]
    length = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), length), _pad_id(tokenizer), dtype=torch.long)
    mask = torch.zeros((len(ids), length), dtype=torch.long)
    for i, x in enumerate(ids):  # (B, L): prompt i fills the last len(x) positions
        input_ids[i, length - len(x):] = x
        mask[i, length - len(x):] = 1
    return input_ids, mask


@torch.inference_mode()
def generate_batch(tokenizer: Any, model: Any, image_processor: Any, queries: Sequence[Query], conv_mode: str = "v1",
                   max_new_tokens: int = 1024, temperature: float = 0.0) -> list[str]:
    """The model's answers to ``queries`` from one ``generate`` call (greedy when ``temperature`` is 0)."""
    process_images = get_upstream_symbol("llava.mm_utils", "process_images")
    start_end = getattr(model.config, "mm_use_im_start_end", False)
    prompts = [build_prompt(q.prompt, conv_mode, start_end) for q in queries]
    input_ids, mask = encode_prompts(tokenizer, prompts)
    images = [load_image(q.image) for q in queries]
    pixels = process_images(images, image_processor, model.config).to(model.device, dtype=model.dtype)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    with padding_side(model, "left"):
        output_ids = model.generate(input_ids.to(model.device), attention_mask=mask.to(model.device), images=pixels,
                                    image_sizes=[im.size for im in images], max_new_tokens=max_new_tokens,
                                    use_cache=True, pad_token_id=_pad_id(tokenizer), **sampling)
    return [text.strip() for text in tokenizer.batch_decode(output_ids, skip_special_tokens=True)]


def _done_ids(paths: Sequence[Path]) -> set[str]:
    done = set()
    for path in paths:
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    done.add(str(json.loads(line)["id"]))
    return done


def shard_file(out_dir: Path, rank: int, world: int) -> Path:
    return out_dir / f"predictions.rank{rank}-of-{world}.jsonl"


def merge_shards(out_dir: Path, order: Sequence[str], world: int) -> Path:
    """Merge ``predictions.jsonl`` and every rank's file into ``predictions.jsonl`` in question order (atomic)."""
    final = out_dir / PREDICTIONS_FILE
    records: dict[str, dict] = {}
    shards = [shard_file(out_dir, r, world) for r in range(world)]
    for path in [final, *shards]:
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    record = json.loads(line)
                    records.setdefault(str(record["id"]), record)
    tmp = final.with_name(f".{final.name}.tmp")
    tmp.write_text("".join(json.dumps(records[i], ensure_ascii=False) + "\n" for i in order if i in records),
                   encoding="utf-8")
    os.replace(tmp, final)
    for path in shards:
        path.unlink(missing_ok=True)
    return final


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        dist.barrier()


def run_generation(queries: Sequence[Query], out_dir: str | Path, model_path: str, model_base: str | None = None,
                   conv_mode: str = "v1", batch_size: int = 8, max_new_tokens: int = 1024, temperature: float = 0.0,
                   device: str | None = None, progress: bool = True) -> Path:
    """Answer ``queries`` into ``out_dir/predictions.jsonl`` (resumable; sharded by rank under torchrun).

    Returns:
        The merged predictions file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rank, world, local_rank = _distributed()
    mine_file = shard_file(out_dir, rank, world)
    done = _done_ids([out_dir / PREDICTIONS_FILE, mine_file])
    todo = [q for i, q in enumerate(queries) if i % world == rank and q.id not in done]
    if todo:
        device = device or (f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
        tokenizer, model, image_processor, _ = load_pretrained_model(model_path, model_base, device=device)
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is None:
            raise ValueError(f"{model_path}: the tokenizer has neither a pad nor an eos token to pad batches with")
        # longest prompts first: batches of similar length waste less padding
        todo.sort(key=lambda q: -len(q.prompt))
        bar = tqdm(total=len(todo), desc=f"generating (rank {rank})" if world > 1 else "generating",
                   unit="q", disable=not progress)
        with open(mine_file, "a", encoding="utf-8") as handle:
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]
                answers = generate_batch(tokenizer, model, image_processor, batch, conv_mode, max_new_tokens,
                                         temperature)
                for q, text in zip(batch, answers):
                    handle.write(json.dumps({"id": q.id, "response": text}, ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
                bar.update(len(batch))
        bar.close()
    _barrier(world)
    final = out_dir / PREDICTIONS_FILE
    if rank == 0:
        final = merge_shards(out_dir, [q.id for q in queries], world)
    _barrier(world)
    return final
