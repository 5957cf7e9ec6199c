"""Typed readers for settings mappings: every error names the full key path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """A settings file or environment variable is invalid; the message names the key."""


def section(data: object, path: str, allowed: Sequence[str]) -> Mapping[str, object]:
    """`data` as a mapping with only `allowed` keys (None means empty)."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise SettingsError(f"{path}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - set(allowed))
    if unknown:
        raise SettingsError(
            f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}"
        )
    return data


def mapping(data: object, path: str) -> Mapping[str, object]:
    """`data` as a mapping (None means empty); its own reader checks the keys."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise SettingsError(f"{path}: expected a mapping, got {type(data).__name__}")
    return data


def typed(data: Mapping[str, object], key: str, path: str, kind: type[T], default: T) -> T:
    """`data[key]` checked to be of `kind` (ints accepted for floats), or `default` if absent."""
    value = data.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SettingsError(f"{path}.{key}: expected {kind.__name__}, got {value!r}")
    return value


def optional_str(data: Mapping[str, object], key: str, path: str) -> str | None:
    """`data[key]` as a non-empty string, or None if absent."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise SettingsError(f"{path}.{key}: expected a non-empty string, got {value!r}")
    return value


def str_list(data: Mapping[str, object], key: str, path: str) -> tuple[str, ...]:
    """`data[key]` as a list of strings (empty if absent)."""
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SettingsError(f"{path}.{key}: expected a list of strings, got {value!r}")
    return tuple(value)


def positive(value: T, path: str) -> T:
    """`value` if it is > 0."""
    if not (isinstance(value, int | float) and value > 0):
        raise SettingsError(f"{path}: must be greater than 0, got {value!r}")
    return value


def redis_url(value: str | None, path: str) -> str | None:
    """`value` if it is None or a redis://, rediss:// or unix:// URL."""
    if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError(f"{path}: expected a redis://, rediss:// or unix:// URL")
    return value
