"""Process settings of the limiter: where Redis is, how long to wait for it, lease TTLs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Self


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    """How the gateway enforces limits; read once at start.

    - `redis_url`: shared store for every deployment with more than one replica (`redis://` or
      `rediss://`); None selects the in-process limiter (single gateway only).
    - `connect_timeout_s` / `socket_timeout_s`: redis-py socket bounds (no retries are made).
    - `decision_timeout_s`: the most one admission may wait for Redis before the department's
      failure mode applies.
    - `retry_interval_s`: after a Redis failure, how long decisions skip Redis before trying again.
    - `lease_ttl_s`: a concurrency lease not heartbeated for this long is released.
    - `reservation_ttl_s`: a reservation not completed for this long expires, fully charged.
    - `fallback_replicas`: when failing open, each replica enforces limits divided by this number,
      so N replicas together stay near the declared limits.
    - `key_prefix`: prepended to every Redis key (no braces: they would move the hash tag).
    """

    redis_url: str | None = None
    connect_timeout_s: float = 0.2
    socket_timeout_s: float = 0.2
    decision_timeout_s: float = 0.05
    retry_interval_s: float = 1.0
    lease_ttl_s: float = 30.0
    reservation_ttl_s: float = 900.0
    fallback_replicas: int = 1
    key_prefix: str = "llmgw:"
    max_connections: int = 64

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], path: str = "limits") -> Self:
        """Build from a parsed settings file section, naming the full key path in every error."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(
                f"{path}.{unknown[0]}: unknown key; expected one of {', '.join(sorted(known))}"
            )
        values: dict[str, object] = {}
        for name, value in data.items():
            where = f"{path}.{name}"
            if name == "redis_url":
                values[name] = _url(value, where)
            elif name == "key_prefix":
                values[name] = _prefix(value, where)
            elif name in ("fallback_replicas", "max_connections"):
                values[name] = _positive_int(value, where)
            else:
                values[name] = _positive_seconds(value, where)
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.lease_ttl_s > settings.reservation_ttl_s:
            raise ValueError(
                f"{path}.lease_ttl_s: must not exceed {path}.reservation_ttl_s "
                f"({settings.lease_ttl_s} > {settings.reservation_ttl_s})"
            )
        return settings

    def egress_urls(self) -> tuple[str, ...]:
        """Addresses this component sends data to, for the sovereignty allowlist check."""
        return (self.redis_url,) if self.redis_url else ()


def _url(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{where}: expected a redis://, rediss:// or unix:// URL string or null")
    return value


def _prefix(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a string")
    if "{" in value or "}" in value:
        raise ValueError(f"{where}: must not contain '{{' or '}}' (they would change the hash tag)")
    return value


def _positive_int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: expected an integer >= 1")
    return value


def _positive_seconds(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{where}: expected a number of seconds > 0")
    return float(value)
