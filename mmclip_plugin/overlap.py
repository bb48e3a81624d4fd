"""Images shared between data sets or splits, found by content: what a held-out number must not have seen.

The diagram engine draws each sample from its own seed, but families with few degrees of freedom (a
square, a regular hexagon, an equilateral triangle with its median) come out pixel-identical from
different seeds, so the same picture can land in ``train`` and in ``val``, or in a pretraining pool
and in the data fine-tuned on. Two helpers keep measurements honest:

- :func:`image_digests`: the SHA-1 of every image file (positives and image negatives) of some splits;
- :func:`drop_seen`: the samples whose positive image is not among given digests, and how many went.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from mmclip_plugin.data import Sample, read_samples


@lru_cache(maxsize=65536)
def file_digest(path: str) -> str:
    """SHA-1 of a file's bytes (PNG encoding is deterministic: equal pictures, equal files)."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def sample_digests(samples: Iterable[Sample], negatives: bool = True) -> set[str]:
    """Digests of the samples' positive images (and of their image negatives when ``negatives``)."""
    out = set()
    for sample in samples:
        out.add(file_digest(sample.image))
        if negatives:
            out.update(file_digest(n.image) for n in sample.image_negatives)
    return out


def image_digests(data: str | os.PathLike, splits: Sequence[str]) -> set[str]:
    """Digests of every image (positives and image negatives) of ``splits`` of a data-set directory."""
    out: set[str] = set()
    for split in splits:
        samples, _ = read_samples(data, split=split)
        out |= sample_digests(samples)
    return out


def drop_seen(samples: Sequence[Sample], seen: set[str]) -> tuple[list[Sample], int]:
    """The samples whose positive image is not in ``seen``, and how many were dropped."""
    kept = [s for s in samples if file_digest(s.image) not in seen]
    return kept, len(samples) - len(kept)
