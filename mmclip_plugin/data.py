"""Training data for MMCLIP: read data sets, pick K negatives per sample, load images, collate.

Two on-disk formats are read, each through the one module that owns it, so a record is accepted or
refused here exactly as ``mmgeolm-data`` and ``mmclip-eval`` accept or refuse it:

* a data-set directory built by ``mmgeolm-data build`` or ``import`` (:mod:`data_recipes.formats.dataset`);
* the reference's JSON lists of image or text negatives (:mod:`data_recipes.formats.reference`; records
  of several files that share an image and caption are merged into one sample).

Bad records are never a crash: a record the format refuses (a missing key or file, an empty caption) is
skipped and returned as a :class:`BadRecord`; an image that fails to decode at load time (inside a
DataLoader worker) yields a marker that :class:`Collate` drops and reports in the batch.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from data_recipes.formats.dataset import TEXT_KINDS, read_samples_report
from data_recipes.formats.reference import read_reference, resolve_files
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import FormatError


@dataclass(frozen=True)
class BadRecord:
    """One problem found in the data: which file, which record, which field, and what is wrong.

    A plain dataclass (not the :class:`~mmgeolm_core.io.FormatError` it is made from) so that it crosses
    DataLoader worker processes and checkpoints as data.
    """

    file: str
    record: str
    field: str
    reason: str

    @classmethod
    def of(cls, error: FormatError) -> BadRecord:
        return cls(error.file, error.where or "", error.key or "", error.reason)

    def __str__(self) -> str:
        where = f": {self.record}" if self.record else ""
        key = f": key '{self.field}'" if self.field else ""
        return f"{self.file}{where}{key}: {self.reason}"


@dataclass(frozen=True)
class ImageNegative:
    image: str
    caption: str | None = None
    type: str = "image"


@dataclass(frozen=True)
class TextNegative:
    caption: str
    kind: str = "rule"


@dataclass
class Sample:
    """A positive (image, caption) with its candidate negatives; ``source``/``record`` locate it."""

    image: str
    caption: str
    image_negatives: list[ImageNegative] = field(default_factory=list)
    text_negatives: list[TextNegative] = field(default_factory=list)
    source: str = ""
    record: str = ""
    id: str = ""


# ------------------------------------------------------------------------------------- reading
def read_samples(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    split: str = "train",
    image_root: str | None = None,
    reference_text_kind: str = "rule",
) -> tuple[list[Sample], list[BadRecord]]:
    """Read and validate samples from data-set directories and/or reference JSON files.

    Args:
        paths: one path or a list; a directory holds ``samples.jsonl``, a file is a reference JSON list.
        split: keep only this split of data-set directories.
        image_root: base of relative image paths in reference JSON (default: the JSON file's folder).
        reference_text_kind: kind assigned to the reference's ``negative_captions``.

    Returns:
        The valid samples and every record refused (skipped and reported).

    Raises:
        InputError: a path does not exist.
        FormatError: a whole file is unreadable (not UTF-8, not JSON, no samples.jsonl).
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    samples: list[Sample] = []
    bad: list[BadRecord] = []
    merged: dict[tuple[str, str], Sample] = {}
    for path in map(Path, paths):
        if path.is_dir():
            samples += _read_dataset_dir(path, split, bad)
        elif path.is_file():
            for sample in _read_reference_json(path, Path(image_root) if image_root else path.parent,
                                               reference_text_kind, bad):
                twin = merged.get((sample.image, sample.caption))
                if twin is None:  # the reference's image- and text-negative files describe the same samples
                    merged[(sample.image, sample.caption)] = sample
                    samples.append(sample)
                    continue
                seen_images = {n.image for n in twin.image_negatives}
                seen_texts = {n.caption for n in twin.text_negatives}
                twin.image_negatives += [n for n in sample.image_negatives if n.image not in seen_images]
                twin.text_negatives += [n for n in sample.text_negatives if n.caption not in seen_texts]
        else:
            raise InputError(f"data {path} does not exist (expected a data-set directory or a JSON file)")
    return samples, bad


def _read_dataset_dir(root: Path, split: str, bad: list[BadRecord]) -> list[Sample]:
    records, problems = read_samples_report(root, check_files=True)
    bad += [BadRecord.of(p) for p in problems]
    source = str(root / "samples.jsonl")
    return [
        Sample(
            os.path.normpath(root / rec["image"]), rec["caption"].strip(),
            [ImageNegative(os.path.normpath(root / n["image"]), n["caption"] or None, n["type"]) for n in rec["negatives"]],
            [TextNegative(t["caption"], t["kind"]) for t in rec["text_negatives"]],
            source, f"id {rec['id']}", rec["id"],
        )
        for rec in records
        if rec["split"] == split
    ]


def _read_reference_json(file: Path, root: Path, text_kind: str, bad: list[BadRecord]) -> list[Sample]:
    records, problems = read_reference(file)
    bad += [BadRecord.of(p) for p in problems]
    out = []
    for record in records:
        try:
            record = resolve_files(record, file, root)
        except FormatError as err:
            bad.append(BadRecord.of(err))
            continue
        out.append(Sample(record.image, record.caption, [ImageNegative(p) for p in record.negative_images],
                          [TextNegative(c, text_kind) for c in record.negative_captions], str(file), record.where,
                          record.where))
    return out


# ------------------------------------------------------------------------------------- dataset
@dataclass
class _Item:
    """One training item: an image, its caption, and its candidate negatives."""

    image: str
    caption: str
    neg_images: list[str]
    neg_texts: list[tuple[str, int]]  # (caption, index into TEXT_KINDS)
    source: str
    record: str

    @property
    def pair_id(self) -> tuple[int, int]:
        """Stable ids of the caption text and the image file (equal text, equal id, on every rank)."""
        return _stable_id(self.caption), _stable_id(self.image)


def _stable_id(text: str) -> int:
    """A 63-bit id of ``text`` that does not depend on the process (``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") >> 1


class ContrastiveDataset(Dataset):
    """Items of (image, caption, K image negatives, K caption negatives), negatives picked per epoch.

    Args:
        samples: validated samples (see :func:`read_samples`).
        transform: PIL image -> (3, H, W) tensor (the model's ``preprocess_val`` unless augmenting).
        tokenize: list of captions -> (N, L) token ids.
        image_negatives: K image negatives per item.
        text_negatives: K caption negatives per item.
        sample: ``fixed`` (first K) or ``random`` (K drawn with a generator seeded by (seed, epoch, index)).
        seed: the run seed.
        hard_batches: also make every captioned image negative an item; :attr:`groups` then lists each
            positive with its negatives, for a grouped batch sampler. A member's negatives are the other
            members, except those with its own caption or image: two perturbations that remove the same
            fact give two images with one caption, and neither is a negative of the other's caption.
        augment: ``transform`` is random; it is then seeded by (seed, epoch, index) so runs repeat exactly.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable[[Image.Image], torch.Tensor],
        tokenize: Callable[[list[str]], torch.Tensor],
        *,
        image_negatives: int = 0,
        text_negatives: int = 0,
        sample: str = "fixed",
        seed: int = 0,
        hard_batches: bool = False,
        augment: bool = False,
    ):
        if sample not in ("fixed", "random"):
            raise ValueError(f"sample must be 'fixed' or 'random', got {sample!r}")
        self.transform, self.tokenize = transform, tokenize
        self.k_images, self.k_texts, self.sample, self.seed = image_negatives, text_negatives, sample, seed
        self.augment = augment
        self.epoch = 0
        self.items: list[_Item] = []
        self.groups: list[list[int]] | None = [] if hard_batches else None
        for s in samples:
            texts = [(t.caption, TEXT_KINDS.index(t.kind)) for t in s.text_negatives]
            first = len(self.items)
            self.items.append(_Item(s.image, s.caption, [n.image for n in s.image_negatives], texts, s.source, s.record))
            if self.groups is None:
                continue
            members = [(s.image, s.caption)] + [(n.image, n.caption) for n in s.image_negatives if n.caption]
            for j, (img, cap) in enumerate(members[1:], 1):
                others = [m for i, m in enumerate(members) if i != j and m[0] != img and m[1] != cap]
                self.items.append(_Item(img, cap, [m[0] for m in others], [(m[1], 0) for m in others],
                                        s.source, f"{s.record} negative {j - 1}"))
            self.groups.append(list(range(first, len(self.items))))

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Negatives (``sample: random``) and augmentation are drawn per (seed, epoch, index)."""
        self.epoch = epoch

    def _pick(self, candidates: list, k: int, rng: np.random.Generator) -> list:
        if self.sample == "fixed" or len(candidates) <= k:
            return candidates[:k]
        return [candidates[i] for i in sorted(rng.choice(len(candidates), size=k, replace=False))]

    def _load(self, path: str, index: int, slot: int) -> torch.Tensor:
        with Image.open(path) as img:
            img = img.convert("RGB")
        if not self.augment:
            return self.transform(img)
        # torchvision's random transforms read torch's global RNG: seed it per (seed, epoch, index, slot)
        seed = int(np.random.default_rng([self.seed, self.epoch, index, slot]).integers(2**31))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(img)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        neg_images = self._pick(item.neg_images, self.k_images, rng)
        neg_texts = self._pick(item.neg_texts, self.k_texts, rng)
        bad: list[BadRecord] = []
        out: dict[str, Any] = {"index": index, "bad": bad, "image": None, "pair_id": item.pair_id}
        try:
            out["image"] = self._load(item.image, index, 0)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            bad.append(BadRecord(item.source, item.record, "image", f"cannot load {item.image}: {exc}"))
            return out
        loaded = []
        for j, path in enumerate(neg_images):
            try:
                loaded.append(self._load(path, index, j + 1))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                bad.append(BadRecord(item.source, item.record, f"negatives[{j}]", f"cannot load {path}: {exc}"))
        tokens = self.tokenize([item.caption] + [c for c, _ in neg_texts])  # (1 + kt, L)
        out.update(
            text=tokens[0],
            neg_images=torch.stack(loaded) if loaded else None,
            neg_texts=tokens[1:],
            neg_kinds=torch.tensor([k for _, k in neg_texts], dtype=torch.long),
        )
        return out


class Collate:
    """Stack items into fixed-shape tensors, padding negatives to K with masks; drops unloadable items.

    Output keys: ``images`` (B, 3, H, W), ``texts`` (B, L), ``neg_images`` (B, Ki, 3, H, W),
    ``neg_image_mask`` (B, Ki) bool, ``neg_texts`` (B, Kt, L), ``neg_text_mask`` (B, Kt) bool,
    ``neg_text_kind`` (B, Kt) long into ``TEXT_KINDS``, ``indices`` (B,), ``pair_ids`` (B, 2) the
    caption and image ids of each item (for the loss's false negatives), and ``bad``: the
    :class:`BadRecord` list of this batch (dropped items and dropped negatives).
    """

    def __init__(self, image_negatives: int, text_negatives: int, image_size: int, context_length: int):
        self.ki, self.kt, self.size, self.length = image_negatives, text_negatives, image_size, context_length

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        bad = [b for it in items for b in it["bad"]]
        good = [it for it in items if it["image"] is not None]
        b, ki, kt = len(good), self.ki, self.kt
        shape = tuple(good[0]["image"].shape) if good else (3, self.size, self.size)
        length = good[0]["text"].shape[-1] if good else self.length
        neg_images = torch.zeros(b, ki, *shape)
        neg_image_mask = torch.zeros(b, ki, dtype=torch.bool)
        neg_texts = torch.zeros(b, kt, length, dtype=torch.long)
        neg_text_mask = torch.zeros(b, kt, dtype=torch.bool)
        neg_text_kind = torch.zeros(b, kt, dtype=torch.long)
        for i, it in enumerate(good):
            if it["neg_images"] is not None:
                n = it["neg_images"].shape[0]
                neg_images[i, :n], neg_image_mask[i, :n] = it["neg_images"], True
            n = it["neg_texts"].shape[0]
            neg_texts[i, :n], neg_text_mask[i, :n], neg_text_kind[i, :n] = it["neg_texts"], True, it["neg_kinds"]
        return {
            "images": torch.stack([it["image"] for it in good]) if good else torch.zeros(0, *shape),
            "texts": torch.stack([it["text"] for it in good]) if good else torch.zeros(0, length, dtype=torch.long),
            "neg_images": neg_images,
            "neg_image_mask": neg_image_mask,
            "neg_texts": neg_texts,
            "neg_text_mask": neg_text_mask,
            "neg_text_kind": neg_text_kind,
            "indices": torch.tensor([it["index"] for it in good], dtype=torch.long),
            "pair_ids": torch.tensor([it["pair_id"] for it in good], dtype=torch.long).reshape(b, 2),
            "bad": bad,
        }


def build_dataset(data_cfg: Any, model: Any, seed: int) -> tuple[ContrastiveDataset, list[BadRecord]]:
    """Read ``data_cfg.train`` and build the dataset with the model's preprocessing and tokenizer.

    Args:
        data_cfg: a :class:`~mmclip_plugin.config.DataConfig`.
        model: an :class:`~mmclip_plugin.model.MMCLIPModel` (``preprocess_val``/``preprocess_train``, ``tokenize``).
        seed: the run seed.

    Raises:
        ValueError: no training data configured, or no valid sample left after validation.
    """
    if not data_cfg.train_paths:
        raise InputError("data.train is not set: give a data-set directory or a reference JSON file (data.train=PATH)")
    samples, bad = read_samples(
        data_cfg.train_paths, split=data_cfg.split, image_root=data_cfg.image_root,
        reference_text_kind=data_cfg.reference_text_kind,
    )
    kinds = getattr(data_cfg, "text_negative_kinds", None)
    if kinds is not None:  # e.g. the ablation's rule-only arm
        for s in samples:
            s.text_negatives = [t for t in s.text_negatives if t.kind in kinds]
    if not samples:
        detail = "; ".join(map(str, bad[:5])) or f"no record is in split {data_cfg.split!r} (data.split)"
        raise InputError(f"no valid training samples in {data_cfg.train_paths} (split {data_cfg.split!r}): {detail}")
    from mmclip_plugin.token_check import check_tokenization

    mode = getattr(data_cfg, "tokenization_check", "off")
    name = model.config.pretrained if model.config.name == "hf" else model.config.name
    report = check_tokenization(samples, model.tokenize, mode, tokenizer=str(name)) if mode != "off" else None
    dataset = ContrastiveDataset(
        samples,
        model.preprocess_train if data_cfg.augment else model.preprocess_val,
        model.tokenize,
        image_negatives=data_cfg.image_negatives,
        text_negatives=data_cfg.text_negatives,
        sample=data_cfg.sample,
        seed=seed,
        hard_batches=data_cfg.hard_batches,
        augment=data_cfg.augment,
    )
    dataset.token_check = report
    return dataset, bad
