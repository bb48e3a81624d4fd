"""Inference loading: upstream ``load_pretrained_model`` with MMCLIP towers, on GPU or CPU.

:func:`load_pretrained_model` registers the ``mmclip:`` builder and calls upstream's loader, so a
checkpoint whose config says ``mm_vision_tower: mmclip:<dir>`` reloads anywhere (and ``llava_qwen``
resolves with ``AutoConfig``). Four upstream traits are handled here rather than left to the caller:

- upstream decides "is this a LLaVA model" by ``'llava' in model_name``; when the checkpoint's config has
  ``mm_vision_tower`` we make sure the name says so (other name cues such as ``mistral`` are kept);
- upstream picks the model class from substrings of the name (``mpt``, ``mistral``, else Llama), so a
  Qwen2 LLaVA would reload as Llama without its q/k/v biases. For the duration of the call, the classes
  upstream's builder calls ``from_pretrained`` on are replaced by stand-ins that dispatch on the
  checkpoint's ``config.model_type`` (:class:`llava_patches.dispatch.ModelClassByConfig`; a class that
  cannot hold that model type raises);
- upstream always loads non-quantised weights as float16; ``dtype`` (default float32 on CPU) is honoured
  by the same stand-ins;
- a trained tower saved inside the checkpoint (``<model_path>/mmclip_tower``, see
  :mod:`llava_patches.save`) is used even when the checkpoint directory was moved.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from llava_patches.compat import get_upstream_symbol
from llava_patches.dispatch import ModelClassByConfig
from llava_patches.patching import patched
from llava_patches.register import registered
from llava_patches.save import TOWER_SUBDIR_KEY

BUILDER_MODULE = "llava.model.builder"
# The classes upstream's builder calls ``from_pretrained`` on, by their names in that module.
_MODEL_CLASS_NAMES = ("LlavaLlamaForCausalLM", "LlavaMistralForCausalLM", "LlavaMptForCausalLM", "AutoModelForCausalLM")


def read_checkpoint_config(model_path: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a local checkpoint directory ({} for a hub id or a missing file).

    Raises:
        ValueError: the file exists but is not valid JSON.
    """
    path = Path(model_path) / "config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc


def infer_model_name(model_path: str | Path, config: dict[str, Any]) -> str:
    """Upstream's model name for ``model_path``, prefixed with ``llava-`` when the config is multimodal."""
    get_model_name_from_path = get_upstream_symbol("llava.mm_utils", "get_model_name_from_path")
    name = get_model_name_from_path(str(model_path).rstrip("/"))
    if "mm_vision_tower" in config and "llava" not in name.lower():
        name = f"llava-{name}"
    return name


def relocated_tower_name(model_path: str | Path, config: dict[str, Any]) -> str | None:
    """``mmclip:<model_path>/<subdir>`` when the checkpoint carries its own trained tower, else None."""
    subdir = config.get(TOWER_SUBDIR_KEY)
    if not subdir:
        return None
    tower_dir = (Path(model_path) / subdir).resolve()
    if not tower_dir.is_dir():
        raise FileNotFoundError(
            f"{Path(model_path) / 'config.json'} says the trained tower is in {subdir!r}, but {tower_dir} is missing"
        )
    return f"mmclip:{tower_dir}"


@contextlib.contextmanager
def _model_classes(dtype: torch.dtype | None, config: Any | None) -> Iterator[None]:
    """Upstream's builder's classes -> stand-ins that dispatch on model type (and force ``dtype``)."""
    with contextlib.ExitStack() as stack:
        for name in _MODEL_CLASS_NAMES:
            cls = get_upstream_symbol(BUILDER_MODULE, name)
            stand_in = ModelClassByConfig(cls, where=f"{BUILDER_MODULE}.load_pretrained_model", torch_dtype=dtype, config=config)
            stack.enter_context(patched(BUILDER_MODULE, name, stand_in))
        yield


def load_pretrained_model(
    model_path: str | Path,
    model_base: str | None = None,
    model_name: str | None = None,
    device: str = "cuda",
    dtype: torch.dtype | None = None,
    **kwargs: Any,
) -> tuple[Any, Any, Any, int]:
    """Load a LLaVA checkpoint through upstream's loader with the ``mmclip:`` tower builder registered.

    Args:
        model_path: checkpoint directory (or hub id) as upstream takes it.
        model_base: base LLM for LoRA / projector-only checkpoints, as upstream takes it.
        model_name: upstream's branch selector; default: derived from ``model_path`` and its config.
        device: ``"cuda"`` (upstream's ``device_map`` logic) or e.g. ``"cpu"``.
        dtype: weight dtype; default float16 on CUDA (upstream's choice) and float32 elsewhere.
        **kwargs: passed to upstream (``load_8bit``, ``load_4bit``, ``device_map``, ``use_flash_attn``...).

    Returns:
        Upstream's ``(tokenizer, model, image_processor, context_len)``.
    """
    upstream_load = get_upstream_symbol(BUILDER_MODULE, "load_pretrained_model")
    config = read_checkpoint_config(model_path)
    model_name = model_name or infer_model_name(model_path, config)
    dtype = dtype or (torch.float16 if device == "cuda" else torch.float32)
    quantised = kwargs.get("load_8bit") or kwargs.get("load_4bit")
    with contextlib.ExitStack() as stack:
        stack.enter_context(registered())  # also makes AutoConfig know llava_qwen
        override = None
        tower_name = relocated_tower_name(model_path, config)
        if tower_name is not None and model_base is None:
            AutoConfig = get_upstream_symbol(BUILDER_MODULE, "AutoConfig")  # noqa: N806
            override = AutoConfig.from_pretrained(str(model_path))
            override.mm_vision_tower = tower_name
        stack.enter_context(_model_classes(None if quantised else dtype, override))
        tokenizer, model, image_processor, context_len = upstream_load(
            str(model_path), model_base, model_name, device=device, **kwargs
        )
    if not quantised:
        vision_tower = model.get_vision_tower() if hasattr(model, "get_vision_tower") else None
        if vision_tower is not None:
            vision_tower.to(device=model.device, dtype=dtype)
    return tokenizer, model, image_processor, context_len
