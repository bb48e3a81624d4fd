"""The training-data side of the Qwen path: pad token, template/tokenizer check, worker processes.

- Upstream ``train()`` sets ``tokenizer.pad_token = tokenizer.unk_token``; a Qwen tokenizer has no unk, so
  pad becomes None and the collator fails much later with a ``TypeError``. :func:`restore_pad_token` puts
  back the tokenizer's own pad (Qwen: ``<|endoftext|>``) when that happened; tokenizers with an unk (Llama,
  Mistral, MPT) are left as upstream set them.
- A Qwen tokenizer with a Llama-style template (``v1``, ``llama_2``, ``mpt``...) masks every label
  ("tokenization mismatch", loss 0) or drops tokens: :func:`check_template_fits_tokenizer` refuses it.
- :class:`TemplateCarryingDataset` is upstream's ``LazySupervisedDataset`` that carries the run's
  conversation template: in a DataLoader worker started by *spawn* or *forkserver* (macOS, Python >= 3.14,
  or an explicit context), upstream's module globals are fresh (``default_conversation`` back to
  ``vicuna_v1``, no Qwen preprocess), so unpickling it there reinstalls the template and our preprocess
  for the worker's life. Forked workers (Linux's default) inherit the parent's state and need nothing.

:func:`make_data_module_factory` wraps upstream ``make_supervised_data_module`` with all three.
"""
from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

from torch.utils.data import get_worker_info

from llava_patches.compat import get_upstream_symbol
from llava_patches.qwen_chat import is_qwen_template, is_wrapped, make_preprocess

TRAIN_MODULE = "llava.train.train"


def restore_pad_token(tokenizer: Any) -> bool:
    """Give back the tokenizer's own pad token when upstream's ``pad = unk`` erased it.

    Returns:
        Whether the pad token was restored.

    Raises:
        ValueError: the tokenizer has neither a pad nor an unk token (nothing to pad batches with).
    """
    if tokenizer.pad_token is not None:
        return False
    original = tokenizer.init_kwargs.get("pad_token")
    original = getattr(original, "content", original)
    if not original:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} ({tokenizer.name_or_path}) has no pad and no unk token; upstream "
            "LLaVA pads batches with one of them: set pad_token in its tokenizer_config.json"
        )
    tokenizer.pad_token = original
    return True


def check_template_fits_tokenizer(conv: Any, tokenizer: Any) -> None:
    """Refuse a Qwen tokenizer with a template whose label masking assumes Llama's tokenizer.

    ``plain`` (stage 1) works with any tokenizer; our ChatML templates are checked token by token in
    :func:`llava_patches.qwen_chat.check_chatml_tokenizer`.
    """
    from transformers import Qwen2Tokenizer, Qwen2TokenizerFast

    separator_style = get_upstream_symbol("llava.conversation", "SeparatorStyle")
    if not isinstance(tokenizer, (Qwen2Tokenizer, Qwen2TokenizerFast)):
        return
    if is_qwen_template(conv) or conv.sep_style == separator_style.PLAIN:
        return
    raise ValueError(
        f"--version {conv.version!r} masks labels assuming a Llama SentencePiece tokenizer; with "
        f"{type(tokenizer).__name__} every sample would be masked ('tokenization mismatch', loss 0) or lose "
        "tokens. Use --version qwen_2 or qwen_2_5 (ChatML), or plain for stage 1"
    )


def make_data_module_factory(original: Callable[..., dict]) -> Callable[..., dict]:
    """Wrap upstream ``make_supervised_data_module``: pad fix, template check, worker-safe dataset."""

    @functools.wraps(original)
    def make_supervised_data_module(tokenizer: Any, data_args: Any) -> dict:
        restore_pad_token(tokenizer)
        check_template_fits_tokenizer(importlib.import_module("llava.conversation").default_conversation, tokenizer)
        module = original(tokenizer=tokenizer, data_args=data_args)
        module["train_dataset"] = TemplateCarryingDataset.wrap(module["train_dataset"])
        return module

    return make_supervised_data_module


def install_in_worker(conv: Any) -> None:
    """Make this (spawned) process preprocess with ``conv``, as the training process does."""
    conversation = importlib.import_module("llava.conversation")
    conversation.default_conversation = conv
    if is_qwen_template(conv):
        train = importlib.import_module(TRAIN_MODULE)
        if not is_wrapped(train.preprocess):
            train.preprocess = make_preprocess(train.preprocess)


_UpstreamDataset = get_upstream_symbol(TRAIN_MODULE, "LazySupervisedDataset")


class TemplateCarryingDataset(_UpstreamDataset):
    """Upstream's ``LazySupervisedDataset`` that takes the run's conversation template into worker processes.

    Built with :meth:`wrap` from the dataset upstream made (upstream's ``__init__`` calls ``super()`` on its
    module-level class name, so the class itself is not substituted at that name).
    """

    conversation: Any = None

    @classmethod
    def wrap(cls, dataset: Any) -> TemplateCarryingDataset:
        """The same dataset (same state, nothing re-read) as this class, with the current template."""
        wrapped = cls.__new__(cls)
        wrapped.__dict__.update(dataset.__dict__)
        wrapped.conversation = importlib.import_module("llava.conversation").default_conversation
        return wrapped

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._install_pending = True  # unpickled: maybe in a fresh worker process (decided on first use)

    def __getitem__(self, i: int) -> dict:
        # Only inside a DataLoader worker: a copy unpickled in the training process must change nothing.
        if self.__dict__.pop("_install_pending", False) and get_worker_info() is not None:
            install_in_worker(self.conversation)
        return super().__getitem__(i)
