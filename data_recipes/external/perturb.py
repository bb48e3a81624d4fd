"""Image hard negatives from any matplotlib script: edit its syntax tree, render in the sandbox, filter.

``mmgeolm-data perturb-script SCRIPT.py --num K --out DIR [--caption TEXT]`` renders the script
(the positive) and K negatives made by the registered edits of :mod:`data_recipes.external.edits`.
A candidate is discarded, with its reason, when it fails to render, renders identically to the
positive, changes the image size, or differs too much (changed-pixel fraction above
``max_changed_fraction`` or SSIM below ``min_ssim``). Fewer than K survivors is reported (exit
status 1), never padded; what was possible is still written. Same script and seed, same output.

Output: ``positive.py``, ``positive.png``, ``negative_<i>.py``, ``negative_<i>.png``, ``manifest.json``.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data_recipes.diagrams.hardness import image_hardness
from data_recipes.external.edits import ScriptEdit, list_script_edits, propose_edits
from data_recipes.external.sandbox import Sandbox
from data_recipes.text_negatives.rules import object_kind, same_object
from data_recipes.text_negatives.rules.grammar import Label
from mmgeolm_core.config import ConfigError, check, check_number
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_output_dir,
    read_text,
)

MANIFEST = "manifest.json"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PerturbConfig:
    """How many negatives, and which ones are kept.

    Attributes:
        num: negatives wanted (K).
        seed: seeds the choice and size of the edits.
        max_changed_fraction: discard negatives changing more pixels than this.
        min_ssim: discard negatives less similar than this to the positive.
        max_attempts: candidates rendered at most (default ``4 * num + 8``).
        edit_types: edit names to use (default: all registered).
    """

    num: int
    seed: int = 0
    max_changed_fraction: float = 0.25
    min_ssim: float = 0.6
    max_attempts: int | None = None
    edit_types: tuple[str, ...] = field(default_factory=lambda: tuple(list_script_edits()))

    def __post_init__(self) -> None:
        check_number(self.num, "num", ge=1, integer=True)
        check_number(self.max_changed_fraction, "max_changed_fraction", gt=0, le=1)
        check_number(self.min_ssim, "min_ssim", ge=-1, lt=1)
        unknown = [t for t in self.edit_types if t not in list_script_edits()]
        check(not unknown and bool(self.edit_types), "edit_types", f"edit types among {list_script_edits()}",
              unknown or list(self.edit_types))

    @property
    def attempts(self) -> int:
        return self.max_attempts if self.max_attempts is not None else 4 * self.num + 8


# --------------------------------------------------------------------------- captions

VERTEX_TOKEN = re.compile(r"(?<![A-Za-z])[A-Z]{1,6}(?:'|′)?(?![a-z])")


def swap_caption_letters(caption: str, a: str, b: str) -> tuple[str | None, str]:
    """Exchange vertex letters ``a`` and ``b`` in the caption's vertex names.

    Returns the new caption, or None and the reason: neither letter occurs, or every changed name
    still denotes the same object (segment ``AB`` -> ``BA``, triangle ``ABC`` -> ``BAC``, but not angle
    ``ABC`` -> ``BAC``: the caption rules' own test, :func:`~data_recipes.text_negatives.rules.same_object`).
    A capital ``A`` starting a sentence and followed by a lower-case word is an article.
    """
    table = str.maketrans({a: b, b: a})
    changes: list[tuple[str, str]] = []

    def repl(match: re.Match) -> str:
        token = match.group(0)
        before = caption[: match.start()].rstrip()
        if token == "A" and (not before or before[-1] in ".!?:") and re.match(r"\s+[a-z]", caption[match.end():]):
            return token
        new = token.translate(table)
        if new != token:
            name = token.rstrip("'′")
            kind = object_kind(caption, Label(name, match.start(), match.start() + len(name)))
            changes.append((token, new, same_object(kind, name, new.rstrip("'′"))))
        return new

    result = VERTEX_TOKEN.sub(repl, caption)
    if not changes:
        return None, f"caption does not name {a} or {b}"
    if all(same for _, _, same in changes):
        return None, f"swapping {a} and {b} only renames the same objects ({', '.join(o for o, _, _ in changes)})"
    return result, ""


def replace_caption_number(caption: str, old: str, new: str) -> str | None:
    """Replace the first standalone occurrence of the number ``old`` by ``new``; None if absent."""
    pattern = re.compile(rf"(?<![\w.]){re.escape(old)}(?![\d.])")
    return pattern.sub(new, caption, count=1) if pattern.search(caption) else None


def caption_negative(edit: ScriptEdit, caption: str | None) -> tuple[str | None, str]:
    """The caption made false by the same edit, and a note saying why there is none."""
    if caption is None:
        return None, "no caption given"
    if edit.caption_swap:
        return swap_caption_letters(caption, *edit.caption_swap)
    if edit.caption_number:
        new = replace_caption_number(caption, *edit.caption_number)
        return new, "" if new else f"caption does not contain the number {edit.caption_number[0]}"
    return None, f"{edit.type} does not change the caption"


# --------------------------------------------------------------------------- rendering and filtering


def decode_png(data: bytes) -> np.ndarray:
    """An untrusted PNG as an (H, W, 3) uint8 array (Pillow's decompression-bomb guard applies)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _order_candidates(candidates: dict[str, list[ScriptEdit]], rng: np.random.Generator) -> list[ScriptEdit]:
    """Round-robin over the edit types (in a seeded order), each type's candidates shuffled."""
    queues = []
    for name in rng.permutation(sorted(candidates)):
        items = list(candidates[str(name)])
        queues.append([items[i] for i in rng.permutation(len(items))])
    ordered = []
    while any(queues):
        for q in queues:
            if q:
                ordered.append(q.pop(0))
    return ordered


@dataclass
class PerturbResult:
    """What :func:`perturb_script` wrote (also serialised as manifest.json).

    ``status`` is the sandbox status of the script: that of the positive's render, or ``forbidden``
    when any render (positive or negative) attempted a forbidden operation; a forbidden script is
    never ``ok``.
    """

    ok: bool
    status: str
    message: str
    positive: dict[str, Any] | None
    negatives: list[dict[str, Any]]
    discarded: list[dict[str, Any]]


def _check(edit: ScriptEdit, image: np.ndarray | None, reason: str, positive: np.ndarray,
           accepted: dict[str, int], config: PerturbConfig) -> tuple[str, dict[str, float] | None]:
    """Empty reason and the hardness when the rendered candidate is kept."""
    if image is None:
        return reason, None
    if image.shape != positive.shape:
        return f"image size {image.shape[:2]} differs from the positive's {positive.shape[:2]}", None
    digest = hashlib.sha256(image.tobytes()).hexdigest()
    if digest in accepted:
        return f"renders identically to negative {accepted[digest]}", None
    hardness = image_hardness(positive, image)
    if np.array_equal(image, positive) or hardness["changed_fraction"] == 0:
        return "renders identically to the positive", None
    if hardness["changed_fraction"] > config.max_changed_fraction:
        return f"differs too much: changed fraction {hardness['changed_fraction']} > {config.max_changed_fraction}", None
    if hardness["ssim"] < config.min_ssim:
        return f"differs too much: SSIM {hardness['ssim']} < {config.min_ssim}", None
    return "", hardness


def perturb_script(script: str, out_dir: str | Path, config: PerturbConfig, sandbox: Sandbox,
                   caption: str | None = None, source: str | None = None) -> PerturbResult:
    """Render ``script`` and up to ``config.num`` negatives into ``out_dir``; write manifest.json.

    Args:
        script: the positive's source.
        out_dir: created if needed.
        config: number of negatives, seed and filters.
        sandbox: a started :class:`Sandbox` (shared across a batch).
        caption: the positive caption; label swaps and number changes then get caption negatives.
        source: where the script came from, recorded in the manifest.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    manifest: dict[str, Any] = {
        "source": source, "caption": caption, "config": {**asdict(config), "edit_types": list(config.edit_types)},
        "positive": None, "negatives": [], "discarded": [],
    }
    atomic_write_text(out / "positive.py", script)
    try:
        candidates = _order_candidates(propose_edits(script, rng, list(config.edit_types)), rng)
    except SyntaxError as exc:
        return _finish(out, manifest, False, f"the script does not parse: {exc.msg} (line {exc.lineno})", "error")
    result = sandbox.run(script)
    if not result.ok:
        return _finish(out, manifest, False, f"the positive failed to render: {result.status}: {result.message}",
                       result.status)
    try:
        positive = decode_png(result.image_png)
    except (OSError, ValueError) as exc:
        return _finish(out, manifest, False, f"the positive's PNG does not decode: {exc}", "error")
    atomic_write_bytes(out / "positive.png", result.image_png)
    manifest["positive"] = {"script": "positive.py", "image": "positive.png", "size": list(positive.shape[:2])}
    accepted: dict[str, int] = {hashlib.sha256(positive.tobytes()).hexdigest(): -1}
    tried = 0
    while len(manifest["negatives"]) < config.num and tried < min(config.attempts, len(candidates)):
        chunk = candidates[tried: min(tried + 2 * (config.num - len(manifest["negatives"])),
                                      config.attempts, len(candidates))]
        tried += len(chunk)
        for edit, rendered in zip(chunk, sandbox.map([e.script for e in chunk])):
            if rendered.status == "forbidden":
                # The script does something forbidden on another path: the whole item is rejected.
                return _finish(out, manifest, False, f"a negative's script was stopped: forbidden: "
                               f"{rendered.message} ({edit.type}: {edit.detail})", "forbidden")
            if len(manifest["negatives"]) >= config.num:
                break
            _consider(edit, rendered, positive, accepted, config, caption, out, manifest)
    n, k = len(manifest["negatives"]), config.num
    if n < k:
        message = (f"only {n} of {k} negatives possible: {len(candidates)} candidate edits, {tried} rendered, "
                   f"{len(manifest['discarded'])} discarded (see manifest.json 'discarded')")
        return _finish(out, manifest, False, message)
    return _finish(out, manifest, True, f"{k} negatives written")


def _consider(edit, rendered, positive, accepted, config, caption, out: Path, manifest: dict) -> None:
    image, reason = None, ""
    if not rendered.ok:
        reason = f"render failed: {rendered.status}: {rendered.message[:300]}"
    else:
        try:
            image = decode_png(rendered.image_png)
        except (OSError, ValueError) as exc:
            reason = f"PNG does not decode: {exc}"
    reason, hardness = _check(edit, image, reason, positive, accepted, config)
    if reason:
        manifest["discarded"].append({"type": edit.type, "detail": edit.detail, "reason": reason,
                                      "status": rendered.status})
        return
    i = len(manifest["negatives"])
    accepted[hashlib.sha256(image.tobytes()).hexdigest()] = i
    atomic_write_text(out / f"negative_{i}.py", edit.script)
    atomic_write_bytes(out / f"negative_{i}.png", rendered.image_png)
    negative_caption, note = caption_negative(edit, caption)
    manifest["negatives"].append({
        "index": i, "type": edit.type, "detail": edit.detail, "script": f"negative_{i}.py",
        "image": f"negative_{i}.png", "hardness": hardness, "caption": negative_caption, "caption_note": note,
    })


def _finish(out: Path, manifest: dict, ok: bool, message: str, status: str = "ok") -> PerturbResult:
    manifest.update(ok=ok, status=status, message=message, num_written=len(manifest["negatives"]))
    atomic_write_json(out / MANIFEST, manifest)
    return PerturbResult(ok, status, message, manifest["positive"], manifest["negatives"], manifest["discarded"])


# --------------------------------------------------------------------------- CLI


def add_sandbox_arguments(parser: argparse.ArgumentParser) -> None:
    """Limits shared by perturb-script, perturb-batch and import."""
    group = parser.add_argument_group("sandbox")
    group.add_argument("--timeout", type=float, default=20.0, help="wall-clock seconds per script (default 20)")
    group.add_argument("--memory-mb", type=int, default=1024, help="memory a script may use (default 1024)")
    group.add_argument("--cpu-seconds", type=float, default=20.0, help="CPU seconds per script (default 20)")
    group.add_argument("--max-file-mb", type=float, default=32.0, help="largest file a script may write (default 32)")
    add_isolation_argument(group)


def add_isolation_argument(parser) -> None:
    """``--no-isolation``, shared with ``import --pairs-dir``."""
    parser.add_argument("--no-isolation", action="store_true",
                        help="run scripts without bubblewrap's kernel isolation (only where bwrap cannot run; "
                             "a hostile script can then read and write your files)")


NO_ISOLATION_WARNING = (
    "--no-isolation: scripts run WITHOUT kernel isolation (no bubblewrap): process limits and an "
    "audit hook only, which a hostile script can get around to read or write your files, reach local "
    "sockets or leave processes behind. Use it only for scripts you trust."
)


def build_sandbox(args: argparse.Namespace, workers: int, command: str = "perturb-script") -> Sandbox:
    """The sandbox the command line asked for; prints the ``--no-isolation`` warning (once per batch)."""
    if args.no_isolation:
        logger.warning("%s: %s", command, NO_ISOLATION_WARNING)
    return Sandbox(workers=workers, timeout=args.timeout, memory_mb=args.memory_mb,
                   cpu_seconds=args.cpu_seconds, max_file_mb=args.max_file_mb, isolation=not args.no_isolation)


def add_perturb_arguments(parser: argparse.ArgumentParser) -> None:
    """Negative-selection options shared by perturb-script and perturb-batch."""
    parser.add_argument("--num", type=int, required=True, help="negatives per script (K)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the edits (default 0)")
    parser.add_argument("--max-changed", type=float, default=0.25, help="discard negatives changing more pixels (default 0.25)")
    parser.add_argument("--min-ssim", type=float, default=0.6, help="discard negatives with a lower SSIM (default 0.6)")
    parser.add_argument("--edits", default=",".join(list_script_edits()),
                        help=f"comma-separated edit types (default all: {','.join(list_script_edits())})")


_OPTIONS = {"num": "--num", "max_changed_fraction": "--max-changed", "min_ssim": "--min-ssim", "edit_types": "--edits"}


def build_perturb_config(args: argparse.Namespace) -> PerturbConfig:
    """The settings of the command line.

    Raises:
        InputError: a bad value, naming its option (``--min-ssim: expected a number >= -1 and < 1, got nan``).
    """
    try:
        return PerturbConfig(num=args.num, seed=args.seed, max_changed_fraction=args.max_changed,
                             min_ssim=args.min_ssim, edit_types=tuple(e for e in args.edits.split(",") if e))
    except ConfigError as exc:
        raise InputError(f"{_OPTIONS.get(exc.key or '', exc.key)}: {exc.reason}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("script", type=Path, help="a matplotlib script (untrusted: it runs in the sandbox)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--caption", default=None, help="the positive caption (enables caption negatives)")
    add_perturb_arguments(parser)
    add_sandbox_arguments(parser)
    parser.add_argument("--workers", type=int, default=2, help="sandbox workers (default 2)")


def run_cli(args: argparse.Namespace) -> int:
    """``mmgeolm-data perturb-script``: 0 when K negatives were written, 1 when fewer were possible; bad input
    (an unreadable script, bad settings, no kernel isolation) raises and exits 2 on the one error path."""
    check_output_dir(args.out)
    script = read_text(args.script)
    config = build_perturb_config(args)
    sandbox = build_sandbox(args, args.workers)
    sandbox.start()
    with sandbox:
        result = perturb_script(script, args.out, config, sandbox, caption=args.caption, source=str(args.script))
    if not result.ok:
        logger.warning("%s: %s -> %s", args.script, result.message, args.out / MANIFEST)
        return 1
    print(f"{args.script}: {result.message} -> {args.out / MANIFEST}")
    return 0
