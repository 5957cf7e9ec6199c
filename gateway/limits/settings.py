"""Process settings of the limiter: where Redis is, how long to wait for it, lease TTLs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Self

from common.settings import SettingsError, optional_str, positive, redis_url, section, typed


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    """How the gateway enforces limits; read once at start.

    - `redis_url`: shared store for every deployment with more than one replica (`redis://` or
      `rediss://`); None selects the in-process limiter (single gateway only).
    - `connect_timeout_s`: the most opening the connection to Redis may take.
    - `socket_timeout_s`: how long Redis may stay silent while commands wait before the
      connection is dropped and those commands fail (no retries are made).
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

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], path: str = "limits") -> Self:
        """Build from a parsed settings file section, naming the full key path in every error."""
        d = section(data, path, [f.name for f in fields(cls)])
        base = cls()
        seconds = {
            name: positive(typed(d, name, path, float, getattr(base, name)), f"{path}.{name}")
            for name in _SECONDS
        }
        settings = cls(
            redis_url=redis_url(optional_str(d, "redis_url", path), f"{path}.redis_url"),
            fallback_replicas=positive(
                typed(d, "fallback_replicas", path, int, base.fallback_replicas),
                f"{path}.fallback_replicas",
            ),
            key_prefix=_prefix(typed(d, "key_prefix", path, str, base.key_prefix), path),
            **seconds,
        )
        if settings.lease_ttl_s > settings.reservation_ttl_s:
            raise SettingsError(
                f"{path}.lease_ttl_s: must not exceed {path}.reservation_ttl_s "
                f"({settings.lease_ttl_s} > {settings.reservation_ttl_s})"
            )
        return settings

    def egress_urls(self) -> tuple[str, ...]:
        """Addresses this component sends data to, for the sovereignty allowlist check."""
        return (self.redis_url,) if self.redis_url else ()


_SECONDS = (
    "connect_timeout_s",
    "socket_timeout_s",
    "decision_timeout_s",
    "retry_interval_s",
    "lease_ttl_s",
    "reservation_ttl_s",
)


def _prefix(value: str, path: str) -> str:
    if "{" in value or "}" in value:
        raise SettingsError(
            f"{path}.key_prefix: must not contain '{{' or '}}' (they would move the hash tag)"
        )
    return value
