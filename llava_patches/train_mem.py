"""``python -m llava_patches.train_mem ARGS``: :mod:`llava_patches.train` with the fastest attention.

Upstream's ``train_mem.py`` hard-codes ``train(attn_implementation="flash_attention_2")``, which fails
where flash-attn is missing. Here flash-attention 2 is asked for only when ``flash_attn`` is importable
and a CUDA device is present; otherwise PyTorch's SDPA is used.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from llava_patches.compat import is_flash_attn_available
from llava_patches.train import main as train_main


def select_attn_implementation() -> str:
    """``"flash_attention_2"`` when flash-attn is importable and CUDA is available, else ``"sdpa"``."""
    if is_flash_attn_available() and torch.cuda.is_available():
        return "flash_attention_2"
    return "sdpa"


def main(argv: Sequence[str] | None = None) -> int:
    """Run :func:`llava_patches.train.main` with :func:`select_attn_implementation`; returns the exit status."""
    return train_main(argv, attn_implementation=select_attn_implementation(), prog="python -m llava_patches.train_mem")


if __name__ == "__main__":
    raise SystemExit(main())
