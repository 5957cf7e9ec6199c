"""Shared fixtures: real workers and gateways on 127.0.0.1:0, real channels."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from llmgateway.v1 import gateway_pb2_grpc

from gateway.server import GatewayHandle, start_gateway
from gateway.settings import GatewaySettings, RoutingSettings, ServerSettings
from tests.helpers import StartGateway, StartWorker
from workers.server import WorkerHandle, start_worker
from workers.sim import SimConfig, SimEngine

# Fast latency model for tests: visible streaming, quick suites.
FAST_SIM = SimConfig(time_to_first_token_ms=5, inter_token_latency_ms=1, prefill_ms_per_token=0)


@pytest.fixture
async def start_sim_worker() -> AsyncIterator[StartWorker]:
    """Start sim workers on 127.0.0.1:0; all are stopped at teardown."""
    started: list[WorkerHandle] = []

    async def start(
        config: SimConfig = FAST_SIM, pool: str = "onprem-gpu", **kw: object
    ) -> WorkerHandle:
        handle = await start_worker(
            SimEngine(config, record_requests=1000), pool=pool, worker_id=f"sim-{len(started)}"
        )
        started.append(handle)
        return handle

    yield start
    for handle in started:
        await handle.stop(grace=0)


@pytest.fixture
async def start_test_gateway(tmp_path: Path) -> AsyncIterator[StartGateway]:
    """Start gateways on 127.0.0.1:0 routing to the given workers."""
    started: list[GatewayHandle] = []

    async def start(
        *workers: WorkerHandle, settings: GatewaySettings | None = None
    ) -> GatewayHandle:
        base = settings or GatewaySettings(data_dir=tmp_path / f"gw{len(started)}")
        configured = replace(
            base,
            server=replace(base.server, listen="127.0.0.1:0"),
            routing=replace(base.routing, workers=tuple(w.target for w in workers)),
        )
        handle = await start_gateway(configured)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        await handle.stop(grace=0)


@pytest.fixture
async def sim_worker(start_sim_worker: StartWorker) -> WorkerHandle:
    return await start_sim_worker()


@pytest.fixture
async def gateway(start_test_gateway: StartGateway, sim_worker: WorkerHandle) -> GatewayHandle:
    return await start_test_gateway(sim_worker)


@pytest.fixture
async def stub(gateway: GatewayHandle) -> AsyncIterator[gateway_pb2_grpc.InferenceServiceAsyncStub]:
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        yield gateway_pb2_grpc.InferenceServiceStub(channel)  # type: ignore[misc]


__all__ = ["FAST_SIM", "RoutingSettings", "ServerSettings"]
