"""One declarative reader for every settings file: each field declares its default, checks and doc.

A settings class is a frozen dataclass whose fields are declared with `setting(...)`; nested
sections are dataclass-typed fields. `read(cls, data, path)` walks the fields, converts and checks
every value, refuses unknown keys (listing the allowed ones), runs the class's `check()` hook for
combinations of fields, and names the full key path (`routing.tls.ca_file: ...`) in every error.
`load_file` adds the file's name. Nothing here imports YAML until a file is actually read.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

T = TypeVar("T")
Check = Callable[[Any, str], None]
"""A validator: `(value, key path)`, raising `SettingsError` that names the path."""


class SettingsError(ValueError):
    """A settings file or environment variable is invalid; the message names the key."""


class Invalid(SettingsError):
    """A problem with `key` found by a class's `check()`; `read` reports it under its path.

    `{path}` in the problem stands for the section's path, to name a sibling key in full.
    """

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(str(self.under("")))

    def under(self, path: str) -> SettingsError:
        """This problem as reported for a section read at `path`."""
        problem = self.problem.replace("{path}.", f"{path}." if path else "")
        return SettingsError(f"{_join(path, self.key)}: {problem}" if path or self.key else problem)


def setting(
    default: Any = dataclasses.MISSING,
    *,
    doc: str,
    check: Check | tuple[Check, ...] = (),
    expect: str | None = None,
    parse: Callable[[object, str], Any] | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """Declare a settings field: its default (none: required), validators and one-line doc.

    `expect` replaces the type's description in "expected ..." errors and in the documentation;
    `parse(value, key)` replaces the reader's conversion for a type it does not know.
    """
    checks = check if isinstance(check, tuple) else (check,)
    metadata = {"doc": doc, "checks": checks, "expect": expect, "parse": parse}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def read(cls: type[T], data: object, path: str = "") -> T:
    """An instance of the settings class `cls` read from a parsed mapping (None means empty)."""
    where = path or "settings"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SettingsError(f"{where}: expected a mapping, got {type(data).__name__}")
    declared = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(str(key) for key in data if key not in declared)
    if unknown:
        raise SettingsError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(declared)}"
        )
    hints = _hints(cls)
    values: dict[str, object] = {}
    for name, declared_field in declared.items():
        key = _join(path, name)
        if name not in data:
            if _required(declared_field):
                hint = hints[name]
                what = "a string" if hint in (str, Path) else describe(declared_field, hint)
                doc = declared_field.metadata.get("doc")
                raise SettingsError(f"{key}: expected {what} ({doc}); the key is required")
            continue
        parse = declared_field.metadata.get("parse")
        value = (
            parse(data[name], key)
            if parse is not None
            else _convert(hints[name], data[name], key, declared_field.metadata.get("expect"))
        )
        for validate in declared_field.metadata.get("checks", ()):
            validate(value, key)
        values[name] = value
    try:
        result = cls(**values)
        hook = getattr(result, "check", None)
        if hook is not None:
            hook()
    except Invalid as problem:
        raise problem.under(path) from None
    return result


def parse_file(file: Path) -> object:
    """The parsed YAML document in `file`; errors name the file."""
    from common import yamlsafe  # here, not at import: a worker without --config loads no YAML

    try:
        return yamlsafe.load(file.read_text(encoding="utf-8"), str(file))
    except OSError as exc:
        raise SettingsError(f"{file}: cannot read settings file: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise SettingsError(f"{file}: not valid UTF-8; save it as UTF-8") from None
    except yamlsafe.YamlProblem as problem:
        where = f"{file}:{problem.line}" if problem.line else str(file)
        raise SettingsError(f"{where}: {problem.message}") from None


def load_file(cls: type[T], file: Path, path: str = "") -> T:
    """Read `cls` from a YAML file; every error starts with the file's name."""
    data = parse_file(file)
    try:
        return read(cls, data, path)
    except SettingsError as exc:
        raise SettingsError(f"{file}: {exc}") from None


def load(cls: type[T], file: Path | None, overrides: Mapping[str, object] | None = None) -> T:
    """`cls` from the YAML `file` (if any), with `overrides` applied over it before reading.

    `overrides` maps dotted keys (`tls.cert_file`) to values, None meaning "not given": command-
    line flags, so that they are checked exactly as the file is. Errors name the file.
    """
    data = {} if file is None else parse_file(file)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SettingsError(f"{file}: expected a mapping, got {type(data).__name__}")
    data = _merged(data, {k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return read(cls, data)
    except SettingsError as exc:
        raise SettingsError(f"{file}: {exc}" if file else str(exc)) from None


def _merged(data: Mapping[Any, object], overrides: Mapping[str, object]) -> dict[Any, object]:
    merged = dict(data)
    nested: dict[str, dict[str, object]] = {}
    for key, value in overrides.items():
        head, dot, rest = key.partition(".")
        if dot:
            nested.setdefault(head, {})[rest] = value
        else:
            merged[head] = value
    for head, inner in nested.items():
        section = merged.get(head)
        if section is None:
            section = {}
        if isinstance(section, Mapping):  # otherwise reading reports the section's type
            merged[head] = _merged(section, inner)
    return merged


def describe(declared: dataclasses.Field[Any], hint: Any) -> str:
    """What a field holds, in words ("float", "a list of strings", "one of 'json', 'text'")."""
    return declared.metadata.get("expect") or _describe(hint)


def walk(cls: type[Any], path: str = "") -> Iterator[tuple[str, Any, dataclasses.Field[Any]]]:
    """Every key of `cls` (sections before their keys) as (full path, type hint, field)."""
    hints = _hints(cls)
    for declared in dataclasses.fields(cls):
        if not declared.init:
            continue
        key = _join(path, declared.name)
        yield key, hints[declared.name], declared
        section = _section_of(hints[declared.name])
        if section is not None:
            yield from walk(section, key)


def section_type(hint: Any) -> type[Any] | None:
    """The settings class a field's type names (`X` or `X | None`), if it is a section."""
    return _section_of(hint)


# Validators: `check=` takes any of these.


def positive(value: float, key: str) -> None:
    if not value > 0:
        raise SettingsError(f"{key}: must be greater than 0, got {value!r}")


def non_negative(value: float, key: str) -> None:
    if value < 0:
        raise SettingsError(f"{key}: must be 0 or greater, got {value!r}")


def non_empty(value: str, key: str) -> None:
    if not value.strip():
        raise SettingsError(f"{key}: must not be empty")


def redis_url(value: str | None, key: str) -> None:
    if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError(f"{key}: expected a redis://, rediss:// or unix:// URL")


def host_port(value: str, key: str) -> None:
    """`host:port` or `[v6]:port` with a port in 1..65535."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"{key}: expected host:port, got {value!r}")


def each(check: Check) -> Check:
    """Apply `check` to every item of a list, naming the item's index."""

    def check_items(values: tuple[Any, ...], key: str) -> None:
        for i, value in enumerate(values):
            check(value, f"{key}[{i}]")

    return check_items


# Conversion.

_NONE = type(None)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path and key else path or key


def _required(declared: dataclasses.Field[Any]) -> bool:
    return (
        declared.default is dataclasses.MISSING and declared.default_factory is dataclasses.MISSING
    )


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _optional(hint: Any) -> Any | None:
    """`X` when `hint` is `X | None`, else None."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not _NONE]
        if len(args) == 1 and len(get_args(hint)) == 2:
            return args[0]
    return None


def _section_of(hint: Any) -> type[Any] | None:
    inner = _optional(hint) or hint
    return inner if isinstance(inner, type) and dataclasses.is_dataclass(inner) else None


def _describe(hint: Any) -> str:
    inner = _optional(hint)
    if inner is not None:
        return "a non-empty string" if inner is str else f"{_describe(inner)} or null"
    if hint is Path:
        return "a string (a path)"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in hint)
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if get_origin(hint) is tuple:
        return f"a list of {_plural(get_args(hint)[0])}"
    if get_origin(hint) in (Mapping, dict):
        key, value = get_args(hint)
        return f"a mapping of {_describe(key)} to {_describe(value)}"
    if _section_of(hint) is not None:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _plural(hint: Any) -> str:
    return {str: "strings", int: "integers", float: "numbers"}.get(hint, _describe(hint))


def _wrong(key: str, expect: str | None, hint: Any, value: object) -> SettingsError:
    return SettingsError(f"{key}: expected {expect or _describe(hint)}, got {value!r}")


def _convert(hint: Any, value: object, key: str, expect: str | None) -> Any:
    inner = _optional(hint)
    if inner is not None:
        if value is None:
            # A section given as an empty key (`metrics:`) means "this section, with defaults".
            return read(inner, {}, key) if _section_of(inner) is not None else None
        if inner is str and (not isinstance(value, str) or not value):
            raise _wrong(key, expect, hint, value)
        return _convert(inner, value, key, expect)
    section = _section_of(hint)
    if section is not None:
        return read(section, value, key)
    if hint is bool:
        if not isinstance(value, bool):
            raise _wrong(key, expect, hint, value)
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _wrong(key, expect, hint, value)
        return value
    if hint is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _wrong(key, expect, hint, value)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _wrong(key, expect, hint, value)
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise _wrong(key, expect, hint, value)
        return Path(value)
    if get_origin(hint) is Literal:
        if value not in get_args(hint):
            raise _wrong(key, expect, hint, value)
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise _wrong(key, expect, hint, value) from None
    if get_origin(hint) is tuple:
        item = get_args(hint)[0]
        if not isinstance(value, list):
            raise _wrong(key, expect, hint, value)
        if item is str and not all(isinstance(v, str) for v in value):
            raise _wrong(key, expect, hint, value)
        return tuple(_convert(item, v, f"{key}[{i}]", None) for i, v in enumerate(value))
    if get_origin(hint) in (Mapping, dict):
        key_type, value_type = get_args(hint)
        if not isinstance(value, Mapping) or not value:
            raise SettingsError(f"{key}: expected {expect or 'a non-empty mapping'}, got {value!r}")
        return {
            _convert(key_type, k, f"{key}.{k}", None): _convert(value_type, v, f"{key}.{k}", None)
            for k, v in value.items()
        }
    raise TypeError(f"{key}: no reader for settings type {hint!r}")  # a declaration bug
