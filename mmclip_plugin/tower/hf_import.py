"""``mmclip-import``: a transformers CLIPModel / SiglipModel directory becomes an MMCLIP checkpoint.

open_clip reads only its own formats (``hf-hub:`` and ``local-dir:`` hold open_clip configs), so a
tower held in transformers format (``openai/clip-vit-large-patch14-336``, a SigLIP fine-tuned by the
reference through ``SiglipModel``) is converted here: the architecture is derived from
``config.json`` (:mod:`~mmclip_plugin.tower.hf_config`), every tensor is mapped by name
(:mod:`~mmclip_plugin.tower.hf_weights`: both towers, the logit scale, SigLIP's logit bias and
attention-pool head), the tokenizer files are copied and the image processor's settings become
open_clip's ``preprocess_cfg``. The result is an ordinary MMCLIP checkpoint directory: ``mmclip-train``
starts from it (``model.name: local-dir:<dir>``), ``mmclip:<dir>`` serves it to LLaVA, and
``mmclip-export`` turns it back into transformers format.

The import checks itself: the image and text embeddings of the converted model must equal
transformers' own (``get_image_features`` / ``get_text_features`` of the directory loaded with
``from_pretrained``) within ``atol`` on a fixed batch, and the tokenizer must give transformers'
token ids; otherwise nothing is written and the error gives the largest difference.

``model.pretrained: hf:DIR`` (with ``model.name: hf``) does the same conversion in memory when a
training run starts.

CLI::

    mmclip-import --from-hf /models/clip-vit-large-patch14-336 --out runs/clip-l-336-mmclip
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmclip_plugin.config import HF_PREFIX, ModelConfig
from mmclip_plugin.model import MMCLIPModel, is_checkpoint_dir
from mmclip_plugin.tower.hf_config import (
    hf_family,
    open_clip_config_from_hf,
    preprocess_cfg_from_hf,
    read_hf_config,
)
from mmclip_plugin.tower.hf_weights import clip_rules, convert, read_hf_state, siglip_rules
from mmclip_plugin.tower.timm_vit import register_timm_names
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import check_replaceable_dir

logger = logging.getLogger(__name__)

DEFAULT_ATOL = 1e-4
# The fixed text batch of the parity check: the geometry symbols our captions use, plain words, nothing.
PARITY_CAPTIONS = (
    "In the figure, AB ∥ CD, AB ⊥ BC and ∠ABC = 90°.",
    "△ABC ≅ △DEF and ⊙O passes through A, B and C.",
    "a photo of a square",
    "",
)
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "vocab.txt")


class ParityError(InputError):
    """The converted model does not reproduce the transformers model (the message gives the differences)."""


@dataclasses.dataclass(frozen=True)
class Parity:
    """Largest absolute differences between the converted model and transformers on the fixed batch."""

    image: float
    text: float
    tokens_equal: bool

    def check(self, atol: float, source: str) -> None:
        """Raise :class:`ParityError` unless both embeddings are within ``atol`` and the tokens agree."""
        if not self.tokens_equal:
            raise ParityError(f"{source}: the imported tokenizer gives other token ids than transformers' tokenizer "
                              f"on the fixed captions {list(PARITY_CAPTIONS)}")
        worst = max(self.image, self.text)
        if worst > atol:
            raise ParityError(f"{source}: the converted model differs from transformers: largest difference of the "
                              f"image embeddings {self.image:.3e}, of the text embeddings {self.text:.3e} (> {atol:g}); "
                              f"nothing was written")


def _hf_model_class(family: str) -> Any:
    from transformers import CLIPModel, SiglipModel

    return CLIPModel if family == "clip" else SiglipModel


def _check_tokenizer_files(directory: Path) -> None:
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(f"{directory} has no tokenizer (expected one of {', '.join(TOKENIZER_FILES)}); MMCLIP trains the "
                         f"text tower and needs the tokenizer it was trained with")


def build_model_from_hf(directory: str | os.PathLike, config: ModelConfig | None = None,
                        device: str | torch.device = "cpu") -> MMCLIPModel:
    """The open_clip twin of a transformers CLIPModel / SiglipModel, as an :class:`MMCLIPModel` (not verified).

    Args:
        directory: the transformers directory (``config.json``, weights, tokenizer, ``preprocessor_config.json``).
        config: freezing and other options (``name``/``pretrained`` are set to ``hf`` / ``hf:<dir>``).
        device: where to put the model.

    Raises:
        InputError: not a CLIP/SigLIP directory, a missing or misshapen weight (naming file and key), no tokenizer.
    """
    from open_clip.model import CLIP, CustomTextCLIP
    from open_clip.tokenizer import HFTokenizer

    directory = Path(directory).expanduser().resolve()
    family, hf_config = read_hf_config(directory)
    _check_tokenizer_files(directory)
    model_cfg = open_clip_config_from_hf(family, hf_config, str(directory / "config.json"), str(directory))
    image_size = int(hf_config.vision_config.image_size)
    preprocess_cfg = preprocess_cfg_from_hf(directory, family, image_size)
    state, origin = read_hf_state(directory)
    # the scalars initialise as they were trained, so the config written with the checkpoint says so too
    for key, cfg_key in (("logit_scale", "init_logit_scale"), ("logit_bias", "init_logit_bias")):
        if key in state:
            model_cfg[cfg_key] = float(state[key].reshape(-1)[0])
    register_timm_names(model_cfg)
    kwargs = {k: v for k, v in model_cfg.items() if k != "custom_text"}
    clip: nn.Module = CustomTextCLIP(**kwargs) if model_cfg.get("custom_text") else CLIP(**kwargs)
    rules = (clip_rules if family == "clip" else siglip_rules)(
        hf_config.vision_config.num_hidden_layers, hf_config.text_config.num_hidden_layers)
    clip.load_state_dict(convert(rules, state, clip.state_dict(), to_hf=False, origin=origin), strict=True)
    text = model_cfg["text_cfg"]
    tokenizer = HFTokenizer(str(directory), context_length=text["context_length"], **text["tokenizer_kwargs"])
    config = dataclasses.replace(config or ModelConfig(name="hf", pretrained=f"{HF_PREFIX}{directory}"),
                                 name="hf", pretrained=f"{HF_PREFIX}{directory}")
    model = MMCLIPModel(clip.to(device).eval(), model_cfg, preprocess_cfg, tokenizer, config)
    model.apply_freezing()
    return model


@torch.no_grad()
def compare_with_hf(model: MMCLIPModel, directory: str | os.PathLike, family: str | None = None) -> Parity:
    """Embeddings of ``model`` against transformers' own model loaded from ``directory``, on a fixed batch.

    The batch: two images of seeded Gaussian pixels at the model's size and :data:`PARITY_CAPTIONS`
    tokenized by the model's tokenizer (whose ids are also checked against transformers' tokenizer).
    """
    from transformers import AutoTokenizer

    directory = Path(directory)
    family = family or read_hf_config(directory)[0]
    hf_model = _hf_model_class(family).from_pretrained(directory).eval()
    was_training = model.training
    model.eval()
    device = model.device
    try:
        size = model.image_size
        pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        ids = model.tokenize(list(PARITY_CAPTIONS))
        length = ids.shape[1]
        expected_ids = AutoTokenizer.from_pretrained(directory)(
            list(PARITY_CAPTIONS), padding="max_length", max_length=length, truncation=True, return_tensors="pt"
        ).input_ids
        ours_image = model.encode_image(pixels.to(device), normalize=False).float().cpu()
        ours_text = model.encode_text(ids.to(device), normalize=False).float().cpu()
        hf_image = hf_model.get_image_features(pixel_values=pixels)
        hf_text = hf_model.get_text_features(input_ids=ids)
    finally:
        model.train(was_training)
    return Parity(image=float((ours_image - hf_image).abs().max()), text=float((ours_text - hf_text).abs().max()),
                  tokens_equal=bool(torch.equal(ids, expected_ids)))


def import_hf(directory: str | os.PathLike, out: str | os.PathLike, *, verify: bool = True,
              atol: float = DEFAULT_ATOL, overwrite: bool = False) -> tuple[Path, Parity | None]:
    """Convert a transformers CLIPModel / SiglipModel directory into an MMCLIP checkpoint directory.

    Args:
        directory: the transformers directory.
        out: the checkpoint directory to write (atomically).
        verify: compare embeddings and tokens with transformers before writing (see :func:`compare_with_hf`).
        atol: the largest absolute difference allowed.
        overwrite: replace an existing ``out``.

    Returns:
        The checkpoint directory and the parity figures (None when not verified).

    Raises:
        InputError: bad input (see :func:`build_model_from_hf`), ``out`` exists, or :class:`ParityError`.
    """
    out = check_replaceable_dir(out, option="--out", what="an MMCLIP checkpoint", overwrite=overwrite,
                                is_ours=is_checkpoint_dir)
    model = build_model_from_hf(directory)
    parity = None
    if verify:
        parity = compare_with_hf(model, directory, hf_family(model.model_cfg))
        parity.check(atol, str(directory))
        logger.info("parity with transformers: image embeddings %.2e, text embeddings %.2e (max abs difference)",
                    parity.image, parity.text)
    metadata = {"imported_from": str(Path(directory).resolve()), "hf_family": hf_family(model.model_cfg),
                "parity": dataclasses.asdict(parity) if parity else None, "parity_atol": atol if parity else None}
    model.save_pretrained(out, metadata=metadata)
    return out, parity


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmclip-import",
        description="Convert a transformers CLIPModel or SiglipModel directory (both towers, logit scale/bias, "
                    "tokenizer, image processor) into an MMCLIP checkpoint directory, checked against transformers.",
        epilog="example: mmclip-import --from-hf /models/clip-vit-large-patch14-336 --out runs/clip-l-336-mmclip",
    )
    parser.add_argument("--from-hf", required=True, metavar="DIR", help="transformers model directory")
    parser.add_argument("--out", required=True, metavar="CKPT", help="MMCLIP checkpoint directory to write")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL,
                        help=f"largest allowed difference of the embeddings (default {DEFAULT_ATOL:g})")
    parser.add_argument("--no-verify", action="store_true", help="skip the comparison with transformers")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def _run(args: argparse.Namespace) -> int:
    out, parity = import_hf(args.from_hf, args.out, verify=not args.no_verify, atol=args.atol, overwrite=args.overwrite)
    figures = f"; max abs difference: image {parity.image:.2e}, text {parity.text:.2e}" if parity else " (not verified)"
    print(f"imported {args.from_hf} -> {out}{figures}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``mmclip-import --from-hf DIR --out CKPT`` (also ``python -m mmclip_plugin.tower.hf_import``)."""
    from mmgeolm_core.cli import run_cli

    return run_cli("mmclip-import", build_parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
