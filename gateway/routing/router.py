"""Picks a worker for a generation and relays its stream, with deadline and cancellation."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
from llmgateway.worker.v1 import worker_pb2 as pb

from gateway.errors import (
    Cancelled,
    DeadlineExceeded,
    GatewayError,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
    retry_info,
)
from gateway.routing.registry import StaticRegistry, WorkerState


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """A model as the workers report it."""

    name: str
    pools: tuple[str, ...]
    ready_workers: int


@dataclass(frozen=True, slots=True)
class WorkerCall:
    """One generation to forward: the worker message and how to route it.

    `deadline` is on the `time.monotonic()` clock (None: the caller set no deadline).
    """

    message: pb.GenerateRequest
    allowed_pools: tuple[str, ...] | None = None
    deadline: float | None = None
    metadata: Sequence[tuple[str, str]] = ()
    priority: int = 0
    affinity_key: str = ""
    department: str = ""


@dataclass(slots=True)
class RouteOutcome:
    """What routing did, for the response timings and the audit record."""

    worker_id: str = ""
    retries: int = 0
    queue_ms: float = 0.0


class Router:
    """Least-outstanding-requests routing over the registry's ready workers."""

    def __init__(self, registry: StaticRegistry) -> None:
        self._registry = registry
        self.last_worker: WorkerState | None = None

    def models(self) -> dict[str, ModelStatus]:
        """Every model any known worker serves (ready or not), with its ready-worker count."""
        pools: dict[str, set[str]] = {}
        ready: dict[str, int] = {}
        for worker in self._registry.workers:
            for model in worker.models:
                pools.setdefault(model, set()).add(worker.pool)
                ready[model] = ready.get(model, 0) + int(worker.ready)
        return {m: ModelStatus(m, tuple(sorted(p)), ready[m]) for m, p in sorted(pools.items())}

    def pick(self, model: str, allowed_pools: tuple[str, ...] | None) -> WorkerState:
        """The ready worker for `model` with the fewest requests in flight from this gateway."""
        candidates = [
            w
            for w in self._registry.workers
            if w.ready and model in w.models and (allowed_pools is None or w.pool in allowed_pools)
        ]
        if not candidates:
            raise Unavailable(
                f"no healthy worker serves model {model!r} in a pool cleared for this request; "
                "retry later or ask the operators",
                details=[retry_info(1.0)],
            )
        return min(candidates, key=lambda w: w.in_flight / max(1, w.max_slots))

    async def generate(
        self, call: WorkerCall, outcome: RouteOutcome
    ) -> AsyncIterator[pb.GenerateResponse]:
        """Pick a worker for `call` and relay its stream."""
        worker = self.pick(call.message.model, call.allowed_pools)
        outcome.worker_id = worker.worker_id
        async for message in self.stream(call, worker):
            yield message

    async def stream(
        self, call: WorkerCall, worker: WorkerState
    ) -> AsyncIterator[pb.GenerateResponse]:
        """Relay one generation from `worker`; the worker call is cancelled when we stop early."""
        timeout: float | None = None
        if call.deadline is not None:
            timeout = call.deadline - time.monotonic()
            if timeout <= 0:
                raise DeadlineExceeded("the deadline passed before a worker could be called")
        worker.in_flight += 1
        rpc = worker.stub.Generate(call.message, timeout=timeout, metadata=tuple(call.metadata))
        try:
            async for message in rpc:
                yield message
        except grpc.aio.AioRpcError as exc:
            raise map_worker_error(exc, worker) from None
        finally:
            worker.in_flight -= 1
            rpc.cancel()  # Python does not cancel an outgoing call for us when ours is cancelled


def map_worker_error(exc: grpc.aio.AioRpcError, worker: WorkerState) -> GatewayError:
    """A worker's status as the client should see it (never passed through unchanged)."""
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded("the deadline passed before the answer was complete")
    if code == grpc.StatusCode.CANCELLED:
        return Cancelled("the generation was cancelled")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(f"the model cannot run this request: {exc.details()}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(
            "the workers for this model are saturated; retry after the delay in RetryInfo",
            details=[retry_info(1.0)],
        )
    return Unavailable(
        f"worker {worker.worker_id or worker.target} failed ({code.name}); retry the request",
        details=[retry_info(0.5)],
    )
