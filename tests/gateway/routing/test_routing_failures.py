"""Worker failures through a real gateway: retry before the first token, UNAVAILABLE after it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest
from llmgateway.v1 import gateway_pb2 as gpb
from llmgateway.v1 import gateway_pb2_grpc
from llmgateway.worker.v1 import worker_pb2

from gateway.process.server import GatewayHandle
from gateway.routing.candidates import HashRing
from gateway.routing.picker import affinity_digest
from tests.helpers import StartGateway, StartWorker, wait_until
from workers.server import WorkerHandle
from workers.sim import SimConfig

MODEL = "llama-3.1-8b-instruct"
SLOW_START = SimConfig(time_to_first_token_ms=400, inter_token_latency_ms=2, prefill_ms_per_token=0)
STEADY = SimConfig(time_to_first_token_ms=5, inter_token_latency_ms=25, prefill_ms_per_token=0)
FAST = SimConfig(time_to_first_token_ms=5, inter_token_latency_ms=1, prefill_ms_per_token=0)
Connect = Callable[[GatewayHandle], grpc.aio.Channel]


def key_preferring(gateway: GatewayHandle, target: WorkerHandle, department: str = "qa") -> str:
    """An affinity key whose ring owner (for the test token's department) is `target`.

    With an affinity key the prompt plays no part in the hash, hence the empty message. Every
    worker serves MODEL, so the ring over all of them is the router's.
    """
    ring = HashRing(gateway.registry.workers)
    for i in range(1000):
        key = f"session-{i}"
        owner = ring.owner(affinity_digest(department, key, worker_pb2.GenerateRequest(), 512))
        if owner is not None and owner.target == target.target:
            return key
    raise AssertionError("no key prefers the worker")


def request(affinity_key: str, max_tokens: int = 16) -> gpb.GenerateStreamRequest:
    return gpb.GenerateStreamRequest(
        model=MODEL,
        prompt="Summarise the ward round",
        sampling=gpb.SamplingParams(max_tokens=max_tokens, seed=11),
        affinity_key=affinity_key,
    )


async def test_worker_killed_before_first_token_is_retried_transparently(
    start_sim_worker: StartWorker, start_test_gateway: StartGateway, channel_to: Connect
) -> None:
    doomed = await start_sim_worker(SLOW_START)
    healthy = await start_sim_worker(FAST)
    gateway = await start_test_gateway(doomed, healthy)
    key = key_preferring(gateway, doomed)
    async with channel_to(gateway) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        unary = gpb.GenerateRequest.FromString(request(key).SerializeToString())

        async def ask() -> gpb.GenerateResponse:
            return await stub.Generate(unary, timeout=5)

        answer = asyncio.create_task(ask())
        await wait_until(lambda: doomed.engine.load().active == 1, 1.0)  # in prefill, no token
        await doomed.server.stop(0)
        response = await answer
    assert response.usage.completion_tokens == 16 and response.text
    assert [r.request_id for r in healthy.engine.received] == [response.request_id]  # type: ignore[attr-defined]
    assert [r.request_id for r in doomed.engine.received] == [response.request_id]  # type: ignore[attr-defined]


async def test_worker_killed_mid_stream_ends_with_unavailable_without_duplicates(
    start_sim_worker: StartWorker, start_test_gateway: StartGateway, channel_to: Connect
) -> None:
    doomed = await start_sim_worker(STEADY)
    other = await start_sim_worker(FAST)
    gateway = await start_test_gateway(doomed, other)
    key = key_preferring(gateway, doomed)
    received: list[str] = []
    async with channel_to(gateway) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            async for message in stub.GenerateStream(request(key, max_tokens=60), timeout=5):
                received.append(message.text)
                if len(received) == 3:
                    await doomed.server.stop(0)
        full = [m.text async for m in stub.GenerateStream(request(key, max_tokens=60), timeout=5)]
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "after the answer had started" in (failed.value.details() or "")
    assert 3 <= len(received) < 60
    # What the client got is exactly the start of the answer: nothing repeated, nothing retried.
    assert "".join(full).startswith("".join(received))
    assert len(other.engine.received) == 1  # type: ignore[attr-defined]  # only the second request
