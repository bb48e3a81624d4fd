"""Qwen2 / Qwen2.5 as LLaVA's language model: the model classes upstream LLaVA 1.2.2 lacks.

:class:`LlavaQwen2ForCausalLM` is to ``transformers.Qwen2ForCausalLM`` what upstream's
``LlavaLlamaForCausalLM`` is to ``LlamaForCausalLM``: the same weights (q/k/v biases included), plus
``LlavaMetaModel``'s vision tower and projector. Its ``model_type`` is ``"llava_qwen"``, the string
LLaVA-NeXT uses, so checkpoints of either project load with the other's class.

Two differences from upstream's ``generate`` (both Qwen traps in transformers 4.37.2):

- generation from ``inputs_embeds`` seeds a ``bos_token_id`` column (Qwen2.5's config says
  ``<|endoftext|>``; a Qwen tokenizer has no BOS at all, which makes transformers raise). We pass an empty
  ``input_ids`` instead, so the output holds exactly the generated tokens;
- the multimodal embeddings of a batch are padded on the left whatever ``config.tokenizer_padding_side``
  says (training stores ``"right"`` there, which breaks batched generation, and Qwen2's flash-attention
  path raises on right padding with the cache on).

:func:`register_auto_classes` makes ``AutoConfig`` / ``AutoModelForCausalLM`` resolve ``"llava_qwen"``;
it is explicit, idempotent and undone by :func:`unregister_auto_classes`. Importing this module imports
upstream LLaVA and transformers but changes nothing in them.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen2Model
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
from transformers.models.qwen2.modeling_qwen2 import Qwen2PreTrainedModel

from llava_patches.compat import get_upstream_symbol

LLAVA_QWEN_MODEL_TYPE = "llava_qwen"
# The config.model_type values this class loads: a plain Qwen2/Qwen2.5 LLM and a trained LLaVA-Qwen.
QWEN2_MODEL_TYPES = frozenset({"qwen2", LLAVA_QWEN_MODEL_TYPE})

LlavaMetaModel = get_upstream_symbol("llava.model.llava_arch", "LlavaMetaModel")
LlavaMetaForCausalLM = get_upstream_symbol("llava.model.llava_arch", "LlavaMetaForCausalLM")


class LlavaQwen2Config(Qwen2Config):
    """``Qwen2Config`` under LLaVA's model type (also carries the ``mm_*`` keys training adds)."""

    model_type = LLAVA_QWEN_MODEL_TYPE


class LlavaQwen2Model(LlavaMetaModel, Qwen2Model):
    """``Qwen2Model`` with LLaVA's vision tower and projector (built from ``config.mm_vision_tower``)."""

    config_class = LlavaQwen2Config

    def __init__(self, config: Qwen2Config) -> None:
        super().__init__(config)


@contextlib.contextmanager
def left_padding(config: Any) -> Iterator[None]:
    """Make upstream's ``prepare_inputs_labels_for_multimodal`` pad a batch on the left inside the block."""
    had = hasattr(config, "tokenizer_padding_side")
    saved = getattr(config, "tokenizer_padding_side", None)
    config.tokenizer_padding_side = "left"
    try:
        yield
    finally:
        if had:
            config.tokenizer_padding_side = saved
        else:
            del config.tokenizer_padding_side


class LlavaQwen2ForCausalLM(Qwen2ForCausalLM, LlavaMetaForCausalLM):
    """``Qwen2ForCausalLM`` that takes ``images`` (and ``image_sizes``) like upstream's LLaVA-Llama."""

    config_class = LlavaQwen2Config

    def __init__(self, config: Qwen2Config) -> None:
        # Skip Qwen2ForCausalLM.__init__: it would build a plain Qwen2Model only to be replaced.
        Qwen2PreTrainedModel.__init__(self, config)
        self.model = LlavaQwen2Model(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()  # initialises weights and ties lm_head to the embeddings when tie_word_embeddings

    def get_model(self) -> LlavaQwen2Model:
        return self.model

    def initialize_vision_tokenizer(self, model_args: Any, tokenizer: Any) -> None:
        """Upstream's, with a warning when ``mm_use_im_patch_token`` resizes a Qwen vocabulary."""
        if getattr(model_args, "mm_use_im_patch_token", False):
            import warnings

            warnings.warn(
                f"--mm_use_im_patch_token True adds a token and resizes the embeddings of {type(self).__name__} "
                f"from {self.get_input_embeddings().weight.shape[0]} rows to len(tokenizer)+1 "
                f"({len(tokenizer) + 1}); real Qwen checkpoints pad their vocabulary past len(tokenizer), so this "
                "drops rows. LLaVA-1.5 and the MMGeoLM reference train with --mm_use_im_patch_token False",
                stacklevel=2,
            )
        super().initialize_vision_tokenizer(model_args, tokenizer)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: list[torch.FloatTensor] | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        images: torch.FloatTensor | None = None,
        image_sizes: list[list[int]] | None = None,
        return_dict: bool | None = None,
    ) -> Any:
        """Qwen2's forward on the image-spliced embeddings (text-only inputs go through unchanged)."""
        if inputs_embeds is None:
            (input_ids, position_ids, attention_mask, past_key_values, inputs_embeds, labels) = (
                self.prepare_inputs_labels_for_multimodal(
                    input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes
                )
            )
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=return_dict,
        )

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        image_sizes: list[list[int]] | None = None,
        **kwargs: Any,
    ) -> torch.LongTensor:
        """Generate from a prompt with ``IMAGE_TOKEN_INDEX`` placeholders; returns only the new tokens.

        Args:
            inputs: (B, L) prompt ids, left-padded with ``attention_mask`` for a batch.
            images: (B, C, H, W) pixels (or a list), one image per placeholder; None for text only.
            image_sizes: original (width, height) per image (for ``anyres``).
            **kwargs: ``transformers`` generation arguments (``attention_mask``, ``max_new_tokens``, ...).
        """
        if "inputs_embeds" in kwargs:
            raise NotImplementedError("LlavaQwen2ForCausalLM.generate takes prompt ids, not inputs_embeds")
        inputs = inputs if inputs is not None else kwargs.pop("input_ids", None)
        if inputs is None:
            raise ValueError("LlavaQwen2ForCausalLM.generate needs the prompt ids as `inputs`")
        position_ids = kwargs.pop("position_ids", None)
        attention_mask = kwargs.pop("attention_mask", None)
        if images is not None:
            with left_padding(self.config):
                (_, position_ids, attention_mask, _, inputs_embeds, _) = self.prepare_inputs_labels_for_multimodal(
                    inputs, position_ids, attention_mask, None, None, images, image_sizes=image_sizes
                )
        else:
            inputs_embeds = self.get_model().embed_tokens(inputs)
        # An empty id prefix stops transformers from seeding bos_token_id (Qwen has none, or <|endoftext|>).
        no_prefix = torch.empty((inputs_embeds.shape[0], 0), dtype=torch.long, device=inputs_embeds.device)
        return super().generate(
            no_prefix, position_ids=position_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
        )

    def prepare_inputs_for_generation(
        self, input_ids: torch.LongTensor, past_key_values: Any = None, inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        images = kwargs.pop("images", None)
        image_sizes = kwargs.pop("image_sizes", None)
        inputs = super().prepare_inputs_for_generation(
            input_ids, past_key_values=past_key_values, inputs_embeds=inputs_embeds, **kwargs
        )
        if images is not None:
            inputs["images"] = images
        if image_sizes is not None:
            inputs["image_sizes"] = image_sizes
        return inputs


# ----------------------------------------------------------------------------- Auto-class registration
def _registered_config() -> Any:
    return CONFIG_MAPPING._extra_content.get(LLAVA_QWEN_MODEL_TYPE)


def is_auto_registered() -> bool:
    """Whether ``AutoConfig`` and ``AutoModelForCausalLM`` currently resolve ``llava_qwen`` to our classes."""
    return (
        _registered_config() is LlavaQwen2Config
        and MODEL_FOR_CAUSAL_LM_MAPPING._extra_content.get(LlavaQwen2Config) is LlavaQwen2ForCausalLM
    )


def register_auto_classes() -> bool:
    """Register ``llava_qwen`` with ``AutoConfig`` / ``AutoModelForCausalLM`` (idempotent).

    Returns:
        Whether this call registered them (False: they already were).

    Raises:
        ValueError: another class is registered under ``"llava_qwen"`` (e.g. LLaVA-NeXT's, imported in the
            same process); replacing it silently would change what that code loads.
    """
    if is_auto_registered():
        return False
    other = _registered_config()
    if other is not None:
        raise ValueError(
            f"AutoConfig already maps {LLAVA_QWEN_MODEL_TYPE!r} to {other.__module__}.{other.__qualname__}; "
            "llava_patches will not replace another package's registration (use one LLaVA code base per process)"
        )
    AutoConfig.register(LLAVA_QWEN_MODEL_TYPE, LlavaQwen2Config)
    AutoModelForCausalLM.register(LlavaQwen2Config, LlavaQwen2ForCausalLM)
    return True


def unregister_auto_classes() -> None:
    """Remove our ``llava_qwen`` entries from the Auto mappings (a no-op when they are not there)."""
    if _registered_config() is LlavaQwen2Config:
        del CONFIG_MAPPING._extra_content[LLAVA_QWEN_MODEL_TYPE]
    if MODEL_FOR_CAUSAL_LM_MAPPING._extra_content.get(LlavaQwen2Config) is LlavaQwen2ForCausalLM:
        del MODEL_FOR_CAUSAL_LM_MAPPING._extra_content[LlavaQwen2Config]
