"""The worker's gRPC server: the internal WorkerService over one engine, plus health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from llmgateway.worker.v1 import worker_pb2 as pb
from llmgateway.worker.v1 import worker_pb2_grpc as pb_grpc
from opentelemetry.trace import Span, SpanKind

from common import telemetry
from common.telemetry import Tracing
from workers import convert, metrics
from workers.digest import sim_digests
from workers.engine import (
    Engine,
    EngineFailed,
    EngineOverloaded,
    EngineUnavailable,
    InvalidEngineRequest,
    UnsupportedModel,
)
from workers.sim import SimEngine
from workers.streaming import coalesce

log = logging.getLogger(__name__)
SERVICE_NAME = "llmgateway.worker.v1.WorkerService"
# Trailing metadata on a refusal that says why, so the gateway stops picking this worker at once.
STATE_KEY = "llmgw-worker-state"
# The ErrorInfo domain of a refusal's reason (the worker API's Generate lists the reasons).
ERROR_DOMAIN = "llmgateway.worker"
TTFT_ATTRIBUTE = "llmgateway.time_to_first_token_ms"


class WorkerServicer(pb_grpc.WorkerServiceServicer):
    """Serves one engine; every engine failure maps to one status that the gateway understands."""

    def __init__(
        self,
        engine: Engine,
        *,
        worker_id: str,
        pool: str,
        health_servicer: health.aio.HealthServicer | None = None,
        tracing: Tracing | None = None,
        model_digests: Mapping[str, str] | None = None,
    ) -> None:
        self._engine = engine
        self.model_digests = dict(model_digests or {})
        self._tracing = tracing
        self.worker_id = worker_id
        self.pool = pool
        self.draining = False
        self._health = health_servicer
        self._changed = asyncio.Event()
        # Set once the engine failed fatally: the process drains and exits non-zero.
        self.failed = asyncio.Event()

    async def set_draining(self, draining: bool) -> None:
        """Stop (or resume) accepting generations; load watchers and health see it at once."""
        draining = draining or self.failed.is_set()  # a failed engine never serves again
        if draining != self.draining:
            log.info("worker %s %s", self.worker_id, "draining" if draining else "accepting again")
        self.draining = draining
        if self._health is not None:
            status = (
                health_pb2.HealthCheckResponse.NOT_SERVING
                if draining
                else health_pb2.HealthCheckResponse.SERVING
            )
            await self._health.set(SERVICE_NAME, status)
        self._changed.set()

    async def fail(self) -> None:
        """The engine failed fatally: NOT_SERVING in health and load, and `failed` is set."""
        if self.failed.is_set():
            return
        log.critical("worker %s: engine failed fatally; draining to exit", self.worker_id)
        self.failed.set()
        await self.set_draining(True)
        if self._health is not None:
            await self._health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.GenerateResponse]:
        if self.draining:
            # Also after a fatal failure: this request never ran, so another worker may take it.
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "worker is draining; use another",
                trailing_metadata=((STATE_KEY, "draining"),),
            )
        span = self._span(request, context)
        started = time.monotonic()
        tokens = 0
        try:
            async for chunks in coalesce(self._engine.generate(convert.engine_request(request))):
                message = convert.merge_chunks(chunks)
                if message.token_count:
                    metrics.OUTPUT_TOKENS.inc(message.token_count)
                if span is not None:
                    if not tokens and message.token_count:
                        span.set_attribute(TTFT_ATTRIBUTE, (time.monotonic() - started) * 1000)
                    tokens = message.completion_tokens or tokens + message.token_count
                yield message
        except EngineOverloaded as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except EngineUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except UnsupportedModel as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except InvalidEngineRequest as exc:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                str(exc),
                trailing_metadata=_error_info(exc.reason, exc.metadata, str(exc)),
            )
        except EngineFailed as exc:
            await self.fail()
            # "failed": the request met the failure (it may have caused it): never retry it.
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, str(exc), trailing_metadata=((STATE_KEY, "failed"),)
            )
        finally:
            if span is not None:
                span.set_attribute(telemetry.GEN_AI_USAGE_OUTPUT_TOKENS, tokens)
                span.end()

    def _span(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> Span | None:
        """The worker's span, continuing the gateway's trace (None when tracing is off)."""
        if self._tracing is None or not self._tracing.enabled:
            return None
        parent = telemetry.extract_context(tuple(context.invocation_metadata() or ()))
        return self._tracing.tracer.start_span(
            "gen_ai.worker.generate",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                telemetry.GEN_AI_OPERATION_NAME: telemetry.OPERATION_CHAT,
                telemetry.GEN_AI_REQUEST_MODEL: request.model,
                telemetry.GEN_AI_REQUEST_MAX_TOKENS: request.sampling.max_tokens,
                "llmgateway.request_id": request.request_id,
                "llmgateway.worker": self.worker_id,
            },
        )

    async def GetLoad(
        self, request: pb.GetLoadRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.GetLoadResponse:
        return pb.GetLoadResponse(load=self._load())

    async def WatchLoad(
        self, request: pb.WatchLoadRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.WatchLoadResponse]:
        interval = (request.interval_ms or 50) / 1000
        previous: pb.Load | None = None
        while True:
            load = self._load()
            if load != previous:
                yield pb.WatchLoadResponse(load=load)
                previous = load
            # A drain is reported at once; load changes at most every interval.
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), interval)
            if changed.is_set():
                self._changed = asyncio.Event()

    async def SetDraining(
        self, request: pb.SetDrainingRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.SetDrainingResponse:
        await self.set_draining(request.draining)
        return pb.SetDrainingResponse(load=self._load())

    async def GetInfo(
        self, request: pb.GetInfoRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.GetInfoResponse:
        return pb.GetInfoResponse(
            worker_id=self.worker_id,
            models=list(self._engine.models),
            pool=self.pool,
            engine=self._engine.kind,
            max_slots=self._engine.load().max_slots,
            model_digests=self.model_digests,
        )

    def _load(self) -> pb.Load:
        return convert.load_message(
            self._engine.load(), draining=self.draining, failed=self.failed.is_set()
        )


def _error_info(
    reason: str, metadata: dict[str, str], message: str
) -> tuple[tuple[str, bytes], ...]:
    """The `grpc-status-details-bin` trailer of an INVALID_ARGUMENT refusal."""
    status = status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=message)
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata)
    )
    return (("grpc-status-details-bin", status.SerializeToString()),)


@dataclass
class WorkerHandle:
    """A running worker server."""

    server: grpc.aio.Server
    servicer: WorkerServicer
    health: health.aio.HealthServicer
    engine: Engine
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self, grace: float = 5.0) -> None:
        """Report NOT_SERVING, let in-flight generations finish within `grace`, then close."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.engine.close()


async def start_worker(
    engine: Engine,
    *,
    listen: str = "127.0.0.1:0",
    pool: str = "onprem-gpu",
    worker_id: str = "",
    tracing: Tracing | None = None,
    credentials: grpc.ServerCredentials | None = None,
    model_digests: Mapping[str, str] | None = None,
) -> WorkerHandle:
    """Start the engine and a worker server bound to `listen`; returns once it accepts calls.

    With `credentials` the port speaks TLS (mutual TLS when they require client certificates).
    `model_digests` (model -> `sha256:...`) is advertised in GetInfo; by default a simulator
    advertises the digest of its configuration and other engines none.
    """
    if model_digests is None and isinstance(engine, SimEngine):
        model_digests = sim_digests(engine.config)
    await engine.start()
    # Accept bursts of streams instead of cancelling all but the first 1,000 (gRPC's default).
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.server.max_pending_requests", 10_000),
            ("grpc.server.max_pending_requests_hard_limit", 20_000),
        ]
    )
    health_servicer = health.aio.HealthServicer()
    servicer = WorkerServicer(
        engine,
        worker_id=worker_id or uuid.uuid4().hex[:12],
        pool=pool,
        health_servicer=health_servicer,
        tracing=tracing,
        model_digests=model_digests,
    )
    pb_grpc.add_WorkerServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if credentials is not None:
        port = server.add_secure_port(listen, credentials)
    else:
        port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot bind the worker to {listen}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("worker %s serving %s on port %d", servicer.worker_id, engine.models, port)
    return WorkerHandle(server, servicer, health_servicer, engine, port)
