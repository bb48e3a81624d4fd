"""The files of an MMCLIP checkpoint directory, read and checked in one place.

A checkpoint directory (written by :meth:`mmclip_plugin.model.MMCLIPModel.save_pretrained`) holds::

    open_clip_config.json        {"model_cfg": <open_clip architecture>, "preprocess_cfg": <open_clip PreprocessCfg>}
    open_clip_model.safetensors  the weights
    mmclip_config.json           {"format": "mmclip", "version": 1, "model": <ModelConfig>, "metadata": {...}}

Every reader (``mmclip-eval``, ``mmclip-export``, ``--resume``, the LLaVA tower) goes through
:func:`read_open_clip_config`, :func:`read_mmclip_model_config` and :func:`check_weights_file`, so a
misspelt key, a value of the wrong type or a truncated weights file is refused the same way everywhere:
a :class:`~mmgeolm_core.config.ConfigError` naming the file and the dotted key
(``open_clip_config.json: key 'model_cfg.vision_cfg.widht': unknown key; valid keys ...``), or a
:class:`~mmgeolm_core.io.FormatError` naming the file. ``mmclip_config.json`` is built by the project's one
config builder; the architecture is checked against open_clip's own config classes (``CLIPVisionCfg``,
``CLIPTextCfg``, ``PreprocessCfg`` and the model classes' keywords) with the builder's type conversion, so a
key open_clip would reject with a ``TypeError`` deep inside model building is named here.
"""
from __future__ import annotations

import inspect
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmclip_plugin.config import ModelConfig
from mmgeolm_core.config import ConfigError, build_config, check, config_to_dict, convert
from mmgeolm_core.io import FormatError, read_json

OPEN_CLIP_CONFIG = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
MMCLIP_CONFIG = "mmclip_config.json"
MMCLIP_FORMAT, MMCLIP_VERSION = "mmclip", 1

# keys of model_cfg that open_clip's factory reads itself rather than passing to the model class
_FACTORY_KEYS = {"custom_text": bool}


@dataclass
class MMCLIPFile:
    """The content of ``mmclip_config.json``."""

    format: str = MMCLIP_FORMAT
    version: int = MMCLIP_VERSION
    model: ModelConfig = field(default_factory=ModelConfig)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(self.format == MMCLIP_FORMAT, "format", repr(MMCLIP_FORMAT), self.format)
        check(self.version == MMCLIP_VERSION, "version", f"{MMCLIP_VERSION} (this code reads version 1)", self.version)


def _model_class_hints() -> dict[str, Any]:
    """Annotation of every keyword the open_clip model classes take (``embed_dim``, ``quick_gelu``, ...)."""
    from open_clip.coca_model import CoCa
    from open_clip.model import CLIP, CustomTextCLIP

    hints: dict[str, Any] = {}
    for cls in (CLIP, CustomTextCLIP, CoCa):
        try:
            found = typing.get_type_hints(cls.__init__)
        except (NameError, TypeError):  # an annotation that does not resolve: check the key only
            found = {}
        for name in inspect.signature(cls.__init__).parameters:
            if name not in ("self", "args", "kwargs"):
                hints.setdefault(name, found.get(name, Any))
    return hints


def _check_keys(data: Any, hints: dict[str, Any], source: str, prefix: str) -> None:
    """Every key of ``data`` is one of ``hints`` and its value fits the annotation; None passes everywhere
    (open_clip's own annotations leave out ``Optional`` where its shipped configs write null)."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping, got {data!r:.80}", key=prefix, source=source)
    for key, value in data.items():
        if key not in hints:
            raise ConfigError(f"unknown key; valid keys under {prefix!r}: {', '.join(sorted(hints))}",
                              key=f"{prefix}.{key}", source=source)
        if value is not None:
            convert(value, hints[key], f"{prefix}.{key}", source)


def check_model_cfg(model_cfg: Any, source: str, prefix: str = "model_cfg") -> dict[str, Any]:
    """Check an open_clip architecture mapping (keys and value types) against open_clip's own classes.

    Raises:
        ConfigError: a key open_clip does not take, or a value of the wrong type (naming ``source`` and the key).
    """
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    sections = {"vision_cfg": CLIPVisionCfg, "text_cfg": CLIPTextCfg}
    hints = {**_model_class_hints(), **_FACTORY_KEYS, **{name: dict for name in sections}}
    hints.pop("cast_dtype", None)  # chosen by the loader from the precision, never stored
    _check_keys(model_cfg, hints, source, prefix)
    for name, cls in sections.items():
        if model_cfg.get(name) is not None:
            _check_keys(model_cfg[name], typing.get_type_hints(cls), source, f"{prefix}.{name}")
    return model_cfg


def read_open_clip_config(directory: str | os.PathLike) -> dict[str, Any]:
    """``open_clip_config.json`` of a checkpoint directory, checked.

    Raises:
        FormatError: the file is missing, empty, not UTF-8 or not JSON.
        ConfigError: a misspelt key, a missing ``model_cfg`` or a value of the wrong type (file and key named).
    """
    from open_clip.transform import PreprocessCfg

    path = Path(directory) / OPEN_CLIP_CONFIG
    source = str(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise ConfigError(f"expected a JSON object with 'model_cfg' and 'preprocess_cfg', got {type(data).__name__}",
                          source=source)
    unknown = [k for k in data if k not in ("model_cfg", "preprocess_cfg")]
    if unknown:
        raise ConfigError("unknown key; valid keys: model_cfg, preprocess_cfg", key=unknown[0], source=source)
    if "model_cfg" not in data:
        raise ConfigError("missing (the open_clip architecture)", key="model_cfg", source=source)
    check_model_cfg(data["model_cfg"], source)
    if data.get("preprocess_cfg") is not None:
        _check_keys(data["preprocess_cfg"], typing.get_type_hints(PreprocessCfg), source, "preprocess_cfg")
    return data


def read_mmclip_model_config(directory: str | os.PathLike) -> ModelConfig | None:
    """The :class:`ModelConfig` saved in ``mmclip_config.json`` (None when the directory has none: plain open_clip).

    Raises:
        FormatError: the file is empty, not UTF-8 or not JSON.
        ConfigError: a misspelt key or a bad value (file and dotted key named, e.g. ``model.lock_txt``).
    """
    path = Path(directory) / MMCLIP_CONFIG
    if not path.is_file():
        return None
    return build_config(MMCLIPFile, read_json(path), str(path)).model


def model_config_with(saved: ModelConfig | None, source: str, **values: Any) -> ModelConfig:
    """``saved`` (or the defaults) with ``values`` replaced, checked again by the config builder."""
    base = config_to_dict(saved) if saved is not None else {}
    return build_config(ModelConfig, {**base, **values}, source)


def check_weights_file(directory: str | os.PathLike) -> Path:
    """The weights file of a checkpoint directory, its safetensors header read (a truncated file is refused).

    Raises:
        FormatError: the file is not a complete safetensors file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(directory) / WEIGHTS_FILE
    try:
        with safe_open(str(path), framework="pt", device="cpu"):
            pass
    except SafetensorError as exc:
        raise FormatError(path, f"not a complete safetensors file (truncated or not safetensors): {exc}") from None
    return path


def weights_mismatch(directory: str | os.PathLike, exc: RuntimeError) -> FormatError:
    """The one-line error for weights that do not fit the architecture (torch's ``load_state_dict`` message
    lists every tensor on its own line: the first one is named, the others counted)."""
    details = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    first = details[0] if details else str(exc)
    first = first if len(first) <= 240 else first[:240] + " ..."
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return FormatError(Path(directory) / WEIGHTS_FILE,
                       f"does not match the architecture in {Path(directory) / OPEN_CLIP_CONFIG}: {first}{more}")


__all__ = [
    "MMCLIP_CONFIG", "OPEN_CLIP_CONFIG", "WEIGHTS_FILE", "MMCLIPFile", "check_model_cfg", "check_weights_file",
    "model_config_with", "read_mmclip_model_config", "read_open_clip_config", "weights_mismatch",
]
