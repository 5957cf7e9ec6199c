"""Process settings of routing: where workers are found, health, ejection, retries, the queue."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Self

from common.settings import (
    SettingsError,
    optional_str,
    positive,
    redis_url,
    section,
    str_list,
    typed,
)
from gateway.client_tls import ClientTls

_SECONDS = (
    "connect_timeout_s",
    "info_refresh_s",
    "health_check_s",
    "dns_refresh_s",
    "redis_refresh_s",
    "redis_timeout_s",
    "eject_base_s",
    "eject_max_s",
    "queue_timeout_s",
)
_COUNTS = (
    "load_report_ms",
    "max_attempts",
    "eject_after_failures",
    "queue_size",
    "affinity_prefix_chars",
)


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    """How the gateway finds workers and spreads generations over them; read once at start.

    Discovery (all sources are combined; a target found by several is one worker):
    - `workers`: static `host:port` targets.
    - `dns_names`: `name:port` entries; every A/AAAA record of `name` is a worker (a headless
      Kubernetes Service), re-resolved every `dns_refresh_s`.
    - `redis_url`: workers that register themselves (`llm-worker serve --register-redis`) under
      `redis_key_prefix`, scanned every `redis_refresh_s`, each Redis call bounded by
      `redis_timeout_s`.

    Health: `connect_timeout_s` bounds every control call to a worker; `grpc.health.v1` is checked
    every `health_check_s`; loads stream in at most every `load_report_ms`; `info_refresh_s` is how
    often a worker's models and pool are re-read. After `eject_after_failures` consecutive failed
    generations a worker is ejected for `eject_base_s`, doubling per repeated ejection up to
    `eject_max_s`, and is probed before it returns.

    Calls: at most `max_attempts` tries per generation (retries only before the first token); when
    every worker is full, up to `queue_size` generations wait (highest priority first), at most
    `queue_timeout_s` each. Affinity hashes the first `affinity_prefix_chars` characters of the
    prompt when no affinity key is given, and keeps a worker preferred while its load stays within
    `affinity_load_factor` times the average.

    Transport: `tls` (ca_file, optional cert_file/key_file for mutual TLS, server_name) encrypts
    every connection to a worker; without it connections are plaintext, which the residency
    guard allows only for loopback or explicitly allowed hosts.
    """

    workers: tuple[str, ...] = ()
    connect_timeout_s: float = 2.0
    info_refresh_s: float = 5.0
    health_check_s: float = 1.0
    load_report_ms: int = 50
    dns_names: tuple[str, ...] = ()
    dns_refresh_s: float = 10.0
    redis_url: str | None = None
    redis_key_prefix: str = "llmgw:"
    redis_refresh_s: float = 2.0
    redis_timeout_s: float = 0.5
    max_attempts: int = 3
    eject_after_failures: int = 3
    eject_base_s: float = 2.0
    eject_max_s: float = 60.0
    queue_size: int = 256
    queue_timeout_s: float = 30.0
    affinity_prefix_chars: int = 512
    affinity_load_factor: float = 1.25
    tls: ClientTls | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, object] | object, path: str = "routing") -> Self:
        """Build from a parsed settings file section, naming the full key path in every error."""
        d = section(data, path, [f.name for f in fields(cls)])
        base = cls()
        seconds = {
            name: positive(typed(d, name, path, float, getattr(base, name)), f"{path}.{name}")
            for name in _SECONDS
        }
        counts = {
            name: positive(typed(d, name, path, int, getattr(base, name)), f"{path}.{name}")
            for name in _COUNTS
        }
        factor = typed(d, "affinity_load_factor", path, float, base.affinity_load_factor)
        if factor < 1.0:
            raise SettingsError(f"{path}.affinity_load_factor: must be at least 1.0, got {factor}")
        settings = cls(
            workers=_targets(str_list(d, "workers", path), f"{path}.workers"),
            dns_names=_targets(str_list(d, "dns_names", path), f"{path}.dns_names"),
            redis_url=redis_url(optional_str(d, "redis_url", path), f"{path}.redis_url"),
            redis_key_prefix=typed(d, "redis_key_prefix", path, str, base.redis_key_prefix),
            affinity_load_factor=factor,
            tls=ClientTls.from_mapping(d["tls"], f"{path}.tls") if d.get("tls") else None,
            **seconds,
            **counts,
        )
        if settings.eject_base_s > settings.eject_max_s:
            raise SettingsError(
                f"{path}.eject_base_s: must not exceed {path}.eject_max_s "
                f"({settings.eject_base_s} > {settings.eject_max_s})"
            )
        return settings

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


def _targets(values: tuple[str, ...], where: str) -> tuple[str, ...]:
    for i, value in enumerate(values):
        split_target(value, f"{where}[{i}]")
    return values
