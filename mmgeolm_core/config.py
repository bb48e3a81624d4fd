"""Configuration: YAML read at the edge, one builder from mappings to validated dataclasses.

Every config of the project (data recipe, MMCLIP training config, ablation recipe, pipeline recipe) is
a tree of dataclasses. :func:`build_config` fills one from a mapping: unknown keys, values of the wrong
type (checked against the annotations), NaN and infinities are refused, then each dataclass's
``__post_init__`` checks its ranges and relations with :func:`check` and friends. Every failure is a
:class:`ConfigError` naming the file, the dotted key, the value and what was expected.

Example::

    @dataclass
    class Optim:
        lr: float = 1e-3

        def __post_init__(self):
            check_number(self.lr, "lr", gt=0)

    cfg = build_config(Optim, load_yaml_mapping("train.yaml"), source="train.yaml")
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from mmgeolm_core.errors import InputError
from mmgeolm_core.io import atomic_write_text, read_text


class ConfigError(InputError):
    """A configuration key or value is invalid.

    Args:
        reason: what is wrong and what was expected (``expected a number > 0, got -1``).
        key: the dotted key (``optim.lr``); set by :func:`build_config` when raised by ``__post_init__``.
        source: the file (or other origin) the values came from.
    """

    def __init__(self, reason: str, *, key: str | None = None, source: str | None = None):
        self.reason, self.key, self.source = reason, key, source
        parts = ([source] if source else []) + ([f"key '{key}'"] if key else [])
        super().__init__(": ".join([*parts, reason]))

    def located(self, source: str, prefix: str = "") -> ConfigError:
        """This error with the file and the key's dotted prefix filled in (once: inner builds win)."""
        if self.source is not None:
            return self
        key = _join(prefix, self.key) if self.key else (prefix or None)
        return ConfigError(self.reason, key=key, source=source)


# --------------------------------------------------------------------------- checks for __post_init__


def check(ok: bool, key: str, expected: str, value: Any) -> None:
    """Raise ``ConfigError`` for ``key`` unless ``ok``: ``expected <expected>, got <value>``."""
    if not ok:
        raise ConfigError(f"expected {expected}, got {value!r}", key=key)


def check_number(value: Any, key: str, *, ge: float | None = None, gt: float | None = None,
                 le: float | None = None, lt: float | None = None, integer: bool = False) -> None:
    """``value`` is a finite number (an integer when ``integer``) within the given bounds."""
    bounds = [f"{op} {b}" for op, b in ((">=", ge), (">", gt), ("<=", le), ("<", lt)) if b is not None]
    expected = ("an integer" if integer else "a number") + (f" {' and '.join(bounds)}" if bounds else "")
    ok = (isinstance(value, int) if integer else isinstance(value, int | float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    ok = ok and (ge is None or value >= ge) and (gt is None or value > gt)
    ok = ok and (le is None or value <= le) and (lt is None or value < lt)
    check(ok, key, expected, value)


def check_choice(value: Any, key: str, choices: Sequence[Any]) -> None:
    """``value`` is one of ``choices``."""
    check(value in choices, key, f"one of {list(choices)}", value)


# --------------------------------------------------------------------------- building


def internal_field(default: Any) -> Any:
    """A dataclass field set by code, never by a config file (e.g. the file a config came from)."""
    return dataclasses.field(default=default, repr=False, compare=False, metadata={"internal": True})


def build_config(cls: type, data: Mapping[str, Any] | None, source: str = "<dict>", prefix: str = "",
                 internal: Mapping[str, Any] | None = None) -> Any:
    """Build dataclass ``cls`` from a (nested) mapping, checking keys and value types.

    Args:
        cls: the dataclass to build (nested dataclass fields are built recursively).
        data: the values; missing keys keep their defaults.
        source: where the values came from (a file name), named in every error.
        prefix: dotted path of ``cls`` inside the root config, for error messages.
        internal: values of the fields declared with :func:`internal_field` (not settable from ``data``).

    Raises:
        ConfigError: an unknown key, a value of the wrong type, or a failed ``__post_init__`` check.
    """
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping of keys, got {data!r:.80}", key=prefix or None, source=source)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"unknown key; valid keys{f' under {prefix!r}' if prefix else ''}: "
                          f"{', '.join(sorted(fields))}", key=_join(prefix, str(unknown[0])), source=source)
    hints = typing.get_type_hints(cls)
    kwargs = {name: convert(value, hints[name], _join(prefix, name), source) for name, value in data.items()}
    try:
        return cls(**kwargs, **(internal or {}))
    except ConfigError as exc:
        raise exc.located(source, prefix) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc), key=prefix or None, source=source) from exc


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is Literal:
        return f"one of {list(args)}"
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} items"
    if origin in (list, Sequence, tuple):
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin in (dict, Mapping):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


_BARE: dict[Any, Any] = {dict: dict[Any, Any], list: list[Any], tuple: tuple[Any, ...]}


def convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """``value`` checked against annotation ``tp`` (ints become floats, numeric strings numbers).

    Raises:
        ConfigError: the value does not fit the annotation.
    """
    if tp in _BARE:  # a bare ``dict`` / ``list`` / ``tuple`` annotation (open_clip's config classes have some)
        tp = _BARE[tp]
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    def bad() -> ConfigError:
        return ConfigError(f"expected {_type_name(tp)}, got {value!r:.80} ({type(value).__name__})",
                           key=key, source=source)

    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return build_config(tp, value, source, key)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is not type(None):
                try:
                    return convert(value, option, key, source)
                except ConfigError:
                    continue
        raise bad()
    if origin is Literal:
        if value not in args:
            raise bad()
        return value
    if origin in (list, Sequence, tuple):
        if not isinstance(value, list | tuple):
            raise bad()
        if origin is tuple and args and args[-1] is not Ellipsis:  # a fixed-length tuple
            if len(value) != len(args):
                raise bad()
            return tuple(convert(v, t, f"{key}[{i}]", source) for i, (v, t) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [convert(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise bad()
        kt, vt = args if args else (Any, Any)
        return {convert(k, kt, key, source): convert(v, vt, f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad() from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise bad()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    if tp is type(None):
        if value is not None:
            raise bad()
        return None
    raise ConfigError(f"unsupported annotation {tp!r} (a bug in the config class)", key=key, source=source)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML- and JSON-safe dict of a config dataclass (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(cfg))


# --------------------------------------------------------------------------- YAML edge


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that repeats a key (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (each key may appear once per mapping)", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> Any:
    """YAML text to Python data, duplicate keys refused.

    Raises:
        ConfigError: not valid YAML (naming the line).
    """
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}not valid YAML: {problem}", source=source) from None


def load_yaml_mapping(path: str | os.PathLike, what: str = "config") -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping (an empty file is refused: it would mean all defaults).

    Raises:
        ConfigError: unreadable, not UTF-8, not YAML, empty, or not a mapping (naming the file).
    """
    path = Path(path)
    try:
        text = read_text(path)
    except OSError as exc:
        raise ConfigError(f"cannot read the {what}: {exc.strerror or exc}", source=str(path)) from None
    except InputError as exc:
        raise ConfigError(str(exc)) from None
    data = parse_yaml(text, str(path))
    if data is None:
        raise ConfigError(f"the {what} is empty (expected a mapping of keys)", source=str(path))
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping of keys at the top level, got {type(data).__name__}", source=str(path))
    return dict(data)


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["data.train=DIR", "optim.lr=1e-3"]`` as a nested mapping (each value parsed as YAML).

    Raises:
        ConfigError: an override that is not ``key=value`` or whose value is not YAML.
    """
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value (nested keys dotted, e.g. data.train=DIR)")
        value = parse_yaml(raw, f"override {item!r}") if raw.strip() else ""
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} was already given a value, not a section")
            node = child
        node[parts[-1]] = value
    return nested


def merge_dicts(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive merge: nested mappings merge, everything else is replaced."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write a config dataclass as YAML, atomically (so any output says how it was made)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True))
