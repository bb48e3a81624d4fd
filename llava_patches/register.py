"""Make upstream LLaVA accept ``mmclip:<checkpoint>`` towers and Qwen2 / Qwen2.5 language models.

Upstream ``llava/model/llava_arch.py`` imports ``build_vision_tower`` *by name*, so that module-level
binding is the one that matters (it builds the tower in ``LlavaMetaModel.__init__`` on reload and in
``initialize_vision_modules`` during training); the definition in ``multimodal_encoder/builder.py`` is
patched too for code that calls it directly. Each patched binding gets a dispatcher that builds an
:class:`mmclip_plugin.tower.vision_tower.MMCLIPVisionTower` for our names and hands every other name to the
original function it replaced.

:func:`register` also adds the Qwen names (:mod:`llava_patches.qwen2`, :mod:`llava_patches.qwen_chat`):
``AutoConfig`` / ``AutoModelForCausalLM`` resolve ``llava_qwen`` to ``LlavaQwen2ForCausalLM``, and
``llava.conversation.conv_templates`` gains ``qwen_2``, ``qwen_2_5`` and ``qwen_1_5``. Nothing happens at
import time; :func:`register` is explicit, idempotent and undone by :func:`unregister` or on leaving
:func:`registered`.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Callable, Iterator
from typing import Any

from llava_patches.compat import check_upstream, get_upstream_symbol

# The bindings we replace, the one actually used first.
BUILDER_SITES: tuple[tuple[str, str], ...] = (
    ("llava.model.llava_arch", "build_vision_tower"),
    ("llava.model.multimodal_encoder.builder", "build_vision_tower"),
)
_MARKER = "__mmclip_original__"
_ORIGINALS: dict[tuple[str, str], Callable[..., Any]] = {}


def tower_name_of(vision_tower_cfg: Any) -> Any:
    """The tower name the way upstream reads it: ``mm_vision_tower``, else ``vision_tower``."""
    return getattr(vision_tower_cfg, "mm_vision_tower", getattr(vision_tower_cfg, "vision_tower", None))


def _make_dispatcher(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def build_vision_tower(vision_tower_cfg: Any, **kwargs: Any) -> Any:
        from mmclip_plugin.tower.vision_tower import MMCLIPVisionTower, is_mmclip_name

        name = tower_name_of(vision_tower_cfg)
        if isinstance(name, str) and is_mmclip_name(name):
            return MMCLIPVisionTower(name, args=vision_tower_cfg, **kwargs)
        return original(vision_tower_cfg, **kwargs)

    setattr(build_vision_tower, _MARKER, original)
    return build_vision_tower


def _module_of(module: str) -> Any:
    return importlib.import_module(module)


def _builder_registered() -> bool:
    return all(hasattr(get_upstream_symbol(m, n), _MARKER) for m, n in BUILDER_SITES)


def is_registered() -> bool:
    """Whether everything :func:`register` installs is in place (tower builder, Qwen classes and templates)."""
    from llava_patches.qwen2 import is_auto_registered
    from llava_patches.qwen_chat import templates_registered

    return _builder_registered() and is_auto_registered() and templates_registered()


def register() -> None:
    """Install the ``mmclip:`` dispatcher at upstream's builder bindings and the Qwen names (idempotent).

    Raises:
        UpstreamIncompatibleError: an upstream symbol the plugin needs is missing (checked first).
        ValueError: another package registered ``llava_qwen`` or a ``qwen_*`` template first.
    """
    check_upstream(BUILDER_SITES)
    from llava_patches.qwen2 import register_auto_classes, unregister_auto_classes
    from llava_patches.qwen_chat import register_templates

    added = register_auto_classes()
    try:
        register_templates()
    except ValueError:
        if added:  # leave nothing half-registered
            unregister_auto_classes()
        raise
    for module, name in BUILDER_SITES:
        current = get_upstream_symbol(module, name)
        if hasattr(current, _MARKER):
            continue
        _ORIGINALS[(module, name)] = current
        setattr(_module_of(module), name, _make_dispatcher(current))


def unregister() -> None:
    """Restore the original builder functions and remove the Qwen names (a no-op when nothing is registered).

    Raises:
        RuntimeError: someone else replaced our dispatcher in the meantime; restoring would drop their patch.
    """
    from llava_patches.qwen2 import unregister_auto_classes
    from llava_patches.qwen_chat import unregister_templates

    unregister_templates()
    unregister_auto_classes()
    for module, name in BUILDER_SITES:
        original = _ORIGINALS.get((module, name))
        if original is None:
            continue
        current = get_upstream_symbol(module, name)
        if getattr(current, _MARKER, None) is not original:
            raise RuntimeError(
                f"{module}.{name} was replaced by {current!r} after llava_patches.register(); "
                "undo that patch first, then call unregister()"
            )
        setattr(_module_of(module), name, original)
        del _ORIGINALS[(module, name)]


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """Context manager: register on entry, and on exit restore the state found on entry (in ``finally``)."""
    was_registered = bool(_ORIGINALS) and is_registered()  # by an outer register(), which stays in charge
    register()
    try:
        yield
    finally:
        if not was_registered:
            unregister()
