"""``Registry``: the one registry class behind every ``register_*`` / ``list_*`` / ``get_*`` trio.

Example::

    _FAMILIES: Registry[FamilyFn] = Registry("diagram family")

    @_FAMILIES.register("square")
    def square(rng): ...

    _FAMILIES.names()      # sorted names
    _FAMILIES.get("sqare")  # UnknownNameError: unknown diagram family 'sqare'; known: square
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from mmgeolm_core.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind: registering a taken name raises, an unknown name raises listing the known ones.

    Args:
        kind: what an entry is, for messages ("diagram family", "loss").
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, entry: T) -> T: ...

    def register(self, name, entry=None):
        """Register ``entry`` as ``name``; without ``entry``, a decorator that registers what it decorates.

        Raises:
            ValueError: ``name`` is taken, or is not a non-empty string.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return add if entry is None else add(entry)

    def unregister(self, name: str) -> T:
        """Remove and return the entry ``name`` (for plugins and tests that register temporarily)."""
        return self._entries.pop(self._check(name))

    def get(self, name: str) -> T:
        """The entry registered as ``name``.

        Raises:
            UnknownNameError: no entry has that name (the message lists the known ones).
        """
        return self._entries[self._check(name)]

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def _check(self, name: str) -> str:
        if name not in self._entries:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or 'none'}")
        return name

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
