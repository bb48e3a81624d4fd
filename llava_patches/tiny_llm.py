"""Tiny random LLMs with tokenizers trained on the fly: the CPU demo's and the tests' language models.

Two families, by name (:func:`list_tiny_llms`, :func:`get_tiny_llm`):

- ``tiny-llama`` (alias ``tiny``): a random ``LlamaForCausalLM`` with a real slow ``LlamaTokenizer``
  (SentencePiece BPE with byte fallback, ``<unk>``/``<s>``/``</s>`` at ids 0/1/2), because upstream LLaVA's
  ``v1`` label masking assumes exactly that behaviour;
- ``tiny-qwen2``: a random ``Qwen2ForCausalLM`` (q/k/v biases drawn at random, as in trained Qwen weights,
  grouped-query attention) with a byte-level BPE tokenizer in Qwen's format: Qwen's pre-tokenizer, NFC,
  ``vocab.json`` + ``merges.txt`` (so the slow ``Qwen2Tokenizer`` upstream asks for loads it) and
  ``tokenizer.json``, special tokens ``<|endoftext|>`` (pad), ``<|im_start|>``, ``<|im_end|>`` (EOS) after
  the learned vocabulary, **no BOS and no unk**, a ChatML chat template, and Qwen2.5's config quirk
  ``bos_token_id = <|endoftext|>``.

Tokenizers are trained on the texts the run will see (captions, questions, answers, the templates'
scaffolding). Nothing is downloaded.

    python -m llava_patches.tiny_llm --model tiny-qwen2 --corpus stage1.json stage2.json --out runs/demo/llm
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from mmgeolm_core.cli import run_cli
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import check_output_dir

PROG = "python -m llava_patches.tiny_llm"

SCAFFOLDING = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: <image>\nWhat is this? ASSISTANT: It is a diagram.</s>",
    "Human: hi\nAssistant: hello",
    "0 1 2 3 4 5 6 7 8 9 10 12 15 20 30 45 60 90 180 360 yes no",
)
CHATML_SCAFFOLDING = (
    "system\nYou are a helpful assistant.\n",
    "system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n",
    "user\nWhat is this?\n",
    "assistant\nIt is a diagram.\n",
    "0 1 2 3 4 5 6 7 8 9 10 12 15 20 30 45 60 90 180 360 yes no",
)
# Qwen's special tokens, in Qwen's order (right after the learned vocabulary).
QWEN_ENDOFTEXT, QWEN_IM_START, QWEN_IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# Qwen2-Instruct's chat template: ChatML with a default system prompt.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def conversation_texts(records: Iterable[dict]) -> list[str]:
    """Every turn of LLaVA-format records (``conversations[*].value``), image token removed."""
    return [t["value"].replace("<image>", "").strip() for r in records for t in r.get("conversations", [])]


def _training_lines(scaffolding: Sequence[str], corpus: Sequence[str]) -> list[str]:
    lines = [line for line in (*scaffolding, *corpus) if line.strip()]
    return lines * max(1, 2000 // max(1, len(lines)))


# ----------------------------------------------------------------------------- Llama
def build_tokenizer(directory: str | Path, corpus: Sequence[str], vocab_size: int = 1024):
    """Train a SentencePiece BPE model on ``corpus`` and save a slow ``LlamaTokenizer`` to ``directory``."""
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    prefix = directory / "spm"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_training_lines(SCAFFOLDING, corpus)),
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


# ----------------------------------------------------------------------------- Qwen2
def build_qwen2_tokenizer(directory: str | Path, corpus: Sequence[str], vocab_size: int = 1024):
    """Train a byte-level BPE in Qwen2's format on ``corpus``; save slow- and fast-loadable files to ``directory``."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(_training_lines(CHATML_SCAFFOLDING, corpus), trainer)
    bpe.model.save(str(directory))  # vocab.json + merges.txt: what the slow Qwen2Tokenizer reads
    tokenizer = Qwen2TokenizerFast(
        vocab_file=str(directory / "vocab.json"), merges_file=str(directory / "merges.txt"),
        unk_token=None, bos_token=None, eos_token=None, pad_token=None,
    )  # fmt: skip
    tokenizer.add_special_tokens({"pad_token": QWEN_ENDOFTEXT})
    tokenizer.add_special_tokens({"additional_special_tokens": [QWEN_IM_START, QWEN_IM_END]})
    tokenizer.eos_token = QWEN_IM_END
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    tokenizer.save_pretrained(str(directory))
    return tokenizer


def build_tiny_qwen2(directory: str | Path, corpus: Sequence[str], hidden_size: int = 128, layers: int = 2,
                     heads: int = 4, kv_heads: int = 2, vocab_size: int = 1024, seed: int = 0,
                     tie_word_embeddings: bool = False) -> Path:
    """Save a random small ``Qwen2ForCausalLM`` (random q/k/v biases) and its tokenizer into ``directory``.

    Args:
        tie_word_embeddings: share the input embeddings with ``lm_head`` (as Qwen2.5 <= 3B does).
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    directory = Path(directory)
    tokenizer = build_qwen2_tokenizer(directory, corpus, vocab_size)
    endoftext, im_end = tokenizer.convert_tokens_to_ids([QWEN_ENDOFTEXT, QWEN_IM_END])
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=1024,
        bos_token_id=endoftext,  # Qwen2.5's config names <|endoftext|> although its tokenizer has no BOS
        eos_token_id=im_end,
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():  # transformers initialises biases to zero; trained Qwen biases are far from it
        for name, param in model.named_parameters():
            if name.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")):
                param.normal_(0.0, 0.5)
    model.generation_config = GenerationConfig(bos_token_id=endoftext, eos_token_id=[im_end, endoftext],
                                               pad_token_id=endoftext)
    model.save_pretrained(str(directory), safe_serialization=True)
    return directory


# ----------------------------------------------------------------------------- registry
TINY_LLMS: dict[str, Callable[..., Path]] = {"tiny-llama": build_tiny_llama, "tiny-qwen2": build_tiny_qwen2}
ALIASES = {"tiny": "tiny-llama"}


def list_tiny_llms() -> list[str]:
    """Every name :func:`get_tiny_llm` accepts (aliases included)."""
    return sorted({*TINY_LLMS, *ALIASES})


def is_tiny_llm(name: str) -> bool:
    """Whether ``name`` (e.g. a recipe's ``llm``) names a tiny LLM built locally rather than a checkpoint."""
    return name in TINY_LLMS or name in ALIASES


def get_tiny_llm(name: str) -> Callable[..., Path]:
    """The builder ``(directory, corpus, hidden_size=, layers=, vocab_size=, seed=) -> directory`` for ``name``.

    Raises:
        KeyError: unknown name (the known ones are listed).
    """
    key = ALIASES.get(name, name)
    if key not in TINY_LLMS:
        raise KeyError(f"unknown tiny LLM {name!r}; known: {', '.join(list_tiny_llms())}")
    return TINY_LLMS[key]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-llama", choices=list_tiny_llms(), help="which tiny LLM to build")
    parser.add_argument("--corpus", nargs="+", required=True, help="LLaVA-format JSON files whose texts train the tokenizer")
    parser.add_argument("--out", required=True, help="output model directory")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _run(args: argparse.Namespace) -> int:
    from data_recipes.formats.llava import read_llava_records

    check_output_dir(args.out)
    for name in ("hidden_size", "layers", "vocab_size"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    corpus: list[str] = []
    for path in args.corpus:
        corpus += conversation_texts(read_llava_records(path))  # errors name the file, record and key
    build = get_tiny_llm(args.model)
    build(args.out, corpus, hidden_size=args.hidden_size, layers=args.layers, vocab_size=args.vocab_size, seed=args.seed)
    print(f"{args.model} written to {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m llava_patches.tiny_llm``; returns the exit status (2: bad input)."""
    return run_cli(PROG, build_parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
