"""Process settings of the audit store and of a gateway's audit spool and shipper."""

from __future__ import annotations

from dataclasses import dataclass

from common.settings import Invalid, SettingsError, positive, setting

_POSITIVE_INT = "a positive integer"
_SECONDS = "a positive number of seconds"
DEFAULT_ANONYMOUS_SHARE = 0.1


def _seconds(value: float, key: str) -> None:
    if not value > 0:
        raise SettingsError(f"{key}: expected {_SECONDS}, got {value!r}")


def _non_negative_seconds(value: float, key: str) -> None:
    if value < 0:
        raise SettingsError(f"{key}: expected a number of seconds >= 0, got {value!r}")


def _share_of_quota(value: float, key: str) -> None:
    if not 0 < value <= 1:
        raise SettingsError(f"{key}: expected a share of the quota in (0, 1], got {value!r}")


def _fraction(value: float, key: str) -> None:
    if not 0 <= value <= 1:
        raise SettingsError(f"{key}: expected a number between 0 and 1, got {value!r}")


@dataclass(frozen=True, slots=True)
class AuditStoreSettings:
    """The audit store process (`llm-audit serve`): `db_path` or `postgres_dsn`, exactly one."""

    keys_dir: str = setting(
        doc="directory of the Ed25519 checkpoint key (0600, created on first start)",
        expect="a string (directory for the checkpoint key)",
    )
    listen: str = setting(
        "127.0.0.1:4317",
        doc="HOST:PORT for OTLP/gRPC (port 0 picks a free one)",
        expect="a string",
    )
    db_path: str | None = setting(None, doc="SQLite ledger file")
    postgres_dsn: str | None = setting(None, doc="PostgreSQL connection string of the ledger")
    checkpoint_interval_s: float = setting(
        60.0, doc="how often changed chain heads are signed", expect=_SECONDS, check=_seconds
    )
    tls_cert_file: str | None = setting(None, doc="serve TLS with this certificate (PEM)")
    tls_key_file: str | None = setting(None, doc="the private key of tls_cert_file (PEM)")
    retain_policy_dir: str | None = setting(
        None,
        doc="run retention periodically under this policy directory's purpose register "
        "(off when unset)",
    )
    retain_interval_s: float = setting(
        86_400.0, doc="seconds between retention runs", expect=_SECONDS, check=_seconds
    )
    retain_default_days: int | None = setting(
        None,
        doc="retention in days of records with no registered purpose (never pruned when unset; "
        "at least the register's floor)",
    )

    def check(self) -> None:
        """Exactly one ledger; TLS files both or neither."""
        if (self.db_path is None) == (self.postgres_dsn is None):
            raise Invalid("", "set exactly one of db_path and postgres_dsn")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise Invalid("", "set both tls_cert_file and tls_key_file, or neither")


@dataclass(frozen=True, slots=True)
class AuditSpoolSettings:
    """A gateway replica's audit spool and its shipper to the store (the `audit` section).

    Without the `tls_*` keys the connection to the store is plaintext, which the residency guard
    allows only for loopback or explicitly allowed hosts. The health service turns SERVING again
    when the store answers and the spool drains. `pseudonym_key_file` is shared so that a person
    has one pseudonym everywhere; the content-hash key is derived from it (HKDF-SHA256); without
    it a development gateway generates one under its data dir.
    """

    spool_path: str = setting(
        doc="SQLite spool file on this replica's own persistent volume", expect="a string"
    )
    source: str = setting(
        doc="this replica's stable id (a StatefulSet pod name); chains are per source",
        expect="a string",
    )
    store_target: str = setting(
        doc="the audit store's HOST:PORT (checked by the residency guard)", expect="a string"
    )
    quota_bytes: int = setting(
        256 * 1024 * 1024,
        doc="undelivered bytes at which the spool refuses appends (fail closed)",
        expect=_POSITIVE_INT,
        check=positive,
    )
    batch_size: int = setting(256, doc="records per export", expect=_POSITIVE_INT, check=positive)
    flush_timeout_s: float = setting(
        5.0, doc="how long closing keeps shipping", expect=_SECONDS, check=_seconds
    )
    unhealthy_after_s: float = setting(
        60.0,
        doc="the audit health service turns NOT_SERVING once shipping has failed this long",
        expect=_SECONDS,
        check=_seconds,
    )
    unhealthy_spool_share: float = setting(
        0.5,
        doc="the health service also turns NOT_SERVING once undelivered bytes pass this share",
        expect="a share of the quota in (0, 1]",
        check=_share_of_quota,
    )
    anonymous_share: float = setting(
        DEFAULT_ANONYMOUS_SHARE,
        doc="the part of quota_bytes (0 to 1) that records of unauthenticated calls may hold",
        expect="a number between 0 and 1",
        check=_fraction,
    )
    anonymous_window_s: float = setting(
        10.0,
        doc="refusals before authentication: the first of each (address, reason, door) per window "
        "is recorded alone, the rest as one record with a count (0: every one alone)",
        expect="a number of seconds >= 0",
        check=_non_negative_seconds,
    )
    tls_ca_file: str | None = setting(None, doc="ship over TLS, trusting this CA (PEM)")
    tls_cert_file: str | None = setting(None, doc="client certificate for mutual TLS (PEM)")
    tls_key_file: str | None = setting(None, doc="the private key of tls_cert_file (PEM)")
    tls_server_name: str | None = setting(
        None, doc="the name the store's certificate carries, when not the target's host"
    )
    pseudonym_key_file: str | None = setting(
        None,
        doc="the deployment's one audit secret (>= 32 random bytes), shared by every replica; "
        "required when production is true",
    )
