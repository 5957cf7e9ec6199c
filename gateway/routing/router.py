"""Routes one generation: pick (or wait for) a worker, retry before the first token, relay."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
from llmgateway.worker.v1 import worker_pb2 as pb
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.stop import stop_base

from gateway.request.errors import (
    Cancelled,
    DeadlineExceeded,
    GatewayError,
    ResourceExhausted,
    Unavailable,
    retry_info,
)
from gateway.routing.candidates import CandidateIndex
from gateway.routing.engine_refusals import invalid_request
from gateway.routing.metrics import RETRIES
from gateway.routing.picker import NoReadyWorker, affinity_digest, pick
from gateway.routing.registry import WorkerRegistry
from gateway.routing.scheduler import Scheduler
from gateway.routing.settings import RoutingSettings
from gateway.routing.worker import WorkerState

# Trailing metadata a worker sets when it refuses a generation because it is draining.
WORKER_STATE_KEY = "llmgw-worker-state"
_FAILURE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
)


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """A model as the workers report it."""

    name: str
    pools: tuple[str, ...]
    ready_workers: int


@dataclass(frozen=True, slots=True)
class WorkerCall:
    """One generation to forward: the worker message and how to route it.

    `deadline` is on the `time.monotonic()` clock (None: the caller set no deadline). `priority`
    orders the queue when workers are full (higher first); `department` and `affinity_key` choose
    the preferred worker (the prompt's prefix stands in for a missing key).
    """

    message: pb.GenerateRequest
    allowed_pools: tuple[str, ...] | None = None
    deadline: float | None = None
    metadata: Sequence[tuple[str, str]] = ()
    priority: int = 0
    affinity_key: str = ""
    department: str = ""
    model_digest: str = ""  # the register's digest of the model; empty: any worker serving it


@dataclass(slots=True)
class RouteOutcome:
    """What routing did, for the response timings and the audit record."""

    worker_id: str = ""
    retries: int = 0
    queue_ms: float = 0.0
    model_digest: str = ""  # what the chosen worker advertises for the model


_Opened = tuple[
    WorkerState,
    "grpc.aio.UnaryStreamCall[pb.GenerateRequest, pb.GenerateResponse]",
    AsyncIterator[pb.GenerateResponse],
    pb.GenerateResponse,
]


class _Retry(Exception):
    """A failure before the first token that another worker may not have."""

    def __init__(self, error: GatewayError, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


class _PastDeadline(stop_base):
    def __init__(self, deadline: float | None) -> None:
        self._deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.passed()

    def passed(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline


class Router:
    """Chooses workers for generations and relays their streams.

    A generation goes to a ready worker serving its model in a cleared pool, preferring the
    worker its affinity key hashes to while that one has room (`picker.pick`, over the workers
    `CandidateIndex` keeps per model and pools: a pick costs the same with 2 or 200 workers);
    when every such worker is full it waits in the priority queue (`Scheduler`). Failures before
    the first token that another worker may not share (connection refused, draining, queue full)
    are retried on a different worker, at most `max_attempts` tries in all and never past the
    deadline; after the first token a failure ends the stream with UNAVAILABLE, so no token is
    ever sent twice. Failed generations feed outlier ejection; worker status codes are mapped,
    never passed on.
    """

    def __init__(self, registry: WorkerRegistry, settings: RoutingSettings | None = None) -> None:
        self._registry = registry
        self._settings = settings or registry.settings
        self.scheduler = Scheduler(self._settings)
        self._index = CandidateIndex(registry)
        self._random = random.Random().random
        registry.subscribe(self.scheduler.wake)

    @property
    def registry(self) -> WorkerRegistry:
        return self._registry

    def health(self) -> dict[str, str]:
        """Routing health details: workers left out for a digest that differs from the register."""
        return self._index.digests.health()

    def serves(self, model: str) -> bool:
        """True if any known worker (ready or not) serves `model`."""
        return self._index.serves(model)

    def models(self) -> dict[str, ModelStatus]:
        """Every model any known worker serves (ready or not), with its ready-worker count."""
        pools: dict[str, set[str]] = {}
        ready: dict[str, int] = {}
        for worker in self._registry.workers:
            for model in worker.models:
                pools.setdefault(model, set()).add(worker.pool)
                ready[model] = ready.get(model, 0) + int(worker.ready)
        return {m: ModelStatus(m, tuple(sorted(p)), ready[m]) for m, p in sorted(pools.items())}

    def pick(
        self,
        model: str,
        allowed_pools: tuple[str, ...] | None,
        *,
        key: bytes | None = None,
        exclude: Sequence[WorkerState] = (),
        digest: str = "",
    ) -> WorkerState | None:
        """The worker for the next generation of `model`, or None while all are full.

        Raises Unavailable when no ready worker serves `model` (with `digest`, the registered
        build of it) in an allowed pool.
        """
        candidates = self._index.get(model, allowed_pools, digest)
        try:
            return pick(candidates, key, self._settings.affinity_load_factor, exclude, self._random)
        except NoReadyWorker:
            left_out = self._index.digests.mismatched(model) if digest else []
            if left_out and not candidates.workers:
                raise Unavailable(
                    f"no worker serves the registered build of model {model!r} "
                    f"({len(left_out)} serve another build and get no traffic); "
                    "ask the operators",
                    details=[retry_info(5.0)],
                ) from None
            raise Unavailable(
                f"no healthy worker serves model {model!r} in a pool cleared for this request; "
                "retry later or ask the operators",
                details=[retry_info(1.0)],
            ) from None

    async def generate(
        self, call: WorkerCall, outcome: RouteOutcome
    ) -> AsyncIterator[pb.GenerateResponse]:
        """Route `call` and relay the chosen worker's stream (see the class docstring)."""
        key = affinity_digest(
            call.department, call.affinity_key, call.message, self._settings.affinity_prefix_chars
        )
        tried: list[WorkerState] = []
        # The first attempt runs without tenacity, whose per-call machinery would cost every
        # request; only a retryable failure enters the retry loop.
        try:
            worker, rpc, messages, first = await self._attempt(call, key, tried, outcome, None)
        except _Retry as failed:
            worker, rpc, messages, first = await self._retry(call, key, tried, outcome, failed)
        try:
            yield first
            async for message in messages:
                yield message
        except grpc.aio.AioRpcError as exc:
            self._failed(worker, exc)
            raise _mid_stream_error(exc, worker) from None
        else:
            self._registry.ejector.success(worker)
        finally:
            rpc.cancel()  # Python does not cancel an outgoing call for us when ours is cancelled
            self._release(worker)

    async def _attempt(
        self,
        call: WorkerCall,
        key: bytes,
        tried: list[WorkerState],
        outcome: RouteOutcome,
        last: _Retry | None,
    ) -> _Opened:
        """One try on a worker not tried yet; raises `_Retry` when another worker may succeed."""
        try:
            worker = await self._acquire(call, key, tried, outcome)
        except Unavailable:
            if last is None:
                raise
            raise last.error from None  # no other worker left: the real cause
        tried.append(worker)
        outcome.worker_id = worker.name
        outcome.model_digest = worker.model_digests.get(call.message.model, "")
        outcome.retries = len(tried) - 1
        rpc, messages, first = await self._open(call, worker)
        return worker, rpc, messages, first

    async def _retry(
        self,
        call: WorkerCall,
        key: bytes,
        tried: list[WorkerState],
        outcome: RouteOutcome,
        failed: _Retry,
    ) -> _Opened:
        """The tries after a first retryable failure: at most `max_attempts` in all, by deadline."""
        past_deadline = _PastDeadline(call.deadline)
        if self._settings.max_attempts <= 1 or past_deadline.passed():
            raise failed.error from None
        last = failed
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._settings.max_attempts - 1) | past_deadline,
            retry=retry_if_exception_type(_Retry),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        return await self._attempt(call, key, tried, outcome, last)
                    except _Retry as exc:
                        last = exc
                        raise
        except _Retry as exc:
            raise exc.error from None
        raise AssertionError("tenacity ended without a result or an exception")

    async def _acquire(
        self, call: WorkerCall, key: bytes, tried: list[WorkerState], outcome: RouteOutcome
    ) -> WorkerState:
        model, pools = call.message.model, call.allowed_pools

        def select() -> WorkerState | None:
            return self.pick(model, pools, key=key, exclude=tried, digest=call.model_digest)

        started = time.monotonic()
        try:
            return await self.scheduler.acquire(
                select, priority=call.priority, department=call.department, deadline=call.deadline
            )
        finally:
            outcome.queue_ms += (time.monotonic() - started) * 1000

    async def _open(
        self, call: WorkerCall, worker: WorkerState
    ) -> tuple[
        grpc.aio.UnaryStreamCall[pb.GenerateRequest, pb.GenerateResponse],
        AsyncIterator[pb.GenerateResponse],
        pb.GenerateResponse,
    ]:
        """Start the worker call and wait for its first message (until then, retry is safe)."""
        timeout: float | None = None
        if call.deadline is not None:
            timeout = call.deadline - time.monotonic()
            if timeout <= 0:
                self._release(worker)
                raise DeadlineExceeded("the deadline passed before a worker could be called")
        rpc = worker.stub.Generate(call.message, timeout=timeout, metadata=tuple(call.metadata))
        messages = rpc.__aiter__()
        try:
            first = await messages.__anext__()
        except StopAsyncIteration:
            rpc.cancel()
            self._release(worker)
            raise Unavailable(
                f"worker {worker.name} ended the generation without an answer; retry the request",
                details=[retry_info(0.5)],
            ) from None
        except grpc.aio.AioRpcError as exc:
            self._release(worker)
            raise self._before_first_token(exc, worker) from None
        except BaseException:
            rpc.cancel()
            self._release(worker)
            raise
        return rpc, messages, first

    def _before_first_token(self, exc: grpc.aio.AioRpcError, worker: WorkerState) -> Exception:
        """A failure before any token: a `_Retry` when another worker may succeed."""
        code = exc.code()
        error = map_worker_error(exc, worker)
        if _worker_state(exc) == "failed":
            # The engine died under this request, which may be what killed it: eject the
            # worker at once (it exits and is restarted) and do not hand the request on.
            self._registry.ejector.eject_now(worker)
            self._registry.notify()
            return error
        if _is_draining(exc):
            worker.draining = True  # stop picking it now, before its next load report says so
            self._registry.notify()
            reason = "draining"
        elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            reason = "queue_full"
        elif code in _FAILURE_CODES or code == grpc.StatusCode.NOT_FOUND:
            self._failed(worker, exc)
            reason = code.name.lower()
        else:
            return error
        RETRIES.labels(reason=reason).inc()
        return _Retry(error, reason)

    def _failed(self, worker: WorkerState, exc: grpc.aio.AioRpcError) -> None:
        if _worker_state(exc) == "failed":
            self._registry.ejector.eject_now(worker)
            self._registry.notify()
        elif exc.code() in _FAILURE_CODES and not _is_draining(exc):
            self._registry.ejector.failure(worker)
            self._registry.notify()

    def _release(self, worker: WorkerState) -> None:
        worker.finished()
        self._registry.retire_if_idle(worker)
        self.scheduler.wake()


def _worker_state(exc: grpc.aio.AioRpcError) -> str:
    metadata = exc.trailing_metadata() or ()
    return next((str(v) for k, v in metadata if k == WORKER_STATE_KEY), "")


def _is_draining(exc: grpc.aio.AioRpcError) -> bool:
    return _worker_state(exc) == "draining"


def _mid_stream_error(exc: grpc.aio.AioRpcError, worker: WorkerState) -> GatewayError:
    code = exc.code()
    if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        return map_worker_error(exc, worker)
    return Unavailable(
        f"worker {worker.name} failed after the answer had started ({code.name}); the answer is "
        "incomplete and was not retried, to avoid repeating text: send the request again",
        details=[retry_info(0.5)],
    )


def map_worker_error(exc: grpc.aio.AioRpcError, worker: WorkerState) -> GatewayError:
    """A worker's status as the client should see it (never passed through unchanged)."""
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded("the deadline passed before the answer was complete")
    if code == grpc.StatusCode.CANCELLED:
        return Cancelled("the generation was cancelled")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return invalid_request(exc)
    if _worker_state(exc) == "failed":
        return Unavailable(
            f"worker {worker.name} failed while running this request and is being restarted; "
            "the request was not retried on another worker: send it again",
            details=[retry_info(1.0)],
        )
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(
            "the workers for this model are saturated; retry after the delay in RetryInfo",
            details=[retry_info(1.0)],
        )
    return Unavailable(
        f"worker {worker.name} failed ({code.name}); retry the request",
        details=[retry_info(0.5)],
    )
