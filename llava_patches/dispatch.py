"""Choose LLaVA's language-model class from the checkpoint's ``config.model_type``, never from its path.

Upstream picks the class by substrings: ``train()`` builds ``LlavaLlamaForCausalLM`` unless ``"mpt"`` is
in the path, ``load_pretrained_model`` looks for ``"mpt"`` / ``"mistral"`` in the model name. A Qwen2
checkpoint then loads as Llama, silently dropping its q/k/v biases. :class:`ModelClassByConfig` stands in
for upstream's class at those call sites (see :mod:`llava_patches.train` and :mod:`llava_patches.loader`):
its ``from_pretrained`` reads the checkpoint's ``model_type`` and

- builds :class:`llava_patches.qwen2.LlavaQwen2ForCausalLM` for ``qwen2`` / ``llava_qwen``;
- keeps upstream's choice when it fits the model type (Llama and Mistral share upstream's Llama code:
  upstream trains Mistral models as ``LlavaLlamaForCausalLM``, and that stays so);
- raises when upstream's choice does not fit (an MPT checkpoint loaded as Llama, an unknown model type).
"""
from __future__ import annotations

from typing import Any

# config.model_type -> family; each family is served by the classes of _CLASS_FAMILY.
MODEL_TYPE_FAMILY = {
    "llama": "llama", "llava_llama": "llama", "llava": "llama", "mistral": "llama", "llava_mistral": "llama",
    "mpt": "mpt", "llava_mpt": "mpt",
    "qwen2": "qwen2", "llava_qwen": "qwen2",
}  # fmt: skip
_CLASS_FAMILY = {
    "LlavaLlamaForCausalLM": "llama",
    "LlavaMistralForCausalLM": "llama",
    "LlavaMptForCausalLM": "mpt",
    "LlavaQwen2ForCausalLM": "qwen2",
}


def checkpoint_model_type(path: str, **hub_kwargs: Any) -> str | None:
    """``model_type`` from the ``config.json`` of ``path`` (a directory or hub id), without building a config."""
    from transformers import PretrainedConfig

    config_dict, _ = PretrainedConfig.get_config_dict(str(path), **hub_kwargs)
    return config_dict.get("model_type")


def resolve_model_class(requested: Any, model_type: str | None, where: str) -> Any:
    """The class to load a checkpoint of ``model_type`` with, given that upstream asked for ``requested``.

    Args:
        requested: the class upstream's code chose (by path substring).
        model_type: the checkpoint's ``config.model_type``.
        where: the call site, for error messages (e.g. ``"llava.train.train.train()"``).

    Raises:
        ValueError: ``model_type`` is unknown, or ``requested`` cannot hold it.
    """
    wanted = _CLASS_FAMILY.get(getattr(requested, "__name__", ""))
    if wanted is None:  # not a LLaVA class (e.g. AutoModelForCausalLM): it dispatches on model_type itself
        return requested
    family = MODEL_TYPE_FAMILY.get(model_type)
    if family is None:
        raise ValueError(
            f"{where}: config.model_type {model_type!r} is not a language model upstream LLaVA (with llava_patches) "
            f"can build; supported: {', '.join(sorted(MODEL_TYPE_FAMILY))}"
        )
    if family == "qwen2":
        from llava_patches.qwen2 import LlavaQwen2ForCausalLM

        return LlavaQwen2ForCausalLM
    if family != wanted:
        raise ValueError(
            f"{where}: upstream chose {requested.__name__} (from a substring of the path or model name) for a "
            f"checkpoint whose config.model_type is {model_type!r}; it would load the wrong architecture. "
            + ("Upstream needs 'mpt' in the path of an MPT checkpoint." if family == "mpt" else
               "Rename the path so it does not contain 'mpt'.")
        )
    return requested


class ModelClassByConfig:
    """Stands in for one of upstream's LLaVA classes at a call site; ``from_pretrained`` dispatches on model type.

    Every other attribute is the requested class's own, so upstream code reading e.g. ``config_class``
    sees what it expects.

    Args:
        requested: the upstream class this object replaces at its call site.
        where: the call site, for error messages.
        torch_dtype: forced ``torch_dtype`` for ``from_pretrained`` (None: the caller's).
        config: a config to pass when the caller passes none (None: the checkpoint's own).
    """

    def __init__(self, requested: Any, where: str, torch_dtype: Any = None, config: Any = None) -> None:
        self.requested, self.where, self.torch_dtype, self.config = requested, where, torch_dtype, config

    def from_pretrained(self, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        if self.torch_dtype is not None:
            kwargs["torch_dtype"] = self.torch_dtype
        if self.config is not None and kwargs.get("config") is None:
            kwargs["config"] = self.config
        if getattr(self.requested, "__name__", "") not in _CLASS_FAMILY:
            return self.requested.from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        config = kwargs.get("config")
        if config is not None:
            model_type = config.model_type
        else:
            hub = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only") if k in kwargs}
            model_type = checkpoint_model_type(pretrained_model_name_or_path, **hub)
        cls = resolve_model_class(self.requested, model_type, self.where)
        return cls.from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.requested, name)

    def __repr__(self) -> str:
        return f"ModelClassByConfig({self.requested.__name__}, where={self.where!r})"
