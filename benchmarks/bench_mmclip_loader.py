"""MMCLIP data path speed: does the loader keep up, and does batching the negatives pay?

Two measurements in one run, each against a named baseline:

1. **Loader images/s**: our ``ContrastiveDataset`` + ``Collate`` (1 positive + K image negatives and K
   caption negatives per sample, padded with masks) vs a plain open_clip-style (image, caption) dataset
   with torch's default collate, same PNGs, same transform, same workers. Also printed: the tiny model's
   train-step images/s, which the loader has to exceed.
2. **Encoding negatives**: one batched pass over positives and valid negatives (our trainer) vs one pass
   per negative slot (the reference's per-sample-loop style), forward + backward of the tiny model.

    python benchmarks/bench_mmclip_loader.py            # ~1 minute on 2 CPU cores
    python benchmarks/bench_mmclip_loader.py --full     # more samples, 112 px, 2 workers
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from mmclip_plugin.config import ModelConfig
from mmclip_plugin.data import Collate, ContrastiveDataset, ImageNegative, Sample, TextNegative
from mmclip_plugin.model import create_model
from mmclip_plugin.train_setup import ContrastiveForward


def make_samples(root: Path, n: int, k: int, size: int) -> list[Sample]:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        paths = []
        for j in range(1 + k):
            img = np.full((size, size, 3), 255, dtype=np.uint8)
            x, y = rng.integers(0, size // 2, 2)
            img[y : y + size // 3, x : x + size // 3] = rng.integers(0, 255, 3)
            path = root / f"{i}_{j}.png"
            Image.fromarray(img).save(path)
            paths.append(str(path))
        samples.append(Sample(paths[0], f"figure {i}: a square at {x}, {y}",
                              [ImageNegative(p, f"negative {j} of {i}") for j, p in enumerate(paths[1:])],
                              [TextNegative(f"wrong caption {j} of {i}", "rule") for j in range(k)]))
    return samples


class PlainPairs(Dataset):
    """Baseline: open_clip's CsvDataset shape, one image and one caption per item."""

    def __init__(self, samples: list[Sample], transform, tokenize):
        self.items = [(s.image, s.caption) for s in samples] + [(n.image, n.caption) for s in samples for n in s.image_negatives]
        self.transform, self.tokenize = transform, tokenize

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, caption = self.items[i]
        with Image.open(path) as img:
            return self.transform(img.convert("RGB")), self.tokenize([caption])[0]


def loader_images_per_s(loader: DataLoader, count) -> float:
    start, images = time.perf_counter(), 0
    for batch in loader:
        images += count(batch)
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--k", type=int, default=4, help="image (and caption) negatives per sample")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="PNG side in pixels")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10, help="timed steps for the encoding comparison")
    parser.add_argument("--full", action="store_true", help="512 samples, 112 px PNGs, 2 workers, 20 steps")
    args = parser.parse_args()
    if args.full:
        args.samples, args.size, args.workers, args.steps = 512, 112, 2, 20
    torch.manual_seed(0)
    model = create_model(ModelConfig(name="mmclip-tiny-vit"))
    k, b = args.k, args.batch
    with tempfile.TemporaryDirectory() as tmp:
        samples = make_samples(Path(tmp), args.samples, k, args.size)
        ours = ContrastiveDataset(samples, model.preprocess_val, model.tokenize, image_negatives=k, text_negatives=k)
        collate = Collate(k, k, model.image_size, model.model_cfg["text_cfg"]["context_length"])
        ours_loader = DataLoader(ours, batch_size=b, shuffle=False, num_workers=args.workers, collate_fn=collate)
        plain_loader = DataLoader(PlainPairs(samples, model.preprocess_val, model.tokenize), batch_size=b * (1 + k),
                                  num_workers=args.workers)
        loader_images_per_s(plain_loader, lambda x: x[0].shape[0])  # warm the file cache
        plain = loader_images_per_s(plain_loader, lambda x: x[0].shape[0])
        mine = loader_images_per_s(ours_loader, lambda x: x["images"].shape[0] + int(x["neg_image_mask"].sum()))
        print(f"loader ({args.samples} samples x {1 + k} images, {args.size} px PNG -> {model.image_size} px, "
              f"{args.workers} worker(s)):")
        print(f"  ours (1+K per sample, masks) {mine:8.1f} images/s")
        print(f"  plain (image, caption) pairs {plain:8.1f} images/s")
        print(f"  ratio ours/plain             {mine / plain:8.2f}x")

        batch = next(iter(DataLoader(ours, batch_size=b, num_workers=0, collate_fn=collate)))
    forward = ContrastiveForward(model)

    def batched() -> torch.Tensor:
        f = forward(batch)
        return f["image_features"].sum() + f["text_features"].sum() + f["neg_image_features"].sum() + f["neg_text_features"].sum()

    def per_slot() -> torch.Tensor:
        total = model.encode_image(batch["images"]).sum() + model.encode_text(batch["texts"]).sum()
        for j in range(k):  # one pass per negative slot, as a per-sample loop over K would do
            total = total + model.encode_image(batch["neg_images"][:, j]).sum() + model.encode_text(batch["neg_texts"][:, j]).sum()
        return total

    def once(fn) -> float:
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        fn().backward()
        return time.perf_counter() - start

    once(batched), once(per_slot)  # warm-up
    # alternate the two and take medians: on a shared machine, load changes between back-to-back loops
    times = np.array([(once(batched), once(per_slot)) for _ in range(args.steps)])
    one_pass, sliced = b * (1 + k) / np.median(times, axis=0)
    print(f"encoding forward+backward (batch {b}, K={k}, tiny ViT {model.image_size} px, {torch.get_num_threads()} threads):")
    print(f"  ours (one batched pass)      {one_pass:8.1f} images/s")
    print(f"  per negative slot            {sliced:8.1f} images/s")
    print(f"  ratio                        {one_pass / sliced:8.2f}x")
    print(f"loader / train-step throughput {mine / one_pass:8.2f}x (> 1: the loader keeps up)")


if __name__ == "__main__":
    main()
