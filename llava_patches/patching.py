"""Reversible use-site patches: set a module attribute for the duration of a ``with`` block."""
from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

from llava_patches.compat import get_upstream_symbol


@contextlib.contextmanager
def patched(module: str, name: str, value: Any) -> Iterator[Any]:
    """Replace ``module.name`` by ``value`` inside the block and restore the original in ``finally``.

    Args:
        module: dotted upstream module path; the symbol must exist (checked with a clear error).
        name: attribute to replace at that use-site.
        value: the replacement.

    Yields:
        The original value.
    """
    original = get_upstream_symbol(module, name)
    mod = importlib.import_module(module)
    setattr(mod, name, value)
    try:
        yield original
    finally:
        setattr(mod, name, original)
