"""The gateway side of the audit trail: one record per request, spooled durably, then shipped.

`AuditTrail.append` returns only once the record is on disk (the spool fsyncs with group commit),
so every response the client sees has its record, even if the process is killed right after. The
shipper delivers spooled records to the audit store in the background.
"""

from __future__ import annotations

import hmac
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

from audit.pseudonym import Pseudonymizer, content_hasher, content_hmac, load_or_create_key
from audit.record import AuditRecord
from audit.settings import AuditSpoolSettings
from audit.shipper import Shipper
from audit.spool import AuditSpool, SpoolFull
from gateway.client_tls import ClientTls
from gateway.request.ratelog import RateLimitedLog

log = logging.getLogger(__name__)
_LOG = RateLimitedLog(log)


@dataclass(frozen=True, slots=True)
class AuditKeys:
    """Keys for pseudonyms and content HMACs, kept apart from the store (0600 files)."""

    pseudonymize: Pseudonymizer
    content_key: bytes

    @classmethod
    def load(cls, keys_dir: Path) -> AuditKeys:
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(
            Pseudonymizer(load_or_create_key(keys_dir / "pseudonym.key")),
            load_or_create_key(keys_dir / "content.key"),
        )

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
    ) -> None:
        self.spool = spool
        self.shipper = shipper
        self.keys = keys
        self.flush_timeout_s = flush_timeout_s

    @classmethod
    async def open(cls, settings: AuditSpoolSettings | None, data_dir: Path) -> AuditTrail:
        keys = AuditKeys.load(data_dir / "audit-keys")
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
        return cls(spool, shipper, keys, flush_timeout_s=settings.flush_timeout_s)

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
            details["audit_shipper"] = f"pending={h.pending} last_error={h.last_error or 'none'}"
        return details

    async def close(self) -> None:
        """Ship what is left within `audit.flush_timeout_s`; the rest waits in the spool."""
        if self.shipper is not None:
            await self.shipper.close(self.flush_timeout_s)
        await self.spool.close()
