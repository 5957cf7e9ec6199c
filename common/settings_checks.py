"""Validators for settings fields: `setting(..., check=positive)`; each error names the key."""

from __future__ import annotations

import ipaddress
from typing import Any

from common.settings import Check, SettingsError


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


def parse_listen(listen: str) -> tuple[str, int]:
    """Split `host:port` or `[v6]:port` into an IP address and a port (0 picks a free one)."""
    host, sep, port_text = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"expected host:port such as 127.0.0.1:9464, got {listen!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"expected an IP address to listen on, got {host!r}") from None
    return host, int(port_text)


def ip_listen(value: str | None, key: str) -> None:
    """A settings check: `value` (if set) is `host:port` with an IP address, as parse_listen."""
    if value is not None:
        try:
            parse_listen(value)
        except ValueError as err:
            raise SettingsError(f"{key}: {err}") from None
