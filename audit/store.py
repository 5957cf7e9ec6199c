"""The audit store server: OTLP/gRPC TraceService over the ledger, with signed checkpoints."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from prometheus_client import Counter

from audit.chain import ChainHead
from audit.checkpoint import Checkpoint, load_or_create_signing_key, sign_checkpoint
from audit.coarsen import coarsen_checkpoints
from audit.ledger import AppendResult, Ledger
from audit.otlp import audit_spans, decode_all
from audit.record import AuditRecord
from audit.retention import SourceRetention, describe, load_rules, retain
from audit.settings import AuditStoreSettings

log = logging.getLogger(__name__)

STORE_RECORDS = Counter(
    "llmgw_audit_store_records_total", "Audit records received by the store", ["result"]
)
STORE_FOREIGN_SPANS = Counter(
    "llmgw_audit_store_foreign_spans_total", "Spans not of scope llmgateway.audit (ignored)"
)
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
# Unchanged heads are signed again after this long, so that `verify`'s freshness check (a day by
# default) holds on an idle ledger; changed heads are signed at every checkpoint interval.
RESIGN_IDLE_NS = 3600 * 1_000_000_000
COARSEN_EVERY_NS = 3600 * 1_000_000_000
T = TypeVar("T")


def open_ledger(db_path: str | None, postgres_dsn: str | None) -> Ledger:
    """The SQLite ledger at `db_path`, or the PostgreSQL one at `postgres_dsn`."""
    if postgres_dsn is not None:
        from audit.postgres_ledger import PostgresLedger

        return PostgresLedger(postgres_dsn)
    if db_path is None:
        raise ValueError("give a ledger: --db PATH (SQLite) or --postgres DSN")
    from audit.sqlite_ledger import SqliteLedger

    return SqliteLedger(db_path)


class LedgerGate:
    """Runs blocking ledger calls on the ledger's own thread, one at a time, in arrival order.

    One thread rather than a lock around `asyncio.to_thread`: a coroutine cancelled while its
    call runs (an Export cut short by `server.stop`) gives up a lock at once, but its thread goes
    on using the connection, so the next call, or `close`, would run beside it. Closing a SQLite
    connection under a running statement crashes the process. Here a cancelled call that has not
    started never runs, and one that has started finishes before anything queued after it.
    """

    def __init__(self, ledger: Ledger, key: Ed25519PrivateKey) -> None:
        self.ledger = ledger
        self._key = key
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-ledger")
        self._signed: dict[str, ChainHead] | None = None
        self._signed_ns = 0
        self._coarsened_ns = 0

    async def run(self, fn: Callable[[Ledger], T]) -> T:
        """`fn(ledger)` on the ledger thread, after every call queued before it."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, self.ledger)

    async def append(self, records: list[AuditRecord]) -> AppendResult:
        return await self.run(lambda ledger: ledger.append(records))

    async def retain(self, policy_dir: str, default_days: int | None) -> list[SourceRetention]:
        """Run retention now under the policy directory's current purpose register."""
        rules = await asyncio.to_thread(load_rules, policy_dir, default_days)
        return await self.run(lambda ledger: retain(ledger, rules, self._key, time.time_ns()))

    async def checkpoint(self) -> Checkpoint | None:
        """Sign the current chain heads, unless nothing changed since the last checkpoint."""
        return await self.run(lambda _: self._checkpoint_sync())

    async def close(self) -> None:
        """Close the ledger once every call queued before has finished; later calls fail."""
        await self.run(lambda ledger: ledger.close())
        self._thread.shutdown(wait=False)

    def _checkpoint_sync(self) -> Checkpoint | None:
        heads, newest = self.ledger.heads(), self.ledger.newest_checkpoint()
        now = time.time_ns()
        if self._signed is None:  # after a restart: what the last run signed, if anything
            self._signed = newest.heads() if newest is not None else {}
            self._signed_ns = newest.created_ns if newest is not None else 0
        if not heads or (heads == self._signed and now - self._signed_ns < RESIGN_IDLE_NS):
            return None
        cp = sign_checkpoint(self._key, heads, now, after=newest)
        self.ledger.add_checkpoint(cp)
        self._signed, self._signed_ns = dict(heads), now
        if now - self._coarsened_ns >= COARSEN_EVERY_NS:
            self._coarsened_ns = now
            dropped = coarsen_checkpoints(self.ledger, now)
            if dropped:
                log.info("coarsened %d old audit checkpoint(s)", dropped)
        return cp


class AuditTraceService(trace_service_pb2_grpc.TraceServiceServicer):
    """OTLP TraceService: spans of scope `llmgateway.audit` become ledger records.

    Other spans are counted and dropped, so a Collector may forward whole traces here.
    Undecodable audit spans are reported in `partial_success` (never stored); a ledger failure
    answers UNAVAILABLE so the sender retries the whole export (appends are idempotent).
    """

    def __init__(self, gate: LedgerGate) -> None:
        self._gate = gate

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[
            trace_service_pb2.ExportTraceServiceRequest,
            trace_service_pb2.ExportTraceServiceResponse,
        ],
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        spans, foreign = audit_spans(request)
        STORE_FOREIGN_SPANS.inc(foreign)
        records, errors = decode_all(spans)
        unsourced = [r for r in records if not r.source]
        if unsourced:
            errors.append(f"{len(unsourced)} audit record(s) without llmgateway.audit.source")
            records = [r for r in records if r.source]
        try:
            result = await self._gate.append(records)
        except Exception:
            log.exception("audit ledger append failed")
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "audit ledger unavailable; retry the export later"
            )
        STORE_RECORDS.labels("stored").inc(result.stored)
        STORE_RECORDS.labels("duplicate").inc(result.duplicates)
        response = trace_service_pb2.ExportTraceServiceResponse()
        if errors:
            STORE_RECORDS.labels("rejected").inc(len(errors))
            response.partial_success.rejected_spans = len(errors)
            response.partial_success.error_message = "; ".join(errors[:5])
        return response


@dataclass
class AuditStoreHandle:
    """A running store: its bound port; `stop()` signs a last checkpoint and closes the ledger."""

    port: int
    server: grpc.aio.Server
    gate: LedgerGate
    health: health.aio.HealthServicer
    _checkpointer: asyncio.Task[None]
    _retainer: asyncio.Task[None] | None = None
    _retain_stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    @property
    def ledger(self) -> Ledger:
        """The ledger itself: to read once the store has stopped (while it runs, `gate.run`)."""
        return self.gate.ledger

    async def stop(self, grace: float = 2.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        self._checkpointer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._checkpointer
        if self._retainer is not None:  # a run in its thread finishes first: never cut it short
            self._retain_stop.set()
            await self._retainer
        await self.gate.checkpoint()
        await self.gate.close()


async def _checkpoint_loop(gate: LedgerGate, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await gate.checkpoint()
        except Exception:  # a failed checkpoint must not stop later ones
            log.exception("audit checkpoint failed")


async def _retain_loop(gate: LedgerGate, settings: AuditStoreSettings, stop: asyncio.Event) -> None:
    assert settings.retain_policy_dir is not None
    while not stop.is_set():
        try:
            results = await gate.retain(settings.retain_policy_dir, settings.retain_default_days)
            for line in describe(results, dry_run=False):
                log.info("retention: %s", line)
        except Exception:  # a policy being edited or a failed run must not stop later runs
            log.exception("audit retention run failed; retrying at the next interval")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.retain_interval_s)


def _server_credentials(settings: AuditStoreSettings) -> grpc.ServerCredentials | None:
    if not (settings.tls_cert_file and settings.tls_key_file):
        return None
    pair = (Path(settings.tls_key_file).read_bytes(), Path(settings.tls_cert_file).read_bytes())
    return grpc.ssl_server_credentials([pair])


async def serve_store(settings: AuditStoreSettings) -> AuditStoreHandle:
    """Start the store in this event loop (for `llm-audit serve` and the dev stack)."""
    settings.check()
    if settings.retain_policy_dir is not None:  # refuse to start on a register retention rejects
        load_rules(settings.retain_policy_dir, settings.retain_default_days)
    key = load_or_create_signing_key(settings.keys_dir)
    ledger = await asyncio.to_thread(open_ledger, settings.db_path, settings.postgres_dsn)
    gate = LedgerGate(ledger, key)
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        AuditTraceService(gate), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    creds = _server_credentials(settings)
    if creds is not None:
        port = server.add_secure_port(settings.listen, creds)
    else:
        port = server.add_insecure_port(settings.listen)
    await server.start()
    await health_servicer.set(TRACE_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    task = asyncio.create_task(_checkpoint_loop(gate, settings.checkpoint_interval_s))
    handle = AuditStoreHandle(port, server, gate, health_servicer, task)
    if settings.retain_policy_dir is not None:
        handle._retainer = asyncio.create_task(_retain_loop(gate, settings, handle._retain_stop))
    log.info("audit store listening on port %d", port)
    return handle
