"""A tiny random Llama with a SentencePiece tokenizer trained on the fly: the CPU demo's LLM.

Upstream LLaVA's ``v1`` and ``plain`` templates mask labels assuming Llama's SentencePiece
behaviour, so the tokenizer is a real slow ``LlamaTokenizer`` (BPE with byte fallback, ``<unk>``,
``<s>``, ``</s>`` at ids 0, 1, 2), trained on the texts the run will see (captions, questions,
answers and the templates' own scaffolding). Nothing is downloaded.

    python -m llava_patches.tiny_llm --corpus stage2.json --out runs/demo/llm
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

SCAFFOLDING = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: <image>\nWhat is this? ASSISTANT: It is a diagram.</s>",
    "Human: hi\nAssistant: hello",
    "0 1 2 3 4 5 6 7 8 9 10 12 15 20 30 45 60 90 180 360 yes no",
)


def conversation_texts(records: Iterable[dict]) -> list[str]:
    """Every turn of LLaVA-format records (``conversations[*].value``), image token removed."""
    return [t["value"].replace("<image>", "").strip() for r in records for t in r.get("conversations", [])]


def build_tokenizer(directory: str | Path, corpus: Sequence[str], vocab_size: int = 1024):
    """Train a SentencePiece BPE model on ``corpus`` and save a slow ``LlamaTokenizer`` to ``directory``."""
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    prefix = directory / "spm"
    lines = [line for line in (*SCAFFOLDING, *corpus) if line.strip()]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines * max(1, 2000 // max(1, len(lines)))),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        split_digits=True,
        character_coverage=1.0,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    tokenizer = LlamaTokenizer(vocab_file=str(prefix) + ".model", legacy=True)
    tokenizer.save_pretrained(str(directory))
    return tokenizer


def build_tiny_llama(directory: str | Path, corpus: Sequence[str], hidden_size: int = 128, layers: int = 2,
                     heads: int = 4, vocab_size: int = 1024, seed: int = 0) -> Path:
    """Save a random small ``LlamaForCausalLM`` and its tokenizer into ``directory``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = Path(directory)
    tokenizer = build_tokenizer(directory, corpus, vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(str(directory), safe_serialization=True)
    return directory


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava_patches.tiny_llm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", nargs="+", required=True, help="LLaVA-format JSON files whose texts train the tokenizer")
    parser.add_argument("--out", required=True, help="output model directory")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    corpus: list[str] = []
    for path in args.corpus:
        try:
            corpus += conversation_texts(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"--corpus {path}: cannot read a LLaVA-format JSON list: {exc}") from exc
    build_tiny_llama(args.out, corpus, args.hidden_size, args.layers, vocab_size=args.vocab_size, seed=args.seed)
    print(f"tiny Llama written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
