"""Helpers of the HTTP door's tests."""

from __future__ import annotations

from audit.record import AuditRecord
from gateway.process.server import GatewayHandle

MODEL = "llama-3.1-8b-instruct"
OTHER_MODEL = "qwen2.5-7b-instruct"


async def new_records(gateway: GatewayHandle, seen: set[str]) -> list[AuditRecord]:
    """Records spooled since `seen` was taken (and add them to it)."""
    pending = await gateway.pipeline.audit.spool.pending(10_000)
    records = [r for r in pending if r.record_id not in seen]
    seen.update(r.record_id for r in records)
    return records
