"""Health, reflection and graceful shutdown of a real gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc

from gateway.process.server import GatewayHandle
from tests.helpers import ChannelTo, StartGateway, StartWorker
from workers.sim import SimConfig


async def _health(target: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return int(response.status)


async def test_health_serving_then_not_serving_on_shutdown(gateway: GatewayHandle) -> None:
    target = gateway.target
    assert await _health(target) == health_pb2.HealthCheckResponse.SERVING
    assert (
        await _health(target, "llmgateway.v1.InferenceService")
        == health_pb2.HealthCheckResponse.SERVING
    )
    await gateway.health.enter_graceful_shutdown()
    assert await _health(target) == health_pb2.HealthCheckResponse.NOT_SERVING
    await gateway.stop(grace=0)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _health(target)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_shutdown_lets_in_flight_stream_finish(
    start_sim_worker: StartWorker, start_test_gateway: StartGateway, channel_to: ChannelTo
) -> None:
    worker = await start_sim_worker(SimConfig(time_to_first_token_ms=5, inter_token_latency_ms=10))
    gateway = await start_test_gateway(worker)
    async with channel_to(gateway) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        call = stub.GenerateStream(
            pb.GenerateStreamRequest(
                model="llama-3.1-8b-instruct", prompt="x", sampling=pb.SamplingParams(max_tokens=30)
            )
        )
        # grpc-stubs type read() as `object | Response`; EOF here would fail on `.text` below.
        first = cast(pb.GenerateStreamResponse, await call.read())
        assert first.text
        stopping = asyncio.create_task(gateway.stop(grace=5))
        rest: list[pb.GenerateStreamResponse] = []
        while isinstance(message := await call.read(), pb.GenerateStreamResponse):
            rest.append(message)
        await stopping
    assert rest[-1].finish_reason == pb.FINISH_REASON_LENGTH
    assert first.token_count + sum(m.token_count for m in rest) == 30


async def test_reflection_lists_services(gateway: GatewayHandle) -> None:
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def requests() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        services = set()
        async for response in stub.ServerReflectionInfo(requests()):
            services |= {s.name for s in response.list_services_response.service}
    assert {
        "llmgateway.v1.InferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services
