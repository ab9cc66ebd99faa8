"""Typed configuration: frozen ``kw_only`` dataclasses, YAML only as serialisation.

Every config class is a frozen, ``kw_only`` dataclass whose fields carry a
docstring (``field(metadata={"doc": ...})`` or a comment) and whose defaults
live in exactly one place: the dataclass. :func:`from_mapping` builds one from
parsed YAML, rejecting unknown keys and wrongly typed values *before* anything
runs, with a message naming the dotted key and what is allowed.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True, kw_only=True)
... class Opt:
...     lr: float = 1e-3
>>> from_mapping(Opt, {"lr": 3e-4}).lr
0.0003
>>> from_mapping(Opt, {"lrr": 1})
Traceback (most recent call last):
...
rlops.core.errors.ConfigError: unknown key 'lrr' (did you mean 'lr'?); allowed keys: lr
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from rlops.core.errors import ConfigError

T = TypeVar("T")


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against type ``tp`` and return it in canonical form."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"{key}: {value!r} is not allowed; choose one of "
                + ", ".join(repr(a) for a in allowed)
            )
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_mapping(tp, value, prefix=key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        args = get_args(tp)
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected a list of {len(args)} items, got {value!r}")
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        args = get_args(tp)
        if len(args) == 2:  # dict[K, V]: check keys and values too
            return {
                _convert(args[0], k, f"{key}"): _convert(args[1], v, f"{key}.{k}")
                for k, v in value.items()
            }
        return dict(value)
    raise ConfigError(f"{key}: unsupported config type {_type_name(tp)}")


def from_mapping(cls: type[T], data: Mapping[str, Any], *, prefix: str = "") -> T:
    """Build config dataclass ``cls`` from a mapping, validating every key.

    Args:
        cls: a frozen ``kw_only`` dataclass type.
        data: parsed YAML (or any mapping) with a subset of ``cls``'s fields.
        prefix: dotted path of ``data`` inside the whole config, for messages.

    Returns:
        The config instance; missing keys take the dataclass defaults.

    Raises:
        ConfigError: on an unknown key, a wrongly typed value, or a value the
            dataclass's ``__post_init__`` rejects.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            where = f" under '{prefix}'" if prefix else ""
            raise ConfigError(
                f"unknown key '{_join(prefix, str(key))}'{hint}; "
                f"allowed keys{where}: {', '.join(names)}"
            )
        kwargs[key] = _convert(hints[key], value, _join(prefix, key))
    try:
        return typing.cast(T, cls(**kwargs))
    except ConfigError as exc:
        if prefix and not str(exc).startswith(prefix):
            raise ConfigError(f"{prefix}.{exc}") from None
        raise


def to_mapping(config: Any) -> dict[str, Any]:
    """Return a config dataclass as plain YAML-able data (tuples become lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    result = plain(config)
    assert isinstance(result, dict)
    return result


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested mapping.

    Args:
        data: the parsed config mapping (not modified).
        overrides: strings like ``"algo.lr=3e-4"`` or ``"env.id=gym:CartPole-v1"``.

    Returns:
        A new nested dict with the overrides applied.

    Raises:
        ConfigError: if an override is not of the form ``key=value``.

    >>> apply_overrides({"algo": {"lr": 1e-3}}, ["algo.lr=3e-4", "seed=2"])
    {'algo': {'lr': 0.0003}, 'seed': 2}
    """
    result: dict[str, Any] = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. algo.lr=3e-4")
        try:
            value = parse_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return result


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``3e-4`` as a float, as YAML 1.2 (and users) do.

    PyYAML implements YAML 1.1, where a float needs a dot (``3.0e-4``).
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """Parse YAML text with the config loader (``3e-4`` is a float)."""
    return yaml.load(text, Loader=_Loader)


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML config file into a mapping.

    Raises:
        ConfigError: if the file is missing, unreadable, not YAML, or not a mapping.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=_Loader)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".splitlines()[0]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of keys, got {type(data).__name__}"
        )
    return data


def check(condition: bool, key: str, message: str) -> None:
    """Raise ``ConfigError("<key>: <message>")`` unless ``condition`` holds.

    Used in ``__post_init__`` of config dataclasses for range checks.
    """
    if not condition:
        raise ConfigError(f"{key}: {message}")
