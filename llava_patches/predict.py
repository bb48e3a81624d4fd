"""``python -m llava_patches.predict``: ask a LLaVA(+MMCLIP) checkpoint a question about one image.

Built on upstream's generation path (``conv_templates``, ``tokenizer_image_token``, ``process_images``,
``model.generate``), like ``llava/eval/run_llava.py``, but loading through
:func:`llava_patches.loader.load_pretrained_model` (``mmclip:`` towers, CPU in float32).

Example::

    python -m llava_patches.predict --model-path runs/llava-geo --image diagram.png \
        --query "Which two lines are parallel?" --conv-mode v1 --max-new-tokens 64
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from llava_patches.compat import get_upstream_symbol
from llava_patches.loader import load_pretrained_model


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as RGB (any Pillow mode is converted, like upstream's data path).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: Pillow cannot read it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as exc:
        raise ValueError(f"{path} is not an image Pillow can read: {exc}") from exc


def build_prompt(query: str, conv_mode: str, mm_use_im_start_end: bool) -> str:
    """The conversation prompt upstream's template ``conv_mode`` makes for one image and ``query``.

    Raises:
        ValueError: ``conv_mode`` is not one of upstream's templates (the known ones are listed).
    """
    conv_templates = get_upstream_symbol("llava.conversation", "conv_templates")
    if conv_mode not in conv_templates:
        raise ValueError(f"unknown --conv-mode {conv_mode!r}; known: {', '.join(sorted(conv_templates))}")
    image_token = get_upstream_symbol("llava.constants", "DEFAULT_IMAGE_TOKEN")
    if mm_use_im_start_end:
        start, end = (get_upstream_symbol("llava.constants", n) for n in ("DEFAULT_IM_START_TOKEN", "DEFAULT_IM_END_TOKEN"))
        image_token = start + image_token + end
    placeholder = get_upstream_symbol("llava.constants", "IMAGE_PLACEHOLDER")
    if placeholder in query:
        query = query.replace(placeholder, image_token)
    else:
        query = f"{image_token}\n{query}"
    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], query)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


@torch.inference_mode()
def answer(
    tokenizer: Any,
    model: Any,
    image_processor: Any,
    image: Image.Image,
    query: str,
    conv_mode: str = "v1",
    max_new_tokens: int = 128,
    temperature: float = 0.0,
) -> str:
    """Generate the model's answer to ``query`` about ``image`` (greedy when ``temperature`` is 0)."""
    tokenizer_image_token = get_upstream_symbol("llava.mm_utils", "tokenizer_image_token")
    process_images = get_upstream_symbol("llava.mm_utils", "process_images")
    image_token_index = get_upstream_symbol("llava.constants", "IMAGE_TOKEN_INDEX")
    prompt = build_prompt(query, conv_mode, getattr(model.config, "mm_use_im_start_end", False))
    images = process_images([image], image_processor, model.config).to(model.device, dtype=model.dtype)
    input_ids = tokenizer_image_token(prompt, tokenizer, image_token_index, return_tensors="pt").unsqueeze(0)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    output_ids = model.generate(
        input_ids.to(model.device),
        images=images,
        image_sizes=[image.size],
        max_new_tokens=max_new_tokens,
        use_cache=True,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        **sampling,
    )
    return tokenizer.batch_decode(output_ids, skip_special_tokens=True)[0].strip()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava_patches.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", required=True, help="LLaVA checkpoint directory")
    parser.add_argument("--model-base", default=None, help="base LLM for LoRA / projector-only checkpoints")
    parser.add_argument("--image", required=True, help="image file")
    parser.add_argument("--query", required=True, help="question about the image")
    parser.add_argument("--conv-mode", default="v1", help="upstream conversation template (default: v1)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy decoding")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (temperature > 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, load the model, print the answer."""
    args = _parser().parse_args(argv)
    if args.max_new_tokens < 1:
        raise SystemExit(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise SystemExit(f"--temperature must be >= 0, got {args.temperature}")
    torch.manual_seed(args.seed)
    image = load_image(args.image)
    tokenizer, model, image_processor, _ = load_pretrained_model(args.model_path, args.model_base, device=args.device)
    print(answer(tokenizer, model, image_processor, image, args.query, args.conv_mode, args.max_new_tokens, args.temperature))


if __name__ == "__main__":
    main()
