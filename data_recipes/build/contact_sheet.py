"""Contact sheet: rows of a positive beside its image negatives, each labelled with its perturbation.

Rows are chosen to show as many families as possible (the first sample of each family, in index
order, then the next samples). Under each negative: its perturbation type in bold and, when it
fits, the fact it removed (−) and the fact it added (+). Composed with Pillow (tens of
milliseconds, not the seconds a matplotlib grid of subplots takes) using matplotlib's bundled
DejaVu fonts, and written atomically.
"""
from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from matplotlib import font_manager
from PIL import Image, ImageDraw, ImageFont

from mmgeolm_core.io import atomic_write_bytes

TILE = 224  # every image is shown at this size
PAD = 8
TEXT_LINES = 5
FONT_SIZE = 12
LINE_HEIGHT = 15
POSITIVE_COLOUR = (40, 150, 60)
NEGATIVE_COLOUR = (200, 50, 40)


@lru_cache(maxsize=4)
def _font(bold: bool) -> ImageFont.FreeTypeFont:
    properties = font_manager.FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal")
    return ImageFont.truetype(font_manager.findfont(properties, fallback_to_default=True), FONT_SIZE)


def choose_rows(samples: Sequence[dict[str, Any]], rows: int) -> list[dict[str, Any]]:
    """Up to ``rows`` samples with negatives: one per family first (index order), then the rest."""
    with_negatives = [s for s in samples if s["negatives"]]
    chosen, families = [], set()
    for sample in with_negatives:
        if sample["family"] not in families:
            families.add(sample["family"])
            chosen.append(sample)
    chosen = chosen[:rows]
    picked = {s["id"] for s in chosen}
    chosen += [s for s in with_negatives if s["id"] not in picked][: rows - len(chosen)]
    return sorted(chosen, key=lambda s: s["index"])


def _wrap(text: str, width: int, lines: int) -> list[str]:
    wrapped = textwrap.wrap(text, width)
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][: width - 1] + "…"
    return wrapped


def _label(negative: dict[str, Any], width: int) -> list[str]:
    """Lines under a negative: its type, then the removed and added facts (as many as fit)."""
    lines = []
    if negative["removed"]:
        lines += _wrap("− " + "; ".join(negative["removed"]), width, 2)
    if negative["added"]:
        lines += _wrap("+ " + "; ".join(negative["added"]), width, 2)
    if not lines and negative.get("detail"):
        lines = _wrap(negative["detail"], width, 2)
    return lines[: TEXT_LINES - 1]


def _cell(root: Path, rel: str, title: str, lines: list[str], colour: tuple[int, int, int]) -> Image.Image:
    cell = Image.new("RGB", (TILE + 2 * PAD, TILE + 2 * PAD + TEXT_LINES * LINE_HEIGHT), "white")
    with Image.open(root / rel) as image:
        tile = image.convert("RGB").resize((TILE, TILE), Image.Resampling.LANCZOS)
    cell.paste(tile, (PAD, PAD))
    draw = ImageDraw.Draw(cell)
    draw.rectangle([PAD - 3, PAD - 3, PAD + TILE + 2, PAD + TILE + 2], outline=colour, width=3)
    y = PAD + TILE + 4
    draw.text((PAD, y), title, fill=colour, font=_font(True))
    for k, line in enumerate(lines):
        draw.text((PAD, y + (k + 1) * LINE_HEIGHT), line, fill=(30, 30, 30), font=_font(False))
    return cell


def render_contact_sheet(root: Path, samples: Sequence[dict[str, Any]], rows: int = 8, max_negatives: int = 6) -> bytes:
    """PNG bytes of the contact sheet of ``samples`` (records of samples.jsonl, paths under ``root``)."""
    chosen = choose_rows(samples, rows)
    columns = 1 + min(max_negatives, max((len(s["negatives"]) for s in chosen), default=0))
    width = TILE // 7  # characters per label line at FONT_SIZE
    cell_w, cell_h = TILE + 2 * PAD, TILE + 2 * PAD + TEXT_LINES * LINE_HEIGHT
    sheet = Image.new("RGB", (cell_w * columns, cell_h * max(1, len(chosen))), "white")
    if not chosen:
        ImageDraw.Draw(sheet).text((PAD, PAD), "no sample with image negatives", fill="black", font=_font(False))
    for r, sample in enumerate(chosen):
        title = f"{sample['family']} (positive)"
        cells = [_cell(root, sample["image"], title, _wrap(sample["id"], width, 1), POSITIVE_COLOUR)]
        cells += [
            _cell(root, n["image"], n["type"], _label(n, width), NEGATIVE_COLOUR)
            for n in sample["negatives"][: columns - 1]
        ]
        for c, cell in enumerate(cells):
            sheet.paste(cell, (c * cell_w, r * cell_h))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def draw_contact_sheet(root: str | Path, samples: Sequence[dict[str, Any]], out: str | Path, rows: int = 8) -> Path:
    """Render the contact sheet and write it atomically to ``out``."""
    out = Path(out)
    atomic_write_bytes(out, render_contact_sheet(Path(root), samples, rows=rows))
    return out
