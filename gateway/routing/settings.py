"""Process settings of routing: where workers are found, health, ejection, retries, the queue."""

from __future__ import annotations

from dataclasses import dataclass

from common.settings import (
    Invalid,
    SettingsError,
    each,
    host_port,
    positive,
    redis_url,
    setting,
)
from gateway.client_tls import ClientTls


def _at_least_one(value: float, key: str) -> None:
    if value < 1.0:
        raise SettingsError(f"{key}: must be at least 1.0, got {value}")


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    """How the gateway finds workers and spreads generations over them; read once at start.

    Discovery sources are combined; a target found by several is one worker. After
    `eject_after_failures` consecutive failed generations a worker is ejected for `eject_base_s`,
    doubling per repeated ejection up to `eject_max_s`, and is probed before it returns.
    """

    workers: tuple[str, ...] = setting((), doc="static host:port targets", check=each(host_port))
    connect_timeout_s: float = setting(
        2.0, doc="bounds every control call to a worker", check=positive
    )
    info_refresh_s: float = setting(
        5.0, doc="how often a worker's models and pool are re-read", check=positive
    )
    health_check_s: float = setting(1.0, doc="how often grpc.health.v1 is checked", check=positive)
    load_report_ms: int = setting(50, doc="loads stream in at most this often", check=positive)
    dns_names: tuple[str, ...] = setting(
        (),
        doc="name:port entries; every A/AAAA record of name is a worker (a headless Kubernetes "
        "Service)",
        check=each(host_port),
    )
    dns_refresh_s: float = setting(10.0, doc="how often dns_names are re-resolved", check=positive)
    redis_url: str | None = setting(
        None,
        doc="workers that register themselves (llm-worker serve --register-redis) are found here",
        check=redis_url,
    )
    redis_key_prefix: str = setting("llmgw:", doc="prefix of the workers' registrations")
    redis_refresh_s: float = setting(2.0, doc="how often registrations are scanned", check=positive)
    redis_timeout_s: float = setting(0.5, doc="bounds each Redis call", check=positive)
    max_attempts: int = setting(
        3, doc="tries per generation (retries only before the first token)", check=positive
    )
    eject_after_failures: int = setting(
        3, doc="consecutive failed generations that eject a worker", check=positive
    )
    eject_base_s: float = setting(2.0, doc="first ejection's length", check=positive)
    eject_max_s: float = setting(60.0, doc="longest ejection", check=positive)
    queue_size: int = setting(
        256,
        doc="generations that may wait (highest priority first) when every worker is full",
        check=positive,
    )
    queue_timeout_s: float = setting(30.0, doc="the most a generation waits", check=positive)
    affinity_prefix_chars: int = setting(
        512,
        doc="characters of the prompt hashed for affinity when no affinity key is given",
        check=positive,
    )
    affinity_load_factor: float = setting(
        1.25,
        doc="a worker stays preferred while its load is within this factor of the average",
        check=_at_least_one,
    )
    tls: ClientTls | None = setting(
        None,
        doc="TLS to every worker; without it connections are plaintext, which the residency "
        "guard allows only for loopback or explicitly allowed hosts",
    )

    def check(self) -> None:
        if self.eject_base_s > self.eject_max_s:
            raise Invalid(
                "eject_base_s",
                f"must not exceed {{path}}.eject_max_s ({self.eject_base_s} > {self.eject_max_s})",
            )

    def egress_targets(self) -> tuple[str, ...]:
        """Addresses routing sends data to, for the residency check at start.

        Workers found later (DNS records, Redis registrations) are checked one by one as they
        appear, by the guard handed to the registry.
        """
        redis = (self.redis_url,) if self.redis_url else ()
        return (*self.workers, *self.dns_names, *redis)


def split_target(target: str, where: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) as (host, port); the error names `where`."""
    host, sep, port = target.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"{where}: expected host:port, got {target!r}")
    return host, int(port)
