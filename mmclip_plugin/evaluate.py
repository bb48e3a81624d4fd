"""Encoder-level evaluation of MMCLIP checkpoints: hard-negative accuracy (the paper's Hit@1) and retrieval.

For every sample of a split of a data set (built by ``mmgeolm-data`` or in the reference's JSON format):

* **t2i hard accuracy**: the caption must score its own image above each of its K image negatives
  (1 + K candidates; chance ``1 / (1 + K)``);
* **t2i paired accuracy**: for each image negative with a caption of its own, the positive caption
  must prefer the positive image *and* the negative's caption the negative image. An encoder that ranks
  pictures by how unperturbed they look, whatever the caption, passes every t2i hard row and no pair
  (it scores 0; one guessing each side at random 0.25), so this is the grounding measure;
  ``t2i_negative_caption_acc`` is the second half alone;
* **i2t hard accuracy**: the image must score its own caption above each of its K caption negatives;
* **per perturbation type** (``per_type``): pairwise win rate of the positive against the negatives of
  that type (image negatives by ``type``; caption negatives of kind ``perturbation`` by the type of the
  image negative they describe); chance 0.5;
* ``hits``: each t2i row's hit (0/1, in sample order) and each pair's, so that intervals can be
  bootstrapped over the samples;
* **per caption kind** (``per_kind``): i2t accuracy against the negatives of that kind only, and the
  pairwise win rate;
* **retrieval** over the whole split: R@1 / R@5 image -> caption and caption -> image among all
  positives (a retrieved item with the same caption text counts as a hit); chance ``k / N``.

Every distinct image and caption is encoded once, in batches, under ``torch.no_grad`` in eval mode.
Scores are cosine similarities (the logit scale and bias do not change a ranking); a tie counts as a miss.
"""
from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mmclip_plugin.checkpoint import FINAL_DIR
from mmclip_plugin.config import ModelConfig
from mmclip_plugin.data import TEXT_KINDS, BadRecord, Sample, read_samples
from mmclip_plugin.distributed import resolve_device
from mmclip_plugin.model import MMCLIPModel, create_model, is_checkpoint_dir, load_checkpoint
from mmgeolm_core.errors import InputError

UNTRAINED_PREFIX = "none:"
RETRIEVAL_KS = (1, 5)


@dataclass
class EvalConfig:
    """How to evaluate.

    Attributes:
        split: which split of a data-set directory (``val`` holds unseen seeds).
        batch_size: images / captions encoded per forward pass.
        image_negatives: use at most this many image negatives per sample (None: all).
        text_negatives: use at most this many caption negatives per sample (None: all).
        device: ``cpu``, ``cuda`` or ``auto``.
        num_workers: DataLoader workers decoding images.
        progress: show tqdm bars.
    """

    split: str = "val"
    batch_size: int = 64
    image_negatives: int | None = None
    text_negatives: int | None = None
    device: str = "auto"
    num_workers: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("image_negatives", "text_negatives"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InputError(f"{name} must be >= 0 or None (all), got {value}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"device must be auto, cpu or cuda, got {self.device!r}")


# ------------------------------------------------------------------------------------- models
def load_eval_model(spec: str, device: str | torch.device = "cpu", seed: int = 0) -> MMCLIPModel:
    """The model named by ``spec``.

    Args:
        spec: an MMCLIP checkpoint directory; a training run directory (its ``final/`` is used); or
            ``none:<open_clip model name>[:<pretrained tag>]`` for the untrained starting model
            (random init seeded by ``seed`` when no tag is given).
        device: where to put the model.
        seed: torch seed of a random initialisation.

    Raises:
        FileNotFoundError: a directory that is neither a checkpoint nor a run with ``final/``.
    """
    if spec.startswith(UNTRAINED_PREFIX):
        name, _, tag = spec[len(UNTRAINED_PREFIX) :].partition(":")
        if not name:
            raise InputError(f"checkpoint {spec!r}: expected none:<open_clip model name>[:<pretrained tag>]")
        torch.manual_seed(seed)
        return create_model(ModelConfig(name=name, pretrained=tag or None), device=device)
    path = Path(spec)
    if not is_checkpoint_dir(path) and is_checkpoint_dir(path / FINAL_DIR):
        path = path / FINAL_DIR
    return load_checkpoint(path, device=device)


def checkpoint_names(specs: Sequence[str]) -> list[str]:
    """Short, unique display names: a run directory's name (not ``final``), else the spec itself."""
    names = []
    for spec in specs:
        path = Path(spec.rstrip("/"))
        short = path.parent.name if path.name == FINAL_DIR else path.name
        names.append(spec if spec.startswith(UNTRAINED_PREFIX) or not short else short)
    if len(set(names)) < len(names):
        return list(specs)
    return names


# ------------------------------------------------------------------------------------- encoding
class _ImageFiles(Dataset):
    def __init__(self, paths: list[str], transform: Any):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str]:
        try:
            with Image.open(self.paths[index]) as img:
                return index, self.transform(img.convert("RGB")), ""
        except (OSError, ValueError) as exc:  # a 0-byte, truncated or non-image file: skipped and reported
            return index, None, f"cannot decode the image: {exc}"


def _collate_images(items: list[tuple[int, torch.Tensor | None, str]]) -> tuple[list[int], torch.Tensor | None, dict[int, str]]:
    good = [(i, x) for i, x, _ in items if x is not None]
    return [i for i, _ in good], torch.stack([x for _, x in good]) if good else None, {i: e for i, _, e in items if e}


@torch.no_grad()
def encode_images(model: MMCLIPModel, paths: list[str], cfg: EvalConfig) -> tuple[torch.Tensor, dict[str, str]]:
    """(N, D) normalised float32 embeddings of the image files, on CPU (zero rows for files that do not
    decode), and ``{path: reason}`` of those files."""
    device = model.device
    loader = DataLoader(_ImageFiles(paths, model.preprocess_val), batch_size=cfg.batch_size, collate_fn=_collate_images,
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
    rows: dict[int, torch.Tensor] = {}
    failed: dict[str, str] = {}
    for indices, images, errors in tqdm(loader, desc="images", disable=not cfg.progress):
        failed.update({paths[i]: reason for i, reason in errors.items()})
        if images is None:
            continue
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            features = model.encode_image(images.to(device, non_blocking=True)).float().cpu()
        rows.update(zip(indices, features))
    if not rows:
        return torch.zeros(len(paths), 0), failed
    out = torch.zeros(len(paths), next(iter(rows.values())).shape[0])
    for i, row in rows.items():
        out[i] = row
    return _normalise(out), failed


@torch.no_grad()
def encode_texts(model: MMCLIPModel, captions: list[str], cfg: EvalConfig) -> torch.Tensor:
    """(N, D) normalised float32 embeddings of the captions, on CPU."""
    device = model.device
    out = []
    for start in tqdm(range(0, len(captions), cfg.batch_size), desc="captions", disable=not cfg.progress):
        tokens = model.tokenize(captions[start : start + cfg.batch_size]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out.append(model.encode_text(tokens).float().cpu())
    return _normalise(torch.cat(out)) if out else torch.zeros(0, 0)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


# ------------------------------------------------------------------------------------- metrics
def load_split(data: str | os.PathLike | Sequence[str | os.PathLike], split: str) -> tuple[list[Sample], list[BadRecord]]:
    """The valid samples of ``split`` and every record refused (skipped, as in training, and reported).

    Raises:
        InputError: the split holds no valid sample.
    """
    samples, bad = read_samples(data, split=split)
    if not samples:
        detail = "; ".join(map(str, bad[:3]))
        raise InputError(f"no valid samples in {data} (split {split!r}){': ' + detail if detail else ''}")
    return samples, bad


def evaluate_model(model: MMCLIPModel, samples: Sequence[Sample], cfg: EvalConfig | None = None,
                   bad: Sequence[BadRecord] = ()) -> dict[str, Any]:
    """Hard-negative accuracy, per-type / per-kind breakdowns and retrieval of ``model`` on ``samples``.

    A sample with an image that does not decode is left out, like the records in ``bad`` (refused when
    the data was read); both are counted and listed in the result, never dropped silently.

    Returns:
        A JSON-safe dict: ``i2t_hard_acc``, ``t2i_hard_acc`` (fractions), ``per_type``, ``per_kind``,
        ``retrieval``, ``chance``, ``counts``, ``bad_records`` and ``bad_record_details``.

    Raises:
        InputError: no sample is left to evaluate.
    """
    cfg = cfg or EvalConfig()
    ki = cfg.image_negatives
    kt = cfg.text_negatives
    image_negs = [list(s.image_negatives)[:ki] for s in samples]
    text_negs = [list(s.text_negatives)[:kt] for s in samples]
    image_paths = _unique([s.image for s in samples] + [n.image for negs in image_negs for n in negs])
    captions = _unique([s.caption for s in samples] + [t.caption for negs in text_negs for t in negs]
                       + [n.caption for negs in image_negs for n in negs if n.caption])
    was_training = model.training
    model.eval()
    try:
        img, failed = encode_images(model, image_paths, cfg)
        txt = encode_texts(model, captions, cfg)
    finally:
        model.train(was_training)
    skipped = [str(b) for b in bad]
    if failed:
        kept = []
        for s, negs in zip(samples, image_negs):
            broken = next((p for p in [s.image, *(n.image for n in negs)] if p in failed), None)
            if broken is None:
                kept.append(s)
            else:
                skipped.append(f"{s.source}: {s.record}: image {broken}: {failed[broken]}")
        if not kept:
            raise InputError(f"no sample left to evaluate: {skipped[len(bad)]}")
        samples = kept
    result = compute_metrics(samples, img, {p: i for i, p in enumerate(image_paths)}, txt,
                             {c: i for i, c in enumerate(captions)}, image_negatives=ki, text_negatives=kt)
    return {**result, "bad_records": len(skipped), "bad_record_details": skipped}


def compute_metrics(
    samples: Sequence[Sample],
    img: torch.Tensor,
    img_row: Mapping[str, int],
    txt: torch.Tensor,
    txt_row: Mapping[str, int],
    *,
    image_negatives: int | None = None,
    text_negatives: int | None = None,
) -> dict[str, Any]:
    """The metrics of :func:`evaluate_model` from embeddings already computed.

    Args:
        samples: the evaluated samples.
        img: (Ni, D) normalised image embeddings; ``img_row[path]`` is the row of an image file.
        img_row: image path -> row of ``img`` (every positive and negative image of ``samples``).
        txt: (Nt, D) normalised caption embeddings.
        txt_row: caption -> row of ``txt`` (every positive and negative caption, the image negatives'
            own captions included).
        image_negatives: use at most this many image negatives per sample (None: all).
        text_negatives: use at most this many caption negatives per sample (None: all).
    """
    image_negs = [list(s.image_negatives)[:image_negatives] for s in samples]
    text_negs = [list(s.text_negatives)[:text_negatives] for s in samples]
    pos_img = torch.tensor([img_row[s.image] for s in samples])
    pos_txt = torch.tensor([txt_row[s.caption] for s in samples])

    t2i = _HardTally()
    i2t = _HardTally()
    pairs = {"both": [0, 0], "negative_caption": [0, 0]}
    hits: dict[str, list[int]] = {"t2i_hard": [], "t2i_paired": []}  # per row, in order: for intervals
    per_type: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"t2i": [0, 0], "i2t": [0, 0]})
    per_kind: dict[str, _HardTally] = defaultdict(_HardTally)
    for n, s in enumerate(samples):
        t, v = txt[pos_txt[n]], img[pos_img[n]]
        if image_negs[n]:
            pos = float(t @ v)
            neg = [float(t @ img[img_row[x.image]]) for x in image_negs[n]]
            t2i.add(pos, neg)
            hits["t2i_hard"].append(int(all(pos > x for x in neg)))
            for x, score in zip(image_negs[n], neg):
                _win(per_type[x.type]["t2i"], pos > score)
                if x.caption and x.caption != s.caption:  # the same pair seen from the negative's caption
                    t_neg = txt[txt_row[x.caption]]
                    own = float(t_neg @ img[img_row[x.image]]) > float(t_neg @ v)
                    _win(pairs["negative_caption"], own)
                    _win(pairs["both"], own and pos > score)
                    hits["t2i_paired"].append(int(own and pos > score))
                    _win(per_type[x.type].setdefault("paired", [0, 0]), own and pos > score)
        if text_negs[n]:
            pos = float(v @ t)
            neg = [float(v @ txt[txt_row[x.caption]]) for x in text_negs[n]]
            i2t.add(pos, neg)
            type_of: dict[str, str] = {}  # caption -> the first image negative's type it describes
            for x in s.image_negatives:
                if x.caption:
                    type_of.setdefault(x.caption, x.type)
            by_kind: dict[str, list[float]] = defaultdict(list)
            for x, score in zip(text_negs[n], neg):
                by_kind[x.kind].append(score)
                if x.kind == "perturbation" and x.caption in type_of:
                    _win(per_type[type_of[x.caption]]["i2t"], pos > score)
            for kind, scores in by_kind.items():
                per_kind[kind].add(pos, scores)

    n_items = len(samples)
    retrieval = _retrieval(img[pos_img], txt[pos_txt], [s.caption for s in samples])
    return {
        "i2t_hard_acc": i2t.acc,
        "t2i_hard_acc": t2i.acc,
        "t2i_paired_acc": _frac(pairs["both"]),
        "hits": hits,
        "t2i_negative_caption_acc": _frac(pairs["negative_caption"]),
        "per_type": {
            name: {"t2i_acc": _frac(c["t2i"]), "t2i_n": c["t2i"][1], "i2t_acc": _frac(c["i2t"]), "i2t_n": c["i2t"][1],
                   "t2i_paired_acc": _frac(c.get("paired", [0, 0]))}
            for name, c in sorted(per_type.items())
        },
        "per_kind": {
            kind: {"acc": tally.acc, "pairwise_acc": tally.pairwise_acc, "rows": tally.rows,
                   "negatives": tally.negatives, "chance": tally.chance}
            for kind, tally in sorted(per_kind.items(), key=lambda kv: TEXT_KINDS.index(kv[0]))
        },
        "retrieval": retrieval,
        "chance": {
            "i2t_hard_acc": i2t.chance, "t2i_hard_acc": t2i.chance, "pairwise": 0.5,
            "t2i_paired_acc": 0.25, "t2i_negative_caption_acc": 0.5,
            **{f"r{k}": min(1.0, k / n_items) for k in RETRIEVAL_KS},
        },
        "counts": {
            "samples": n_items, "i2t_rows": i2t.rows, "t2i_rows": t2i.rows, "t2i_pairs": pairs["both"][1],
            "image_negatives": t2i.negatives, "text_negatives": i2t.negatives,
            "images_encoded": len(img_row), "captions_encoded": len(txt_row),
        },
    }


class _HardTally:
    """Rows of (positive score, negative scores): Hit@1 accuracy, pairwise win rate and chance."""

    def __init__(self) -> None:
        self.rows = self.hits = self.negatives = self.wins = 0
        self.chance_sum = 0.0

    def add(self, pos: float, neg: list[float]) -> None:
        self.rows += 1
        self.hits += int(all(pos > x for x in neg))
        self.wins += sum(pos > x for x in neg)
        self.negatives += len(neg)
        self.chance_sum += 1.0 / (1 + len(neg))

    @property
    def acc(self) -> float | None:
        return self.hits / self.rows if self.rows else None

    @property
    def pairwise_acc(self) -> float | None:
        return self.wins / self.negatives if self.negatives else None

    @property
    def chance(self) -> float | None:
        return self.chance_sum / self.rows if self.rows else None


def _win(counter: list[int], won: bool) -> None:
    counter[0] += int(won)
    counter[1] += 1


def _frac(counter: list[int]) -> float | None:
    return counter[0] / counter[1] if counter[1] else None


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _retrieval(img: torch.Tensor, txt: torch.Tensor, captions: list[str]) -> dict[str, Any]:
    """R@k over N positives both ways; an item whose caption equals the query's counts as a hit."""
    n = img.shape[0]
    sim = img @ txt.T  # (N images, N captions)
    codes = np.unique(np.array(captions, dtype=object), return_inverse=True)[1]
    same = torch.from_numpy(codes[:, None] == codes[None, :])  # (N, N) caption i == caption j
    out: dict[str, Any] = {"candidates": n}
    for direction, scores in (("i2t", sim), ("t2i", sim.T)):
        ranked = scores.argsort(dim=1, descending=True)  # (N, N) candidate indices, best first
        hit = same.gather(1, ranked)  # (N, N) whether the candidate at each rank is a match
        for k in RETRIEVAL_KS:
            out[f"{direction}_r{k}"] = float(hit[:, :k].any(dim=1).float().mean())
    return out


# ------------------------------------------------------------------------------------- entry points
def evaluate_checkpoints(
    specs: Sequence[str], data: str | os.PathLike | Sequence[str | os.PathLike], cfg: EvalConfig | None = None
) -> dict[str, dict[str, Any]]:
    """Evaluate several checkpoints on the same split; returns display name -> result (in order)."""
    cfg = cfg or EvalConfig()
    samples, bad = load_split(data, cfg.split)
    device = resolve_device(cfg.device)
    results: dict[str, dict[str, Any]] = {}
    for name, spec in zip(checkpoint_names(specs), specs):
        model = load_eval_model(spec, device=device)
        result = evaluate_model(model, samples, cfg, bad)
        result.update(checkpoint=spec, data=str(data), split=cfg.split)
        results[name] = result
        del model
    return results


def format_summary(name: str, result: dict[str, Any]) -> str:
    """A few human-readable lines: the accuracies with their chance levels."""
    c = result["chance"]
    r = result["retrieval"]

    def pct(x: float | None) -> str:
        return "  n/a" if x is None else f"{100 * x:5.1f}"

    lines = [
        f"{name}: {result['counts']['samples']} samples ({result.get('split', '?')})",
        f"  i2t hard acc {pct(result['i2t_hard_acc'])}%  (chance {pct(c['i2t_hard_acc'])}%)",
        f"  t2i hard acc {pct(result['t2i_hard_acc'])}%  (chance {pct(c['t2i_hard_acc'])}%)",
        f"  t2i paired acc {pct(result['t2i_paired_acc'])}% over {result['counts']['t2i_pairs']} pairs "
        f"(caption-blind 0%, random 25%); the negative's caption alone {pct(result['t2i_negative_caption_acc'])}%",
        f"  retrieval over {r['candidates']}: i2t R@1 {pct(r['i2t_r1'])}% R@5 {pct(r['i2t_r5'])}%, "
        f"t2i R@1 {pct(r['t2i_r1'])}% R@5 {pct(r['t2i_r5'])}%  (chance R@1 {pct(c['r1'])}%, R@5 {pct(c['r5'])}%)",
    ]
    for kind, v in result["per_kind"].items():
        lines.append(f"  i2t vs {kind:12s} acc {pct(v['acc'])}% (chance {pct(v['chance'])}%), "
                     f"pairwise {pct(v['pairwise_acc'])}%")
    for typ, v in result["per_type"].items():
        lines.append(f"  {typ:24s} t2i pairwise {pct(v['t2i_acc'])}% (n={v['t2i_n']}), "
                     f"i2t pairwise {pct(v['i2t_acc'])}% (n={v['i2t_n']})  (chance 50%)")
    details = result.get("bad_record_details", [])
    if details:
        lines.append(f"  skipped {len(details)} record(s) (not evaluated; all listed in bad_record_details):")
        lines += [f"    {d}" for d in details[:5]] + ([f"    ... and {len(details) - 5} more"] if len(details) > 5 else [])
    return "\n".join(lines)
