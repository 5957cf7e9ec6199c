"""Process settings of the audit store and of a gateway's audit spool and shipper."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Self


def _build(cls: type[Any], data: Mapping[str, object], path: str) -> dict[str, object]:
    """Check keys and types against the dataclass fields, naming the full key path."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(
            f"{path}.{unknown[0]}: unknown key; expected one of {', '.join(sorted(known))}"
        )
    values: dict[str, object] = {}
    for name, value in data.items():
        where = f"{path}.{name}"
        want = str(known[name].type)
        if value is None and "None" in want:
            values[name] = None
        elif want.startswith("str"):
            if not isinstance(value, str):
                raise ValueError(f"{where}: expected a string")
            values[name] = value
        elif want.startswith("int"):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{where}: expected a positive integer")
            values[name] = value
        elif want.startswith("float"):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{where}: expected a positive number of seconds")
            values[name] = float(value)
        else:  # pragma: no cover - every field type is handled above
            raise TypeError(f"{where}: unsupported field type {want}")
    return values


@dataclass(frozen=True, slots=True)
class AuditStoreSettings:
    """The audit store process (`llm-audit serve`).

    - `listen`: HOST:PORT for OTLP/gRPC (port 0 picks a free one).
    - `db_path` (SQLite file) or `postgres_dsn`: exactly one.
    - `keys_dir`: where the Ed25519 checkpoint key lives (0600, created on first start).
    - `checkpoint_interval_s`: how often changed chain heads are signed.
    - `tls_cert_file`/`tls_key_file`: serve TLS (both or neither).
    - `retain_policy_dir`: run retention every `retain_interval_s` under this policy directory's
      purpose register (off when unset); `retain_default_days` for unregistered purposes.
    """

    keys_dir: str
    listen: str = "127.0.0.1:4317"
    db_path: str | None = None
    postgres_dsn: str | None = None
    checkpoint_interval_s: float = 60.0
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    retain_policy_dir: str | None = None
    retain_interval_s: float = 86_400.0
    retain_default_days: int | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], path: str = "audit.store") -> Self:
        if "keys_dir" not in data:
            raise ValueError(f"{path}.keys_dir: required (directory for the checkpoint key)")
        settings = cls(**_build(cls, data, path))  # type: ignore[arg-type]
        settings.check(path)
        return settings

    def check(self, path: str = "audit.store") -> None:
        if (self.db_path is None) == (self.postgres_dsn is None):
            raise ValueError(f"{path}: set exactly one of db_path and postgres_dsn")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(f"{path}: set both tls_cert_file and tls_key_file, or neither")


DEFAULT_ANONYMOUS_SHARE = 0.1


@dataclass(frozen=True, slots=True)
class AuditSpoolSettings:
    """A gateway replica's audit spool and its shipper to the store.

    - `spool_path`: SQLite file on this replica's own persistent volume.
    - `source`: this replica's stable id (a StatefulSet pod name); chains are per source.
    - `quota_bytes`: undelivered bytes at which the spool refuses appends (fail closed).
    - `store_target`: the audit store's HOST:PORT (checked by the residency guard).
    - `batch_size`, `flush_timeout_s`: records per export; how long close() keeps shipping.
    - `unhealthy_after_s`, `unhealthy_spool_share`: the audit health service turns NOT_SERVING
      once shipping has failed for this long, or once undelivered bytes pass this share of the
      quota (0 < share <= 1); it turns SERVING again when the store answers and the spool drains.
    - `anonymous_share`: the part of `quota_bytes` (0 to 1) that records of unauthenticated
      calls may hold, so that they can never fill the spool for authenticated callers.
    - `tls_ca_file` (+ `tls_cert_file`/`tls_key_file` for mutual TLS, `tls_server_name`):
      ship over TLS; without them the connection is plaintext, which the residency guard allows
      only for loopback or explicitly allowed hosts.
    - `pseudonym_key_file`: the deployment's one audit secret (>= 32 random bytes, a mounted
      Secret), shared by every replica and process so that a person has one pseudonym
      everywhere; the content-hash key is derived from it (HKDF-SHA256). Required when
      `production: true`; without it a development gateway generates one under its data dir.
    """

    spool_path: str
    source: str
    store_target: str
    quota_bytes: int = 256 * 1024 * 1024
    batch_size: int = 256
    flush_timeout_s: float = 5.0
    unhealthy_after_s: float = 60.0
    unhealthy_spool_share: float = 0.5
    anonymous_share: float = DEFAULT_ANONYMOUS_SHARE
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_server_name: str | None = None
    pseudonym_key_file: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], path: str = "audit.spool") -> Self:
        for required in ("spool_path", "source", "store_target"):
            if required not in data:
                raise ValueError(f"{path}.{required}: required")
        share = data.get("anonymous_share", DEFAULT_ANONYMOUS_SHARE)
        if not (isinstance(share, int | float) and not isinstance(share, bool)) or not (
            0 <= share <= 1
        ):
            raise ValueError(f"{path}.anonymous_share: expected a number between 0 and 1")
        values = _build(cls, {k: v for k, v in data.items() if k != "anonymous_share"}, path)
        settings = cls(**values, anonymous_share=float(share))  # type: ignore[arg-type]
        if settings.unhealthy_spool_share > 1:
            raise ValueError(
                f"{path}.unhealthy_spool_share: expected a share of the quota in (0, 1], "
                f"got {settings.unhealthy_spool_share}"
            )
        return settings
