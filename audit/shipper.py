"""Ships spooled audit records to the audit store over OTLP/gRPC, retrying until acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from prometheus_client import Counter, Gauge
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_never,
    wait_exponential_jitter,
)

from audit.otlp import export_request
from audit.record import AuditRecord
from audit.spool import AuditSpool

log = logging.getLogger(__name__)

SHIPPED = Counter("llmgw_audit_shipped_total", "Audit records acknowledged by the audit store")
SHIP_ERRORS = Counter("llmgw_audit_ship_errors_total", "Failed audit exports (retried)")
SHIP_PENDING = Gauge(
    "llmgw_audit_ship_pending",
    "Audit records in the spool not yet delivered",
    multiprocess_mode="livesum",
)
FAILING_SINCE = Gauge(
    "llmgw_audit_ship_failing_since_timestamp_seconds",
    "Unix time of the first failed export of the current outage; 0 while exports succeed.",
    multiprocess_mode="max",
)


class ExportRejected(Exception):
    """The store refused some spans of an export; the batch stays in the spool."""


@dataclass(frozen=True, slots=True)
class ShipperHealth:
    pending: int
    delivered: int
    last_error: str | None
    failing_for_s: float = 0.0  # how long every export has failed (0 while they succeed)
    oldest_pending_ns: int = 0  # wall-clock time of the oldest undelivered record (0: none)


class Shipper:
    """Background task draining an `AuditSpool` into the audit store.

    Contract: records leave the spool only after the store acknowledged the export that carried
    them; a failed export is retried with bounded exponential backoff for as long as the shipper
    runs, without ever blocking `spool.append`. A batch may reach the store twice (acknowledged
    but the ack was lost); the store's idempotency by record_id stores it once.
    """

    def __init__(
        self,
        spool: AuditSpool,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, object]] = (),
        batch_size: int = 256,
        export_timeout_s: float = 5.0,
        max_backoff_s: float = 5.0,
        service_name: str = "llm-gateway",
    ) -> None:
        self._spool = spool
        self._target = target
        self._credentials = credentials
        self._options = tuple(options)
        self._batch_size = batch_size
        self._export_timeout_s = export_timeout_s
        self._max_backoff_s = max_backoff_s
        self._service_name = service_name
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self._pending = 0
        self._delivered = 0
        self._last_error: str | None = None
        self._failing_since: float | None = None  # monotonic time of the outage's first failure
        self._oldest_pending_ns = 0
        self._listener: Callable[[], None] | None = None

    async def start(self) -> None:
        # gRPC obeys http(s)_proxy/grpc_proxy by default, which would route records through an
        # address the residency guard never checked.
        options = [("grpc.enable_http_proxy", 0), *self._options]
        if self._credentials is not None:
            self._channel = grpc.aio.secure_channel(self._target, self._credentials, options)
        else:
            self._channel = grpc.aio.insecure_channel(self._target, options)
        stub = trace_service_pb2_grpc.TraceServiceStub(self._channel)  # type: ignore[no-untyped-call]
        loop = asyncio.get_running_loop()

        def wake() -> None:
            loop.call_soon_threadsafe(self._wake.set)

        self._listener = wake
        self._spool.add_listener(wake)
        self._pending = await self._spool.pending_count()
        self._task = asyncio.create_task(self._run(stub), name="audit-shipper")

    def health(self) -> ShipperHealth:
        failing = self._failing_since
        return ShipperHealth(
            self._pending,
            self._delivered,
            self._last_error,
            failing_for_s=0.0 if failing is None else time.monotonic() - failing,
            oldest_pending_ns=self._oldest_pending_ns if self._pending else 0,
        )

    async def close(self, flush_timeout_s: float = 5.0) -> None:
        """Ship what is pending for at most `flush_timeout_s`, then stop; the rest stays spooled."""
        self._closing = True
        self._wake.set()
        if self._listener is not None:
            self._spool.remove_listener(self._listener)
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), flush_timeout_s)
            except TimeoutError:
                log.warning("audit shipper: %d record(s) left in the spool at close", self._pending)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._channel is not None:
            await self._channel.close()

    async def _run(self, stub: trace_service_pb2_grpc.TraceServiceStub) -> None:
        while not await self._step(stub):
            pass

    async def _step(self, stub: trace_service_pb2_grpc.TraceServiceStub) -> bool:
        """One pass; True when closing and drained. Never lets the shipping loop die."""
        try:
            return await self._ship_once(stub)
        except Exception as err:  # a bug or a spool failure: keep the loop alive, report it
            log.exception("audit shipper: unexpected failure; retrying")
            self._last_error = f"{type(err).__name__}: {err}"
            await asyncio.sleep(self._max_backoff_s)
            return False

    async def _ship_once(self, stub: trace_service_pb2_grpc.TraceServiceStub) -> bool:
        self._wake.clear()  # before reading: an append after the read sets it again
        batch = await self._spool.pending(self._batch_size)
        if not batch:
            self._oldest_pending_ns = 0
            self._set_pending(0)
            if self._closing:
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            return False
        self._oldest_pending_ns = batch[0].time_ns
        self._set_pending(await self._spool.pending_count())
        await self._send(stub, batch)
        await self._spool.mark_delivered([r.sequence for r in batch])
        self._delivered += len(batch)
        SHIPPED.inc(len(batch))
        self._set_pending(max(self._pending - len(batch), 0))
        return False

    def _set_pending(self, n: int) -> None:
        self._pending = n
        SHIP_PENDING.set(n)

    def _failed(self, state: RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        self._last_error = f"{type(err).__name__}: {_describe(err)}"
        SHIP_ERRORS.inc()
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            FAILING_SINCE.set(time.time())
        log.warning(
            "audit export to %s failed (attempt %d): %s",
            self._target,
            state.attempt_number,
            self._last_error,
        )

    async def _send(
        self, stub: trace_service_pb2_grpc.TraceServiceStub, batch: list[AuditRecord]
    ) -> None:
        request = export_request(batch, self._service_name)
        # Retrying forever is the point: the record must reach the store. close() bounds it by
        # cancelling this task; appends never wait on it.
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((grpc.aio.AioRpcError, ExportRejected)),
            wait=wait_exponential_jitter(multiplier=0.05, max=self._max_backoff_s),
            stop=stop_never,
            before_sleep=self._failed,
            reraise=True,
        ):
            with attempt:
                response = await stub.Export(request, timeout=self._export_timeout_s)
                rejected = response.partial_success.rejected_spans
                if rejected:
                    raise ExportRejected(
                        f"store rejected {rejected} span(s): "
                        + response.partial_success.error_message
                    )
        self._last_error = None
        if self._failing_since is not None:
            self._failing_since = None
            FAILING_SINCE.set(0)


def _describe(err: BaseException | None) -> str:
    if isinstance(err, grpc.aio.AioRpcError):
        return f"{err.code().name} {err.details()}"
    return str(err)
