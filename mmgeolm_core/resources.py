"""Files shipped with the packages (recipes, configs), found by short name through ``importlib.resources``.

Every command that takes a recipe or config accepts a path or a shipped short name, and resolves it
here, so a name that works in one command works in all of them::

    resolve_shipped("data-recipe", "demo")        # .../data_recipes/recipes/demo.yaml
    resolve_shipped("mmclip-config", "tiny-cpu")  # .../mmclip_plugin/configs/tiny-cpu.yaml
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from mmgeolm_core.errors import InputError

# kind -> (package, folder inside it, file suffix)
SHIPPED: dict[str, tuple[str, str, str]] = {
    "data-recipe": ("data_recipes", "recipes", ".yaml"),
    "mmclip-config": ("mmclip_plugin", "configs", ".yaml"),
    "pipeline-recipe": ("mmgeolm", "recipes", ".yaml"),
    "zero-config": ("llava_patches", "zero_configs", ".json"),
}


def shipped_dir(kind: str) -> Path:
    """The folder holding the shipped files of ``kind``."""
    if kind not in SHIPPED:
        raise KeyError(f"unknown kind of shipped file {kind!r}; known: {', '.join(SHIPPED)}")
    package, folder, _ = SHIPPED[kind]
    return Path(str(resources.files(package).joinpath(folder)))


def shipped_names(kind: str) -> list[str]:
    """Short names of the shipped files of ``kind``, sorted."""
    suffix = SHIPPED[kind][2]
    return sorted(p.name[: -len(suffix)] for p in shipped_dir(kind).glob(f"*{suffix}"))


def resolve_shipped(kind: str, value: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """A file as given (relative paths against ``base``, default the working directory), else a shipped name.

    Raises:
        InputError: neither an existing file nor a shipped name (the message lists the shipped names).
    """
    text = os.fspath(value)
    if not text:
        raise InputError(f"expected a file or a shipped {kind} name, got an empty string")
    path = Path(text)
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    if path.is_file():
        return path.resolve()
    suffix = SHIPPED[kind][2]
    name = text[: -len(suffix)] if text.endswith(suffix) else text
    candidate = shipped_dir(kind) / f"{name}{suffix}"
    if "/" not in name and os.sep not in name and candidate.is_file():
        return candidate
    raise InputError(f"{text!r} is neither a file{f' (relative to {base})' if base else ''} nor a shipped "
                     f"{kind}; shipped: {', '.join(shipped_names(kind))}")
