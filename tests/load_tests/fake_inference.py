"""A real grpc.aio InferenceService with controlled latency and injected errors."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import grpc.aio
from llmgateway.v1 import gateway_pb2, gateway_pb2_grpc

# Requests for these models fail on purpose, so the expected count of each status is exact.
EXHAUSTED_MODEL = "exhausted-model"
UNAVAILABLE_MODEL = "unavailable-model"


@dataclass
class Behaviour:
    """How the fake gateway answers: latencies in seconds, optional capacity (slots)."""

    latency_s: float = 0.0
    ttft_s: float = 0.0
    itl_s: float = 0.0
    tokens_per_chunk: int = 1
    capacity: int | None = None


@dataclass
class FakeGateway:
    """The server's view: what it received, so tests can check the tool against it."""

    target: str
    behaviour: Behaviour
    calls: Counter[str] = field(default_factory=Counter)
    authorizations: Counter[str] = field(default_factory=Counter)
    max_tokens: Counter[int] = field(default_factory=Counter)


class _Servicer(gateway_pb2_grpc.InferenceServiceServicer):
    def __init__(self, state: FakeGateway) -> None:
        self._state = state
        capacity = state.behaviour.capacity
        self._slots = asyncio.Semaphore(capacity) if capacity else None

    async def _admit(
        self,
        request: gateway_pb2.GenerateRequest | gateway_pb2.GenerateStreamRequest,
        context: grpc.aio.ServicerContext[object, object],
        rpc: str,
    ) -> None:
        metadata = dict(context.invocation_metadata() or ())
        self._state.authorizations[str(metadata.get("authorization", ""))] += 1
        self._state.calls[f"{rpc}:{request.model}"] += 1
        self._state.max_tokens[request.sampling.max_tokens] += 1
        if request.model in (EXHAUSTED_MODEL, UNAVAILABLE_MODEL):
            # Errors take time too, as a gateway's do; instant ones would flood a closed loop.
            await asyncio.sleep(self._state.behaviour.latency_s or self._state.behaviour.ttft_s)
        if request.model == EXHAUSTED_MODEL:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full: retry later")
        if request.model == UNAVAILABLE_MODEL:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no worker: retry elsewhere")

    async def Generate(
        self,
        request: gateway_pb2.GenerateRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> gateway_pb2.GenerateResponse:
        await self._admit(request, context, "unary")
        n = request.sampling.max_tokens
        if self._slots is None:
            await asyncio.sleep(self._state.behaviour.latency_s)
        else:
            async with self._slots:
                await asyncio.sleep(self._state.behaviour.latency_s)
        return gateway_pb2.GenerateResponse(
            request_id=request.client_request_id,
            model=request.model,
            text="x" * n,
            usage=gateway_pb2.Usage(completion_tokens=n, total_tokens=n),
            finish_reason=gateway_pb2.FINISH_REASON_LENGTH,
        )

    async def GenerateStream(
        self,
        request: gateway_pb2.GenerateStreamRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> AsyncIterator[gateway_pb2.GenerateStreamResponse]:
        await self._admit(request, context, "stream")
        behaviour = self._state.behaviour
        n = request.sampling.max_tokens
        await asyncio.sleep(behaviour.ttft_s)
        sent = 0
        while sent < n:
            if sent:
                await asyncio.sleep(behaviour.itl_s * behaviour.tokens_per_chunk)
            chunk = min(behaviour.tokens_per_chunk, n - sent)
            sent += chunk
            yield gateway_pb2.GenerateStreamResponse(text="x" * chunk, token_count=chunk)
        yield gateway_pb2.GenerateStreamResponse(
            finish_reason=gateway_pb2.FINISH_REASON_LENGTH,
            usage=gateway_pb2.Usage(completion_tokens=n, total_tokens=n),
        )

    async def ListModels(
        self,
        request: gateway_pb2.ListModelsRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> gateway_pb2.ListModelsResponse:
        return gateway_pb2.ListModelsResponse()


async def start_fake_gateway(behaviour: Behaviour) -> tuple[grpc.aio.Server, FakeGateway]:
    """Serve InferenceService on 127.0.0.1:0 with `behaviour`; the caller stops the server."""
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    state = FakeGateway(target=f"127.0.0.1:{port}", behaviour=behaviour)
    gateway_pb2_grpc.add_InferenceServiceServicer_to_server(_Servicer(state), server)
    await server.start()
    return server, state
