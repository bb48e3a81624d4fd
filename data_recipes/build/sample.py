"""One sample of a build: a positive diagram, its image hard negatives, their files and its record.

Everything about sample ``i`` is a pure function of (recipe, i): its generator is
``np.random.default_rng([recipe.seed, i])`` and nothing reads global state, so a sample comes out
byte-identical whichever worker makes it and whenever. The sample is computed in memory first and
only then written (each file atomically, the completion record last), so a failing sample leaves no
files and a killed build leaves no half-written file under a final name.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data_recipes.diagrams import engine
from data_recipes.diagrams.captions import style_caption
from mmgeolm_core.io import atomic_write_bytes, atomic_write_json
from data_recipes.diagrams.hardness import image_hardness
from data_recipes.diagrams.layout import layout
from data_recipes.build.recipe import Recipe
from data_recipes.diagrams.render import Layout

PARTS_DIR = ".parts"
DUPLICATE = "duplicate: same image as an earlier one"
# A separate stream for the split so that changing val_fraction never changes a diagram.
SPLIT_STREAM = 1


@dataclass
class SampleResult:
    """What one sample produced: its completion record and its files (relative path -> bytes)."""

    part: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)


def sample_id(recipe: Recipe, index: int) -> str:
    """``<recipe name>-<zero-padded index>``, e.g. ``demo-000042``."""
    return f"{recipe.name}-{index:0{index_width(recipe)}d}"


def index_width(recipe: Recipe) -> int:
    """Digits of the zero-padded index in ids and file names (at least 6)."""
    return max(6, len(str(recipe.num - 1)))


def part_path(root: Path, recipe: Recipe, index: int) -> Path:
    """The completion record of sample ``index`` (its presence means the sample is done)."""
    return root / PARTS_DIR / f"{index:0{index_width(recipe)}d}.json"


def sample_split(recipe: Recipe, index: int) -> str:
    """"train", "dev" or "val", drawn from the sample's own split stream (val first, then dev)."""
    split = recipe.split
    if split.val_fraction <= 0 and split.dev_fraction <= 0:
        return "train"
    draw = np.random.default_rng([recipe.seed, index, SPLIT_STREAM]).random()
    if draw < split.val_fraction:
        return "val"
    return "dev" if draw < split.val_fraction + split.dev_fraction else "train"


def _error_reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _render(recipe: Recipe, scene: Any) -> tuple[np.ndarray, Layout]:
    """The scene's (grey, one-channel) image and its layout (kept to write the scene's script without
    laying it out again)."""
    size, dpi = recipe.image.size_px, recipe.image.dpi
    laid_out = layout(scene, size, dpi)
    return engine.render_array(scene, size_px=size, dpi=dpi, laid_out=laid_out, gray=True), laid_out


def _script(recipe: Recipe, scene: Any, laid_out: Layout) -> bytes:
    return engine.emit_script(scene, size_px=recipe.image.size_px, dpi=recipe.image.dpi, laid_out=laid_out).encode()


def _judge(recipe: Recipe, hardness: dict[str, float]) -> str | None:
    """Why a negative is rejected on hardness, or None when it is in the window."""
    cfg = recipe.negatives
    if hardness["changed_fraction"] < cfg.min_changed_fraction:
        return f"invisible: changed_fraction {hardness['changed_fraction']} < {cfg.min_changed_fraction}"
    if hardness["ssim"] < cfg.min_ssim:
        return f"too_different: ssim {hardness['ssim']} < {cfg.min_ssim}"
    return None


def select_negatives(
    recipe: Recipe, diagram: Any, positive: np.ndarray, rng: np.random.Generator
) -> tuple[list[tuple[Any, np.ndarray, dict[str, float], Layout]], list[dict[str, str]]]:
    """The first K valid negatives of a diagram, distinct perturbation types first.

    Round 1 tries one candidate per applicable type (the engine's contract) in a seeded random order;
    later rounds (up to ``negatives.max_rounds``) try again to fill K with repeated types. Candidates
    are made and rendered lazily, so work stops as soon as K are kept.

    Returns:
        (kept, rejected): kept as (negative, image, hardness, layout) tuples; rejected as
        ``{"type", "reason"}`` records whose reason starts with invisible, too_different, duplicate
        or error.
    """
    cfg = recipe.negatives
    types = list(cfg.types) or None
    kept: list[tuple[Any, np.ndarray, dict[str, float], Layout]] = []
    rejected: list[dict[str, str]] = []
    seen = {hashlib.sha1(positive.tobytes()).digest()}
    # Later rounds often propose a scene already tried (the same element dropped again): its verdict
    # is known without rendering it, since the image is a function of the scene.
    tried: dict[str, str | None] = {}
    for _ in range(cfg.max_rounds):
        if len(kept) >= cfg.per_positive:
            break
        proposed = 0
        for negative in engine.iter_candidate_negatives(diagram, rng, types=types, shuffle=rng):
            if len(kept) >= cfg.per_positive:
                break
            proposed += 1
            key = json.dumps(negative.diagram.scene.to_dict(), sort_keys=True)
            if key in tried:
                rejected.append({"type": negative.type, "reason": tried[key] or DUPLICATE})
                continue
            try:
                image, laid_out = _render(recipe, negative.diagram.scene)
                hardness = image_hardness(positive, image)
            except Exception as err:  # a broken candidate costs one negative, not the sample
                tried[key] = f"error: {_error_reason(err)}"
                rejected.append({"type": negative.type, "reason": tried[key]})
                continue
            digest = hashlib.sha1(image.tobytes()).digest()
            tried[key] = reason = _judge(recipe, hardness) or (DUPLICATE if digest in seen else None)
            if reason:
                rejected.append({"type": negative.type, "reason": reason})
                continue
            seen.add(digest)
            kept.append((negative, image, hardness, laid_out))
        if not proposed:
            break  # no perturbation applies to this diagram
    return kept, rejected


def _text_negatives(caption: str, negatives: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The image negatives' captions as exact caption negatives (kind "perturbation"), deduplicated."""
    out, seen = [], {caption}
    for negative in negatives:
        if negative["caption"] not in seen:
            seen.add(negative["caption"])
            out.append({"caption": negative["caption"], "kind": "perturbation", "rules": [negative["type"]]})
    return out


def make_sample(recipe: Recipe, index: int) -> SampleResult:
    """Build sample ``index`` in memory. A sample that raises becomes a reject with its reason."""
    sid = sample_id(recipe, index)
    stem = f"{index:0{index_width(recipe)}d}"
    part: dict[str, Any] = {"index": index, "id": sid, "status": "ok", "reason": None, "shortfall": 0}
    try:
        rng = np.random.default_rng([recipe.seed, index])
        family = recipe.family_names[int(rng.choice(len(recipe.families), p=recipe.family_probabilities))]
        diagram = engine.generate_diagram(family, rng)
        positive, laid_out = _render(recipe, diagram.scene)
        files = {f"images/{stem}.png": engine.encode_png(positive),
                 f"scripts/{stem}.py": _script(recipe, diagram.scene, laid_out)}
        kept, rejected = select_negatives(recipe, diagram, positive, rng)
        symbols = recipe.captions.symbols
        negatives = []
        for j, (negative, image, hardness, laid_out) in enumerate(kept):
            image_rel, script_rel = f"images/{stem}_n{j}.png", f"scripts/{stem}_n{j}.py"
            files[image_rel] = engine.encode_png(image)
            files[script_rel] = _script(recipe, negative.diagram.scene, laid_out)
            negatives.append({
                "type": negative.type, "image": image_rel, "script": script_rel,
                "caption": style_caption(negative.diagram.caption, symbols), "facts": list(negative.diagram.facts),
                "removed": list(negative.removed), "added": list(negative.added), "detail": negative.detail,
                "hardness": hardness,
            })
    except Exception as err:  # recorded as a reject; the build goes on
        part.update(status="reject", reason=_error_reason(err), negative_rejects=[])
        return SampleResult(part)
    part["negative_rejects"] = rejected
    part["shortfall"] = recipe.negatives.per_positive - len(negatives)
    if part["shortfall"] and recipe.negatives.require_full_negatives:
        part.update(status="reject", reason=f"shortfall: {len(negatives)} of {recipe.negatives.per_positive} negatives")
        return SampleResult(part)
    caption = style_caption(diagram.caption, recipe.captions.symbols)
    part["sample"] = {
        "id": sid, "index": index, "family": family, "seed": [recipe.seed, index], "facts": list(diagram.facts),
        "image": f"images/{stem}.png", "script": f"scripts/{stem}.py", "caption": caption,
        "split": sample_split(recipe, index), "negatives": negatives,
        "text_negatives": _text_negatives(caption, negatives),
    }
    return SampleResult(part, files)


def write_sample(root: Path, recipe: Recipe, result: SampleResult) -> None:
    """Write a sample's files atomically, then its completion record (the last step, also atomic)."""
    for rel, data in result.files.items():
        atomic_write_bytes(root / rel, data)
    atomic_write_json(part_path(root, recipe, result.part["index"]), result.part)


def build_and_write(recipe: Recipe, root: str, index: int) -> tuple[int, str, int, float]:
    """Worker entry point: make and write one sample; returns (index, status, images written, CPU seconds)."""
    start = time.process_time()
    result = make_sample(recipe, index)
    write_sample(Path(root), recipe, result)
    images = sum(1 for rel in result.files if rel.endswith(".png"))
    return index, result.part["status"], images, time.process_time() - start
