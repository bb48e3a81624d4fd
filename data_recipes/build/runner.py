"""`mmgeolm-data build RECIPE.yaml --out DIR`: a diagram data set with image hard negatives.

The build is resumable and deterministic: every sample is a pure function of (recipe, index) made by
``build_sample`` and marked done by a small record in ``DIR/.parts/``; a re-run of the same command
skips finished samples, and the aggregate files (samples.jsonl, the reference JSONs, the contact
sheet, manifest.json last) are rewritten from the records at the end. Output bytes never depend on
the worker count or on interruptions; wall-clock facts go to ``build_info.json`` only.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing
import os
import platform
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data_recipes.formats import dataset, reference
from mmgeolm_core import io
from data_recipes.build.manifest import build_manifest, run_text_post_pass
from data_recipes.build.sample import PARTS_DIR, build_and_write, part_path
from data_recipes.build.recipe import Recipe, load_recipe, recipe_diff
from mmgeolm_core.errors import InputError, Interrupted
from data_recipes.diagrams.render import RENDER_MODULES

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
STATE_FILE = "build.json"  # in DIR/.parts: which recipe this directory is being built for
BUILD_INFO_FILE = "build_info.json"


class BuildRefused(InputError):
    """The output directory holds something else than this recipe's build."""


@dataclass(frozen=True)
class Shard:
    """Indices ``i`` with ``i % count == index``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: expected 0 <= I < N")

    def indices(self, num: int) -> range:
        return range(self.index, num, self.count)


def parse_shard(text: str) -> Shard:
    """Parse ``I/N`` (argparse type)."""
    try:
        i, n = (int(x) for x in text.split("/"))
        return Shard(i, n)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--shard expects I/N with 0 <= I < N, got {text!r}") from err


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 (16 hex digits) of the data_recipes sources: a build is only resumed by the code that began it."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        rel = path.relative_to(package)
        if path.is_file() and "__pycache__" not in rel.parts and rel.parts[0] != "recipes" and path.suffix != ".pyc":
            digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_fingerprint(recipe: Recipe, shard: Shard) -> str:
    """sha256 (16 hex digits) of the format version, the code, the resolved recipe and the shard."""
    payload = {
        "format_version": FORMAT_VERSION, "code": code_fingerprint(), "recipe": recipe.to_dict(),
        "shard": [shard.index, shard.count],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _build_state(recipe: Recipe, shard: Shard) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION, "fingerprint": build_fingerprint(recipe, shard), "code": code_fingerprint(),
        "recipe": recipe.to_dict(), "recipe_file": recipe.source, "shard": [shard.index, shard.count],
    }


BUILD_OUTPUTS = (
    "images", "scripts", PARTS_DIR, dataset.SAMPLES_FILE, dataset.MANIFEST_FILE, dataset.IMAGE_NEGATIVES_FILE,
    dataset.TEXT_NEGATIVES_FILE, dataset.CONTACT_SHEET_FILE, BUILD_INFO_FILE,
)


def _remove_build(root: Path) -> None:
    """Delete what a build writes in ``root`` (and nothing else)."""
    for name in BUILD_OUTPUTS:
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def prepare_directory(root: Path, recipe: Recipe, shard: Shard, *, overwrite: bool = False) -> None:
    """Create DIR (or accept it for resuming); refuse a directory holding anything else.

    Args:
        overwrite: delete a build of a different recipe (or code) found in DIR and start over,
            instead of refusing. A directory that is not a build is never touched.

    Raises:
        BuildRefused: DIR holds a different recipe's build, or files that are not a build.
    """
    state = _build_state(recipe, shard)
    state_path = root / PARTS_DIR / STATE_FILE
    previous = None
    if state_path.is_file():
        previous = io.read_json(state_path)
    elif (root / dataset.MANIFEST_FILE).is_file():
        previous = io.read_json(root / dataset.MANIFEST_FILE)
    elif root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise BuildRefused(f"{root} exists and is not an empty directory nor a `mmgeolm-data build` output; choose another --out")
    if previous is not None and previous.get("fingerprint") != state["fingerprint"] and overwrite:
        _remove_build(root)
        previous = None
    if previous is not None and previous.get("fingerprint") != state["fingerprint"]:
        old = previous.get("recipe", {})
        differences = recipe_diff(old, state["recipe"])
        if previous.get("shard") != state["shard"]:
            differences.append(f"shard: {previous.get('shard')} != {state['shard']}")
        if previous.get("code") != state["code"]:
            differences.append(f"data_recipes code: {previous.get('code')} != {state['code']} (the code changed)")
        raise BuildRefused(
            f"{root} holds the build of recipe {old.get('name')!r} from {previous.get('recipe_file', '?')} "
            f"(fingerprint {previous.get('fingerprint')}), not of recipe {recipe.name!r} from {recipe.source} "
            f"(fingerprint {state['fingerprint']}); they differ in: {'; '.join(differences) or 'format version'}. "
            "Use another --out, or --overwrite to delete that build and start over."
        )
    for sub in ("images", "scripts", PARTS_DIR):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if previous is None or not state_path.is_file():
        io.atomic_write_json(state_path, state)


def pending_indices(root: Path, recipe: Recipe, shard: Shard) -> list[int]:
    """The shard's indices without a completion record."""
    return [i for i in shard.indices(recipe.num) if not part_path(root, recipe, i).is_file()]


def _worker_context() -> multiprocessing.context.BaseContext:
    """forkserver where available, else spawn: workers never inherit the parent's threads, locks or
    matplotlib state. The forkserver imports the engine and the renderer's matplotlib modules once
    and forks every worker from it, so a worker starts in milliseconds instead of re-importing numpy
    and matplotlib; each worker then keeps its own cached figure."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["data_recipes.build.sample", *RENDER_MODULES])
        return context
    return multiprocessing.get_context("spawn")


def _ignore_interrupts() -> None:
    """Pool workers leave Ctrl-C to the parent, which stops the pool (no traceback from every worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_samples(root: Path, recipe: Recipe, indices: Sequence[int], workers: int, total: int) -> tuple[int, float]:
    """Make and write the given samples with ``workers`` processes; returns (images written, CPU seconds).

    Raises:
        Interrupted: Ctrl-C; every sample finished so far has its record and is skipped by a re-run.
    """
    work = partial(build_and_write, recipe, str(root))
    images, cpu, built = 0, 0.0, total - len(indices)
    with tqdm(total=total, initial=total - len(indices), desc=f"build {recipe.name}", unit="sample", disable=None) as bar:
        try:
            if workers <= 1 or len(indices) <= 1:
                results = map(work, indices)
                for _, _, n, seconds in results:
                    images, cpu, built = images + n, cpu + seconds, built + 1
                    bar.update()
                return images, cpu
            with _worker_context().Pool(min(workers, len(indices)), initializer=_ignore_interrupts) as pool:
                for _, _, n, seconds in pool.imap_unordered(work, indices, chunksize=1):
                    images, cpu, built = images + n, cpu + seconds, built + 1
                    bar.update()
        except KeyboardInterrupt:
            raise Interrupted(f"{built} of {total} samples built in {root}; run the same command again to resume "
                              f"(finished samples are skipped)") from None
    return images, cpu


def _remove_temporaries(root: Path) -> None:
    # Left by a killed build: temporary files never renamed to their final name.
    for sub in (root, root / "images", root / "scripts", root / PARTS_DIR):
        for tmp in sub.glob(f".*{io.TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)


def finalize(root: Path, recipe: Recipe, shard: Shard, *, relative_paths: bool = False) -> dict[str, Any]:
    """Write the aggregate files from the completion records; returns the manifest."""
    from data_recipes.build.contact_sheet import draw_contact_sheet

    parts = [io.read_json(part_path(root, recipe, i)) for i in shard.indices(recipe.num)]
    samples = [p["sample"] for p in parts if p["status"] == "ok"]
    text_report = run_text_post_pass(recipe, samples)
    dataset.write_samples(root, samples)
    for name, entries in (
        (dataset.IMAGE_NEGATIVES_FILE, reference.reference_image_negatives(samples, root, root, relative=relative_paths)),
        (dataset.TEXT_NEGATIVES_FILE, reference.reference_text_negatives(samples, root, root, relative=relative_paths)),
    ):
        reference.write_reference_json(root / name, entries)
    draw_contact_sheet(root, samples, root / dataset.CONTACT_SHEET_FILE)
    manifest = build_manifest(recipe, parts, samples, text_report)
    manifest = {
        **_build_state(recipe, shard), **manifest,
        "reference_paths": "relative" if relative_paths else "absolute",
    }
    if recipe.check_tokenizer_path is not None:
        manifest["tokenization_check"] = check_tokenization(recipe, samples).to_dict()
    _remove_temporaries(root)
    io.atomic_write_json(root / dataset.MANIFEST_FILE, manifest)
    return manifest


def check_tokenization(recipe: Recipe, samples: list[dict[str, Any]]) -> Any:
    """Report hard negatives that tokenize like their positive with the recipe's ``captions.check_tokenizer``."""
    from data_recipes.text_negatives.token_check import find_token_collisions, items_from_samples, load_tokenizer

    captions = recipe.captions
    path = recipe.check_tokenizer_path
    tokenizer = load_tokenizer(path, captions.check_clean, captions.check_context_length)
    report = find_token_collisions(items_from_samples(samples), tokenizer, tokenizer=str(path),
                                   encode_uncut=tokenizer.uncut)
    (logger.warning if report.collisions else logger.info)("%s", report.summary())
    return report


def build_dataset(
    recipe: Recipe, out: str | Path, *, workers: int = 1, shard: Shard = Shard(), relative_paths: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Build (or resume) ``recipe`` into ``out``; returns the manifest.

    ``overwrite`` deletes a different build found in ``out`` instead of refusing (see prepare_directory).

    Raises:
        BuildRefused: ``out`` holds a different build or unrelated files.
    """
    root = Path(out)
    start = time.time()
    prepare_directory(root, recipe, shard, overwrite=overwrite)
    total = len(shard.indices(recipe.num))
    indices = pending_indices(root, recipe, shard)
    images, sample_cpu = run_samples(root, recipe, indices, workers, total)
    manifest = finalize(root, recipe, shard, relative_paths=relative_paths)
    io.atomic_write_json(root / BUILD_INFO_FILE, {
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": round(time.time() - start, 3),
        "workers": workers, "samples_built_this_run": len(indices), "images_written_this_run": images,
        "resumed_from": total - len(indices), "sample_cpu_seconds": round(sample_cpu, 3),
        "host": platform.node(), "python": sys.version.split()[0],
    })
    return manifest


def _copy_sample(source: Path, root: Path, part: dict[str, Any]) -> None:
    sample = part.get("sample")
    if sample is not None:
        for rel in [sample["image"], sample["script"], *(x for n in sample["negatives"] for x in (n["image"], n["script"]))]:
            io.atomic_write_bytes(root / rel, (source / rel).read_bytes())


def merge_shards(
    recipe: Recipe, shard_dirs: Sequence[str | Path], out: str | Path, *, relative_paths: bool = False
) -> dict[str, Any]:
    """Merge finished shard builds of ``recipe`` (all I of one N) into ``out``; returns the manifest.

    The result is byte-identical to an unsharded build of the recipe (the caption post-pass runs
    again over all samples, so retrieval negatives are drawn from the whole set).

    Raises:
        BuildRefused: a directory is not a finished shard of this recipe, or the shards do not cover 0..N-1.
    """
    root = Path(out)
    shards: dict[int, tuple[Path, Shard]] = {}
    for directory in map(Path, shard_dirs):
        state_path = directory / PARTS_DIR / STATE_FILE
        state = io.read_json(state_path) if state_path.is_file() else {}
        shard = Shard(*state.get("shard", [0, 1]))
        if state.get("fingerprint") != build_fingerprint(recipe, shard):
            raise BuildRefused(f"{directory} is not a shard build of recipe {recipe.name!r} from {recipe.source} "
                               f"(fingerprint {state.get('fingerprint')}, expected {build_fingerprint(recipe, shard)})")
        shards[shard.index] = (directory, shard)
    counts = {shard.count for _, shard in shards.values()}
    if len(counts) != 1 or sorted(shards) != list(range(counts.pop())):
        raise BuildRefused(f"shards {[f'{s.index}/{s.count}' for _, s in shards.values()]} do not cover 0..N-1 of one N")
    prepare_directory(root, recipe, Shard())
    for directory, shard in shards.values():
        for index in shard.indices(recipe.num):
            part_file = part_path(directory, recipe, index)
            if not part_file.is_file():
                raise BuildRefused(f"{directory} is unfinished: sample {index} has no record; re-run its build first")
            part = io.read_json(part_file)
            _copy_sample(directory, root, part)
            io.atomic_write_json(part_path(root, recipe, index), part)
    return finalize(root, recipe, Shard(), relative_paths=relative_paths)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmgeolm-data build``."""
    parser.add_argument("recipe", help="recipe YAML, or a shipped recipe's short name (demo, full, tiny; see docs/data.md)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (created; resumed when it holds this build)")
    parser.add_argument("--num", type=int, default=None, help="number of positives (overrides the recipe)")
    parser.add_argument("--seed", type=int, default=None, help="seed (overrides the recipe)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (output does not depend on it)")
    parser.add_argument("--shard", type=parse_shard, default=Shard(), metavar="I/N",
                        help="build only indices i with i %% N == I, into its own --out")
    parser.add_argument("--relative-paths", action="store_true",
                        help="image paths in the reference JSON files relative to the file instead of absolute")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete a build of a different recipe or code found in --out and start over")
    parser.add_argument("--merge", nargs="+", type=Path, default=None, metavar="SHARD_DIR",
                        help="merge finished --shard builds of this recipe into --out instead of building")


def run_cli(args: argparse.Namespace) -> int:
    """Run ``mmgeolm-data build``: 0 on success; a bad recipe or a refused directory raises (exit 2)."""
    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    io.check_output_dir(args.out)
    recipe = load_recipe(args.recipe)
    if args.num is not None or args.seed is not None:
        recipe = recipe.with_overrides(num=args.num, seed=args.seed)
    if args.merge:
        manifest = merge_shards(recipe, args.merge, args.out, relative_paths=args.relative_paths)
    else:
        manifest = build_dataset(recipe, args.out, workers=args.workers, shard=args.shard,
                                 relative_paths=args.relative_paths, overwrite=args.overwrite)
    counts = manifest["counts"]
    print(
        f"built {counts['accepted']} of {counts['requested']} samples ({counts['rejected']} rejected, "
        f"{counts['negatives']} image negatives, {manifest['shortfalls']['samples']} samples short of "
        f"{recipe.negatives.per_positive}) in {os.fspath(args.out)}"
    )
    return 0
