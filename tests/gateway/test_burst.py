"""A burst of concurrent calls beyond gRPC's default pending-call limit is served, not cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc

from gateway.process.server import GatewayHandle

BURST = 1_500  # gRPC core cancels calls beyond 1,000 waiting to be accepted, by default


async def test_burst_of_calls_is_queued_not_cancelled(
    gateway: GatewayHandle, channel_to: Callable[[GatewayHandle], grpc.aio.Channel]
) -> None:
    channels = [channel_to(gateway) for _ in range(10)]
    try:
        stubs = [gateway_pb2_grpc.InferenceServiceStub(c) for c in channels]
        results = await asyncio.gather(
            *(stubs[i % 10].ListModels(pb.ListModelsRequest(), timeout=60) for i in range(BURST)),
            return_exceptions=True,
        )
    finally:
        await asyncio.gather(*(c.close() for c in channels))
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, f"{len(failures)} calls failed, e.g. {failures[0]!r}"
    assert all(len(r.models) == 2 for r in results)  # type: ignore[union-attr]
