"""The gateway side of the audit trail: one record per request, spooled durably, then shipped.

`AuditTrail.append` returns only once the record is on disk (the spool fsyncs with group commit),
so every response the client sees has its record, even if the process is killed right after. The
shipper delivers spooled records to the audit store in the background.
"""

from __future__ import annotations

import hmac
import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Gauge

from audit.pseudonym import (
    Pseudonymizer,
    content_hasher,
    content_hmac,
    derive_content_key,
    load_key,
    load_or_create_key,
)
from audit.record import AuditRecord
from audit.settings import AuditSpoolSettings
from audit.shipper import Shipper
from audit.spool import AuditSpool, SpoolFull
from gateway.client_tls import ClientTls
from gateway.request.ratelog import RateLimitedLog

log = logging.getLogger(__name__)
DEV_KEY_FILE = Path("audit-keys") / "pseudonym.key"


def dev_key_file(data_dir: Path) -> Path:
    """Where a development gateway keeps its generated audit secret (0600, directory 0700)."""
    path = data_dir / DEV_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


OLDEST_UNSHIPPED_AGE = Gauge(
    "llmgw_audit_oldest_unshipped_age_seconds",
    "Age of the oldest audit record not yet acknowledged by the audit store (0: none waiting).",
    multiprocess_mode="max",
)
SPOOL_QUOTA = Gauge(
    "llmgw_audit_spool_quota_bytes",
    "Undelivered bytes at which the spool refuses appends (audit.quota_bytes).",
    multiprocess_mode="livesum",
)
HEALTHY = Gauge(
    "llmgw_audit_healthy",
    "1 while the audit component reports SERVING, 0 while NOT_SERVING.",
    multiprocess_mode="min",
)

_LOG = RateLimitedLog(log)


@dataclass(frozen=True, slots=True)
class AuditKeys:
    """Keys for pseudonyms and content HMACs, kept apart from the store.

    Both come from one secret per deployment (`audit.pseudonym_key_file`): the pseudonym key is
    the secret itself (so `llm-audit erase --subject S --pseudonym-key FILE` finds a person), the
    content key is derived from it. Every replica and process reads the same file, so a person
    has one pseudonym and a prompt one keyed hash whichever process served them.
    """

    pseudonymize: Pseudonymizer
    content_key: bytes

    @classmethod
    def from_secret(cls, secret: bytes) -> AuditKeys:
        return cls(Pseudonymizer(secret), derive_content_key(secret))

    @classmethod
    def load(cls, key_file: Path | None, data_dir: Path) -> AuditKeys:
        """The configured key file, or (development) one generated under `data_dir`."""
        if key_file is not None:
            return cls.from_secret(load_key(key_file))
        return cls.from_secret(load_or_create_key(dev_key_file(data_dir)))

    def content(self, text: str) -> str:
        """The keyed hash of prompt or answer text."""
        return content_hmac(self.content_key, text)

    def content_hasher(self) -> hmac.HMAC:
        """`content` computed incrementally, for an answer hashed as it streams."""
        return content_hasher(self.content_key)


def audit_tls(settings: AuditSpoolSettings) -> ClientTls | None:
    """TLS towards the audit store, when configured."""
    if settings.tls_ca_file is None:
        return None
    return ClientTls(
        ca_file=settings.tls_ca_file,
        cert_file=settings.tls_cert_file,
        key_file=settings.tls_key_file,
        server_name=settings.tls_server_name,
    )


class AuditTrail:
    """The spool plus its shipper (none when no store is configured: records stay local)."""

    def __init__(
        self,
        spool: AuditSpool,
        shipper: Shipper | None,
        keys: AuditKeys,
        *,
        flush_timeout_s: float = 5.0,
        unhealthy_after_s: float = 60.0,
        unhealthy_spool_share: float = 0.5,
    ) -> None:
        self.spool = spool
        self.shipper = shipper
        self.keys = keys
        self.flush_timeout_s = flush_timeout_s
        self.unhealthy_after_s = unhealthy_after_s
        self.unhealthy_spool_share = unhealthy_spool_share
        SPOOL_QUOTA.set(spool.quota_bytes)

    @classmethod
    async def open(cls, settings: AuditSpoolSettings | None, data_dir: Path) -> AuditTrail:
        key_file = settings.pseudonym_key_file if settings is not None else None
        keys = AuditKeys.load(Path(key_file) if key_file else None, data_dir)
        if settings is None:
            path = data_dir / "audit-spool.db"
            path.parent.mkdir(parents=True, exist_ok=True)
            spool = AuditSpool(path, quota_bytes=256 * 1024 * 1024, source=socket.gethostname())
            log.warning("audit: no store configured; records stay in the local spool %s", path)
            return cls(spool, None, keys)
        Path(settings.spool_path).parent.mkdir(parents=True, exist_ok=True)
        spool = AuditSpool(
            settings.spool_path,
            quota_bytes=settings.quota_bytes,
            source=settings.source,
            anonymous_share=settings.anonymous_share,
        )
        tls = audit_tls(settings)
        shipper = Shipper(
            spool,
            settings.store_target,
            credentials=tls.credentials() if tls else None,
            options=tls.channel_options() if tls else (),
            batch_size=settings.batch_size,
        )
        await shipper.start()
        return cls(
            spool,
            shipper,
            keys,
            flush_timeout_s=settings.flush_timeout_s,
            unhealthy_after_s=settings.unhealthy_after_s,
            unhealthy_spool_share=settings.unhealthy_spool_share,
        )

    @property
    def is_full(self) -> bool:
        return self.spool.is_full

    async def append(self, record: AuditRecord) -> None:
        """Spool `record` durably; raises `SpoolFull` for an authenticated caller's record.

        A record without a subject (a call refused before authentication) counts against the
        spool's anonymous share; once that is used up it is not written, so that nobody can
        fill the spool for authenticated callers by sending junk tokens. The refusal itself
        still reaches the caller and the metrics.
        """
        anonymous = not record.subject_pseudonym
        try:
            await self.spool.append(record, anonymous=anonymous)
        except SpoolFull:
            if not anonymous:
                raise
            _LOG.log(
                logging.WARNING,
                "anonymous_full",
                "audit spool: the share for unauthenticated calls is full; their refusals are "
                "not recorded until the audit store catches up",
            )

    def health(self) -> dict[str, str]:
        details = {"audit_spool": "full" if self.spool.is_full else "ok"}
        if self.shipper is not None:
            h = self.shipper.health()
            details["audit_shipper"] = (
                f"pending={h.pending} failing_for_s={h.failing_for_s:.0f} "
                f"last_error={h.last_error or 'none'}"
            )
        problem = self.problem()
        details["audit_status"] = problem or "ok"
        return details

    def problem(self) -> str:
        """Why the audit component is unhealthy, or "" when it is healthy; updates its gauges.

        Unhealthy: the spool is full, or its undelivered bytes passed `unhealthy_spool_share`
        of the quota, or every export has failed for longer than `unhealthy_after_s`.
        """
        spool = self.spool
        problem = ""
        age = 0.0
        if spool.is_full:
            problem = "spool full"
        elif spool.pending_bytes >= self.unhealthy_spool_share * spool.quota_bytes:
            problem = f"spool above {self.unhealthy_spool_share:.0%} of its quota"
        if self.shipper is not None:
            h = self.shipper.health()
            if h.oldest_pending_ns:
                age = max(time.time() - h.oldest_pending_ns / 1e9, 0.0)
            if not problem and h.failing_for_s > self.unhealthy_after_s:
                problem = f"shipping to the audit store has failed for {h.failing_for_s:.0f} s"
        OLDEST_UNSHIPPED_AGE.set(age)
        HEALTHY.set(0 if problem else 1)
        return problem

    async def close(self) -> None:
        """Ship what is left within `audit.flush_timeout_s`; the rest waits in the spool."""
        if self.shipper is not None:
            await self.shipper.close(self.flush_timeout_s)
        await self.spool.close()
