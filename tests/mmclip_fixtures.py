"""Tiny synthetic MMCLIP data sets written in a test's tmp_path (no builder, no downloads)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from data_recipes.formats.dataset import validate_samples, write_samples

COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white", "gray", "pink"]


def write_png(path: Path, seed: int, size: int = 32) -> str:
    """A deterministic picture: a colored square at a seed-dependent place on a plain background."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), rng.integers(0, 255, 3), dtype=np.uint8)
    x, y = rng.integers(0, size // 2, 2)
    img[y : y + size // 2, x : x + size // 2] = rng.integers(0, 255, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return str(path)


def caption(i: int, j: int = 0) -> str:
    return f"a {COLORS[i % len(COLORS)]} square number {i} variant {j}"


def make_dataset_dir(root: Path, n: int = 8, k_images: int = 3, k_texts: int = 3, val: int = 0) -> Path:
    """A data-set directory in the ``mmgeolm-data build`` layout: ``samples.jsonl`` + ``images/``."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n + val):
        write_png(root / "images" / f"{i}.png", seed=1000 * i)
        negatives = []
        for j in range(k_images):
            write_png(root / "images" / f"{i}_neg{j}.png", seed=1000 * i + j + 1)
            negatives.append({"type": "move_point", "image": f"images/{i}_neg{j}.png", "script": None,
                              "caption": caption(i, j + 1), "facts": [], "removed": [], "added": [], "detail": "",
                              "hardness": {"changed_fraction": 0.1, "ssim": 0.9}})
        kinds = ["rule", "retrieval", "perturbation"]
        text_negatives = [{"caption": f"not {caption(i)} {j}", "kind": kinds[j % 3], "rules": []} for j in range(k_texts)]
        lines.append({"id": f"s{i}", "index": i, "family": "square", "seed": [i], "facts": [], "image": f"images/{i}.png",
                      "script": None, "caption": caption(i), "split": "train" if i < n else "val",
                      "negatives": negatives, "text_negatives": text_negatives})
    write_samples(root, lines)
    problems = validate_samples(root, check_files=True)
    assert not problems, f"the fixture wrote a data set its format owner refuses: {problems[:3]}"
    return root


def make_reference_json(root: Path, n: int = 6, k_images: int = 3, k_texts: int = 2) -> tuple[Path, Path]:
    """The reference's two JSON lists (image negatives, text negatives) over the same positives."""
    root.mkdir(parents=True, exist_ok=True)
    image_recs, text_recs = [], []
    for i in range(n):
        write_png(root / "pos" / f"{i}.png", seed=7000 + i)
        negs = [write_png(root / "neg" / f"{i}_{j}.png", seed=7000 + 100 * i + j + 1) for j in range(k_images)]
        conv = [{"from": "human", "value": "<image>\nDescribe the figure."}, {"from": "gpt", "value": caption(i)}]
        image_recs.append({"positive_image_path": f"pos/{i}.png", "negative_image_path": [str(Path(p).relative_to(root)) for p in negs],
                           "conversations": conv})
        text_recs.append({"positive_image_path": f"pos/{i}.png", "negative_captions": [f"wrong {caption(i)} {j}" for j in range(k_texts)],
                          "conversations": conv})
    (root / "image_neg.json").write_text(json.dumps(image_recs))
    (root / "text_neg.json").write_text(json.dumps(text_recs))
    return root / "image_neg.json", root / "text_neg.json"
