"""The benchmark registry: ``geoqa``, ``mathvista``, ``wemath``, ``mmmath`` and ``probe``, by name."""
from __future__ import annotations

import importlib
from collections.abc import Callable

from mmgeolm.bench.base import Benchmark
from mmgeolm_core.registry import Registry

_BENCHMARKS: Registry[type[Benchmark]] = Registry("benchmark")
_BUILTIN = ("geoqa", "mathvista", "wemath", "mmmath", "probe")


def register_benchmark(name: str) -> Callable[[type[Benchmark]], type[Benchmark]]:
    """Class decorator registering a :class:`~mmgeolm.bench.base.Benchmark` under ``name`` (a duplicate raises)."""
    def add(cls: type[Benchmark]) -> type[Benchmark]:
        cls.name = name
        return _BENCHMARKS.register(name, cls)
    return add


def _load_builtins() -> None:
    for module in _BUILTIN:
        importlib.import_module(f"mmgeolm.bench.{module}")


def list_benchmarks() -> list[str]:
    """Registered benchmark names, sorted."""
    _load_builtins()
    return _BENCHMARKS.names()


def get_benchmark(name: str) -> Benchmark:
    """A new instance of the benchmark ``name``.

    Raises:
        UnknownNameError: no benchmark has that name (the message lists the known ones).
    """
    _load_builtins()
    return _BENCHMARKS.get(name)()
