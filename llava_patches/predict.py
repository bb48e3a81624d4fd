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
from mmgeolm_core.cli import run_cli
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import FormatError, check_model_path


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as RGB (any Pillow mode is converted, like upstream's data path).

    Raises:
        FileNotFoundError: the file does not exist.
        FormatError: Pillow cannot read it (a ``ValueError``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as exc:  # a 0-byte, truncated or non-image file
        raise FormatError(path, f"not an image Pillow can read: {exc}") from None


def default_conv_mode(model: Any) -> str:
    """The template a checkpoint was most likely trained with: ``qwen_2`` for ``llava_qwen``, else ``v1``."""
    from llava_patches.qwen2 import QWEN2_MODEL_TYPES

    # a config built from a Qwen2 checkpoint keeps "qwen2" in memory and is saved as "llava_qwen"
    return "qwen_2" if getattr(model.config, "model_type", None) in QWEN2_MODEL_TYPES else "v1"


def build_prompt(query: str, conv_mode: str, mm_use_im_start_end: bool) -> str:
    """The conversation prompt template ``conv_mode`` makes for one image and ``query``.

    Raises:
        ValueError: ``conv_mode`` is neither one of upstream's templates nor ours (the known ones are listed).
    """
    from llava_patches.qwen_chat import get_template

    conv = get_template(conv_mode)
    image_token = get_upstream_symbol("llava.constants", "DEFAULT_IMAGE_TOKEN")
    if mm_use_im_start_end:
        start, end = (get_upstream_symbol("llava.constants", n) for n in ("DEFAULT_IM_START_TOKEN", "DEFAULT_IM_END_TOKEN"))
        image_token = start + image_token + end
    placeholder = get_upstream_symbol("llava.constants", "IMAGE_PLACEHOLDER")
    if placeholder in query:
        query = query.replace(placeholder, image_token)
    else:
        query = f"{image_token}\n{query}"
    conv.append_message(conv.roles[0], query)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def stop_token_ids(tokenizer: Any, conv_mode: str) -> list[int] | None:
    """Ids that end an answer: ``<|im_end|>`` (and the tokenizer's EOS) for ChatML; None: the model's default."""
    from llava_patches.qwen_chat import IM_END, TEMPLATE_NAMES

    if conv_mode not in TEMPLATE_NAMES:
        return None
    ids = [tokenizer.convert_tokens_to_ids(IM_END)]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _left_padded(sequences: Sequence[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) ids padded on the left with ``pad_id``, and the (B, L) attention mask."""
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.bool)
    for i, seq in enumerate(sequences):
        ids[i, length - len(seq) :] = seq
        mask[i, length - len(seq) :] = True
    return ids, mask


@torch.inference_mode()
def answer_batch(
    tokenizer: Any,
    model: Any,
    image_processor: Any,
    images: Sequence[Image.Image],
    queries: Sequence[str],
    conv_mode: str | None = None,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
) -> list[str]:
    """Generate the model's answers to ``queries[i]`` about ``images[i]``, as one left-padded batch.

    Args:
        conv_mode: conversation template; None: :func:`default_conv_mode` of the model.
        temperature: 0 for greedy decoding.

    Raises:
        ValueError: ``images`` and ``queries`` differ in length, or the template is unknown.
    """
    from llava_patches.qwen2 import left_padding

    if len(images) != len(queries):
        raise ValueError(f"{len(images)} images but {len(queries)} queries; expected one query per image")
    tokenizer_image_token = get_upstream_symbol("llava.mm_utils", "tokenizer_image_token")
    process_images = get_upstream_symbol("llava.mm_utils", "process_images")
    image_token_index = get_upstream_symbol("llava.constants", "IMAGE_TOKEN_INDEX")
    conv_mode = conv_mode or default_conv_mode(model)
    start_end = getattr(model.config, "mm_use_im_start_end", False)
    prompts = [
        tokenizer_image_token(build_prompt(q, conv_mode, start_end), tokenizer, image_token_index, return_tensors="pt")
        for q in queries
    ]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids, attention_mask = _left_padded(prompts, pad_id)
    pixels = process_images(list(images), image_processor, model.config).to(model.device, dtype=model.dtype)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    stop = stop_token_ids(tokenizer, conv_mode)
    # Upstream re-pads the spliced embeddings on config.tokenizer_padding_side, which training sets to "right".
    with left_padding(model.config):
        output_ids = model.generate(
            input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            images=pixels,
            image_sizes=[image.size for image in images],
            max_new_tokens=max_new_tokens,
            use_cache=True,
            pad_token_id=pad_id,
            **({"eos_token_id": stop} if stop else {}),
            **sampling,
        )
    return [text.strip() for text in tokenizer.batch_decode(output_ids, skip_special_tokens=True)]


def answer(
    tokenizer: Any,
    model: Any,
    image_processor: Any,
    image: Image.Image,
    query: str,
    conv_mode: str | None = None,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
) -> str:
    """Generate the model's answer to ``query`` about ``image`` (see :func:`answer_batch`)."""
    return answer_batch(tokenizer, model, image_processor, [image], [query], conv_mode, max_new_tokens, temperature)[0]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava_patches.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", required=True, help="LLaVA checkpoint directory")
    parser.add_argument("--model-base", default=None, help="base LLM for LoRA / projector-only checkpoints")
    parser.add_argument("--image", required=True, help="image file")
    parser.add_argument("--query", required=True, help="question about the image")
    parser.add_argument("--conv-mode", default=None,
                        help="conversation template (default: qwen_2 for a llava_qwen checkpoint, else v1)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy decoding")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (temperature > 0)")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if not (args.temperature >= 0):  # also refuses nan
        raise InputError(f"--temperature must be >= 0, got {args.temperature}")
    check_model_path(args.model_path)
    if args.model_base:
        check_model_path(args.model_base, "--model-base")
    torch.manual_seed(args.seed)
    image = load_image(args.image)
    tokenizer, model, image_processor, _ = load_pretrained_model(args.model_path, args.model_base, device=args.device)
    print(answer(tokenizer, model, image_processor, image, args.query, args.conv_mode, args.max_new_tokens, args.temperature))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, load the model, print the answer; returns the exit status (2: bad input)."""
    return run_cli("python -m llava_patches.predict", _parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
