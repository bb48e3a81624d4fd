"""The caption tokenization check of ``mmclip-train``, with the model's own tokenizer.

The check itself (which hard negatives tokenize like their positive, and why) is torch-free and lives
in :mod:`data_recipes.text_negatives.token_check`, shared with ``mmgeolm-data build``; here it runs on
the training samples with the tokenizer, cleaning and context length the model trains with, and
``data.tokenization_check`` decides what happens to the collisions.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from data_recipes.text_negatives.token_check import TokenCheckReport, find_token_collisions
from mmclip_plugin.data import Sample
from mmgeolm_core.errors import InputError


def _uncut(tokenize: Callable[..., torch.Tensor], texts: list[str]) -> list[list[int]]:
    """Ids without the context-length cut (open_clip tokenizers take ``context_length``; padded to that length)."""
    owner = getattr(tokenize, "__self__", None)
    tokenizer = getattr(owner, "tokenizer", tokenize)
    try:
        rows = tokenizer(texts, context_length=UNCUT_LENGTH).tolist()
    except TypeError:  # a tokenizer without a context_length argument: compare the cut ids again
        rows = tokenize(texts).tolist()
    return rows


UNCUT_LENGTH = 1024


def check_tokenization(samples: list[Sample], tokenize: Callable[[list[str]], torch.Tensor], mode: str,
                       tokenizer: str = "model") -> TokenCheckReport:
    """Find hard negatives whose token ids equal their positive's (see ``data_recipes.text_negatives.token_check``).

    Args:
        samples: the training samples; with ``mode='drop'`` the colliding caption negatives are removed and
            colliding image negatives lose their caption (so hard batches never pair the same text twice).
        tokenize: the model's tokenizer (cleaning, vocabulary and context length as in training).
        mode: ``warn``, ``drop`` or ``error``.
        tokenizer: named in the report.

    Raises:
        InputError: ``mode='error'`` and some negative collides (the message summarises them).
    """
    items = []
    for s in samples:
        negatives = [(t.caption, t.kind) for t in s.text_negatives]
        seen = {c for c, _ in negatives}
        negatives += [(n.caption, "image") for n in s.image_negatives if n.caption and n.caption not in seen]
        items.append((s.id or f"{s.source}:{s.record}", s.caption, negatives))
    report = find_token_collisions(items, lambda texts: tokenize(texts).tolist(), tokenizer=tokenizer,
                                   encode_uncut=lambda texts: _uncut(tokenize, texts))
    if report.collisions and mode == "error":
        raise InputError(report.summary().replace("\n", "; ") + " (data.tokenization_check=error; use drop to train "
                         "without them, or write the symbols as words: recipe captions.symbols: words)")
    if report.collisions and mode == "drop":
        same = {(c.positive, c.negative) for c in report.collisions}
        for s in samples:
            s.text_negatives = [t for t in s.text_negatives if (s.caption, t.caption) not in same]
            s.image_negatives = [dataclasses.replace(n, caption=None) if (s.caption, n.caption) in same else n
                                 for n in s.image_negatives]
    return report
