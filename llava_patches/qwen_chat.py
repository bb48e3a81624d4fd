"""Qwen's ChatML conversation templates for upstream LLaVA, and the label masking that goes with them.

Templates (upstream ``llava.conversation.Conversation`` objects, ``SeparatorStyle.MPT`` with the ChatML
separators, so every upstream helper that renders a template works unchanged):

========== ==================================================================== ======================
name       system prompt                                                        for
========== ==================================================================== ======================
qwen_2     ``You are a helpful assistant.``                                     Qwen2(-Instruct)
qwen_2_5   ``You are Qwen, created by Alibaba Cloud. You are a helpful           Qwen2.5(-Instruct)
           assistant.``
qwen_1_5   alias of ``qwen_2`` (the name the MMGeoLM reference scripts pass)    LLaVA-NeXT scripts
========== ==================================================================== ======================

A rendered prompt is ``<|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{question}<|im_end|>\\n
<|im_start|>assistant\\n``, token for token what ``tokenizer.apply_chat_template`` gives.

:func:`preprocess_chatml` builds ``input_ids`` and ``labels`` segment by segment: the system block, each
user turn and each ``<|im_start|>assistant\\n`` header are masked, each answer plus its ``<|im_end|>`` is
learned, the newline after it is masked. The ids come from tokenizing those segments (nothing is a
literal id), images are placed by upstream's ``tokenizer_image_token``, and no total-length comparison
can mask a sample by mistake (upstream's "tokenization mismatch"). Multi-turn samples work; a leading
``{"from": "system", ...}`` turn replaces the template's system prompt.
"""
from __future__ import annotations

import functools
import importlib
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch

from llava_patches.compat import get_upstream_symbol

IM_START, IM_END, NEWLINE = "<|im_start|>", "<|im_end|>", "\n"
SYSTEM_PROMPTS = {
    "qwen_2": "You are a helpful assistant.",
    "qwen_2_5": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
}
ALIASES = {"qwen_1_5": "qwen_2"}
TEMPLATE_NAMES = (*SYSTEM_PROMPTS, *ALIASES)
# LLaVA-format speaker names -> ChatML roles.
_ROLES = {"human": "user", "gpt": "assistant"}
_MARKER = "__qwen_chat_original__"
_TEMPLATES: dict[str, Any] = {}
_CHECKED: weakref.WeakSet = weakref.WeakSet()  # tokenizers that passed check_chatml_tokenizer


def _conversation_module() -> Any:
    get_upstream_symbol("llava.conversation", "conv_templates")
    return importlib.import_module("llava.conversation")


def make_template(system: str, version: str) -> Any:
    """An upstream ``Conversation`` that renders ChatML with ``system`` as the system prompt."""
    conversation = _conversation_module()
    return conversation.Conversation(
        system=f"{IM_START}system{NEWLINE}{system}",
        roles=(f"{IM_START}user{NEWLINE}", f"{IM_START}assistant{NEWLINE}"),
        version=version,
        messages=(),
        offset=0,
        sep_style=conversation.SeparatorStyle.MPT,
        sep=IM_END + NEWLINE,
    )


def templates() -> dict[str, Any]:
    """Our templates by name (one object per name, aliases share their target's object)."""
    if not _TEMPLATES:
        for name, system in SYSTEM_PROMPTS.items():
            _TEMPLATES[name] = make_template(system, name)
        for alias, target in ALIASES.items():
            _TEMPLATES[alias] = _TEMPLATES[target]
    return _TEMPLATES


def is_qwen_template(conv: Any) -> bool:
    """Whether ``conv`` is one of our templates (by version, so a copy in a worker process counts too)."""
    return getattr(conv, "version", None) in SYSTEM_PROMPTS


def get_template(name: str) -> Any:
    """A fresh copy of template ``name``: ours or upstream's.

    Raises:
        ValueError: unknown name (every known one is listed).
    """
    if name in TEMPLATE_NAMES:
        return templates()[name].copy()
    conv_templates = _conversation_module().conv_templates
    if name not in conv_templates:
        raise ValueError(f"unknown conversation template {name!r}; known: {', '.join(sorted({*conv_templates, *TEMPLATE_NAMES}))}")
    return conv_templates[name].copy()


def register_templates() -> None:
    """Add ``qwen_2``, ``qwen_2_5`` and ``qwen_1_5`` to upstream's ``conv_templates`` (idempotent).

    Raises:
        ValueError: one of the names is taken by a template that is not ours.
    """
    conv_templates = _conversation_module().conv_templates
    for name, template in templates().items():
        present = conv_templates.get(name)
        if present is not None and present is not template:
            raise ValueError(f"llava.conversation.conv_templates[{name!r}] is already defined by someone else; not replacing it")
    conv_templates.update(templates())


def unregister_templates() -> None:
    """Remove our templates from ``conv_templates`` (others are left alone)."""
    conv_templates = _conversation_module().conv_templates
    for name, template in templates().items():
        if conv_templates.get(name) is template:
            del conv_templates[name]


def templates_registered() -> bool:
    conv_templates = _conversation_module().conv_templates
    return all(conv_templates.get(name) is template for name, template in templates().items())


# ----------------------------------------------------------------------------- label masking
def check_chatml_tokenizer(tokenizer: Any, version: str) -> None:
    """Raise unless ``tokenizer`` keeps ChatML's markers whole and adds no BOS/EOS of its own (once per tokenizer)."""
    if tokenizer in _CHECKED:
        return
    where = f"--version {version}: tokenizer {type(tokenizer).__name__} ({getattr(tokenizer, 'name_or_path', '?')})"
    for marker in (IM_START, IM_END):
        ids = tokenizer(marker, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ValueError(f"{where} splits {marker!r} into {len(ids)} tokens; the ChatML templates need a "
                             "Qwen2/Qwen2.5 tokenizer (where it is one special token)")
    if tokenizer("a").input_ids != tokenizer("a", add_special_tokens=False).input_ids:
        raise ValueError(f"{where} adds special tokens (BOS/EOS) to every text; ChatML prompts carry their own")
    _CHECKED.add(tokenizer)


def _speakers(source: Sequence[dict], system: str) -> tuple[str, list[tuple[str, str]]]:
    """The system prompt and the (role, text) turns of one LLaVA-format conversation, validated."""
    turns = list(source)
    if turns and turns[0].get("from") == "system":
        system, turns = turns[0]["value"], turns[1:]
    if turns and turns[0].get("from") != "human":
        turns = turns[1:]  # upstream's rule: a conversation starts with the human
    out = []
    for i, turn in enumerate(turns):
        role = _ROLES.get(turn.get("from"))
        expected = ("user", "assistant")[i % 2]
        if role != expected:
            raise ValueError(f"conversation turn {i}: 'from' is {turn.get('from')!r}, expected "
                             f"{'human' if expected == 'user' else 'gpt'!r} (turns alternate human/gpt): {list(source)!r}")
        if not isinstance(turn.get("value"), str):
            raise ValueError(f"conversation turn {i}: 'value' must be a string, got {turn.get('value')!r}")
        out.append((role, turn["value"]))
    return system, out


def preprocess_chatml(sources: Sequence[Sequence[dict]], tokenizer: Any, has_image: bool, conv: Any) -> dict[str, list]:
    """``input_ids`` and ``labels`` for LLaVA-format conversations rendered with ChatML template ``conv``.

    Args:
        sources: conversations (lists of ``{"from": "human"|"gpt", "value": str}``), as upstream passes them
            (``<image>`` already moved to the front of its turn by upstream's ``preprocess_multimodal``).
        tokenizer: a Qwen2/Qwen2.5 tokenizer (checked by :func:`check_chatml_tokenizer`).
        has_image: whether ``<image>`` placeholders become ``IMAGE_TOKEN_INDEX``.
        conv: one of our templates (its system prompt is the default).

    Returns:
        ``{"input_ids": [LongTensor], "labels": [LongTensor]}`` like upstream's ``preprocess``.
    """
    ignore_index = get_upstream_symbol("llava.constants", "IGNORE_INDEX")
    image_index = get_upstream_symbol("llava.constants", "IMAGE_TOKEN_INDEX")
    tokenizer_image_token = get_upstream_symbol("llava.mm_utils", "tokenizer_image_token")
    check_chatml_tokenizer(tokenizer, conv.version)

    def tokenize(text: str) -> list[int]:
        return tokenizer_image_token(text, tokenizer) if has_image else tokenizer(text, add_special_tokens=False).input_ids

    default_system = conv.system[len(f"{IM_START}system{NEWLINE}"):]
    all_ids, all_labels = [], []
    for source in sources:
        system, turns = _speakers(source, default_system)
        ids: list[int] = []
        labels: list[int] = []
        segments = [(f"{IM_START}system{NEWLINE}{system}{IM_END}{NEWLINE}", False)]
        for role, text in turns:
            if role == "user":
                segments.append((f"{IM_START}user{NEWLINE}{text}{IM_END}{NEWLINE}", False))
            else:
                segments += [(f"{IM_START}assistant{NEWLINE}", False), (f"{text}{IM_END}", True), (NEWLINE, False)]
        for text, learn in segments:
            segment = tokenize(text)
            ids.extend(segment)
            labels.extend(t if learn and t != image_index else ignore_index for t in segment)
        all_ids.append(torch.tensor(ids, dtype=torch.long))
        all_labels.append(torch.tensor(labels, dtype=torch.long))
    return {"input_ids": all_ids, "labels": all_labels}


def make_preprocess(original: Callable[..., dict]) -> Callable[..., dict]:
    """Wrap upstream ``llava.train.train.preprocess``: our templates get :func:`preprocess_chatml`."""

    @functools.wraps(original)
    def preprocess(sources: Sequence[Sequence[dict]], tokenizer: Any, has_image: bool = False) -> dict:
        conv = _conversation_module().default_conversation
        if is_qwen_template(conv):
            return preprocess_chatml(sources, tokenizer, has_image, conv)
        return original(sources, tokenizer, has_image=has_image)

    setattr(preprocess, _MARKER, original)
    return preprocess


def is_wrapped(function: Any) -> bool:
    """Whether ``function`` is a :func:`make_preprocess` wrapper."""
    return hasattr(function, _MARKER)
