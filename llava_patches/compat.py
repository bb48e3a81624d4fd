"""Version checks and guarded access to the upstream LLaVA symbols we patch or call.

Every upstream name we touch goes through :func:`get_upstream_symbol`, so an incompatible llava-torch
fails with an error that names the missing symbol and the version we support, instead of an
``AttributeError`` deep inside a training run.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import warnings
from typing import Any

SUPPORTED_LLAVA_VERSION = "1.2.2.post1"
SUPPORTED_TRANSFORMERS_VERSION = "4.37.2"
LLAVA_DISTRIBUTION = "llava-torch"

# (module, attribute) pairs the patches rely on; checked before anything is patched.
REQUIRED_SYMBOLS: tuple[tuple[str, str], ...] = (
    ("llava.model.llava_arch", "build_vision_tower"),
    ("llava.model.multimodal_encoder.builder", "build_vision_tower"),
    ("llava.model.builder", "load_pretrained_model"),
    ("llava.train.train", "train"),
    ("llava.train.train", "LLaVATrainer"),
    ("llava.train.train", "safe_save_model_for_hf_trainer"),
    ("llava.train.train", "LlavaLlamaForCausalLM"),
    ("llava.train.train", "preprocess"),
    ("llava.train.train", "make_supervised_data_module"),
    ("llava.train.train", "LazySupervisedDataset"),
    ("llava.model.llava_arch", "LlavaMetaModel"),
    ("llava.model.llava_arch", "LlavaMetaForCausalLM"),
    ("llava.conversation", "conv_templates"),
    ("llava.mm_utils", "tokenizer_image_token"),
)


class UpstreamIncompatibleError(ImportError):
    """The installed upstream LLaVA lacks a symbol the plugin needs."""


def is_llava_available() -> bool:
    """Whether the ``llava`` package (llava-torch) can be imported."""
    return importlib.util.find_spec("llava") is not None


def is_flash_attn_available() -> bool:
    """Whether ``flash_attn`` is importable (it is an optional extra: ``pip install mmgeolm[flash-attn]``)."""
    return importlib.util.find_spec("flash_attn") is not None


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def get_upstream_symbol(module: str, name: str) -> Any:
    """Import ``module`` and return its attribute ``name``, or raise a clear incompatibility error.

    Args:
        module: dotted module path inside upstream LLaVA, e.g. ``"llava.model.llava_arch"``.
        name: attribute expected in that module.

    Raises:
        UpstreamIncompatibleError: llava is missing, the module fails to import, or lacks ``name``.
    """
    if not is_llava_available():
        raise UpstreamIncompatibleError(
            f"upstream LLaVA is not installed; install it with "
            f"`pip install --no-deps {LLAVA_DISTRIBUTION}=={SUPPORTED_LLAVA_VERSION}` (see the Makefile)"
        )
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise UpstreamIncompatibleError(
            f"cannot import {module} from {LLAVA_DISTRIBUTION} {installed_version(LLAVA_DISTRIBUTION)} "
            f"(supported: {SUPPORTED_LLAVA_VERSION}, with transformers {SUPPORTED_TRANSFORMERS_VERSION}): {exc}"
        ) from exc
    if not hasattr(mod, name):
        raise UpstreamIncompatibleError(
            f"{module}.{name} not found in {LLAVA_DISTRIBUTION} {installed_version(LLAVA_DISTRIBUTION)}; "
            f"the plugin supports {LLAVA_DISTRIBUTION}=={SUPPORTED_LLAVA_VERSION}"
        )
    return getattr(mod, name)


def check_upstream(symbols: tuple[tuple[str, str], ...] = REQUIRED_SYMBOLS) -> None:
    """Raise :class:`UpstreamIncompatibleError` unless every symbol in ``symbols`` exists."""
    for module, name in symbols:
        get_upstream_symbol(module, name)


def warn_on_untested_versions() -> None:
    """Warn when transformers or llava-torch differ from the versions the plugin was tested with."""
    for dist, good in ((LLAVA_DISTRIBUTION, SUPPORTED_LLAVA_VERSION), ("transformers", SUPPORTED_TRANSFORMERS_VERSION)):
        found = installed_version(dist)
        if found is not None and found != good:
            warnings.warn(
                f"{dist} {found} is installed; the LLaVA plugin is tested with {dist}=={good} "
                f"(upstream LLaVA's generate breaks from transformers 4.38, its checkpoint save in 4.47)",
                stacklevel=2,
            )
