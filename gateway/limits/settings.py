"""Process settings of the limiter: where Redis is, how long to wait for it, lease TTLs."""

from __future__ import annotations

from dataclasses import dataclass

from common.settings import Invalid, SettingsError, positive, redis_url, setting


def _prefix(value: str, key: str) -> None:
    if "{" in value or "}" in value:
        raise SettingsError(f"{key}: must not contain '{{' or '}}' (they would move the hash tag)")


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    """How the gateway enforces limits; read once at start."""

    redis_url: str | None = setting(
        None,
        doc="shared store for every deployment with more than one replica (redis://, rediss:// "
        "or unix://); null selects the in-process limiter (single gateway only)",
        check=redis_url,
    )
    connect_timeout_s: float = setting(
        0.2, doc="the most opening the connection to Redis may take", check=positive
    )
    socket_timeout_s: float = setting(
        0.2,
        doc="how long Redis may stay silent while commands wait before the connection is dropped "
        "and those commands fail (no retries are made)",
        check=positive,
    )
    decision_timeout_s: float = setting(
        0.05,
        doc="the most one admission may wait for Redis before the department's failure mode "
        "applies",
        check=positive,
    )
    retry_interval_s: float = setting(
        1.0,
        doc="after a Redis failure, how long decisions skip Redis before trying again",
        check=positive,
    )
    lease_ttl_s: float = setting(
        30.0, doc="a concurrency lease not heartbeated for this long is released", check=positive
    )
    reservation_ttl_s: float = setting(
        900.0,
        doc="a reservation not completed for this long expires, fully charged",
        check=positive,
    )
    fallback_replicas: int = setting(
        1,
        doc="when failing open, each replica enforces limits divided by this number, so N "
        "replicas together stay near the declared limits",
        check=positive,
    )
    key_prefix: str = setting(
        "llmgw:",
        doc="prepended to every Redis key (no braces: they would move the hash tag)",
        check=_prefix,
    )

    def check(self) -> None:
        if self.lease_ttl_s > self.reservation_ttl_s:
            raise Invalid(
                "lease_ttl_s",
                f"must not exceed {{path}}.reservation_ttl_s "
                f"({self.lease_ttl_s} > {self.reservation_ttl_s})",
            )

    def egress_urls(self) -> tuple[str, ...]:
        """Addresses this component sends data to, for the sovereignty allowlist check."""
        return (self.redis_url,) if self.redis_url else ()
