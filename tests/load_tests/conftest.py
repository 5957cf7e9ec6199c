"""Fixtures for the load tool's tests: fake gateways on 127.0.0.1:0 and scenario files."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc.aio
import pytest
import yaml

from tests.load_tests.fake_inference import Behaviour, FakeGateway, start_fake_gateway

StartGateway = Callable[[Behaviour], Awaitable[FakeGateway]]
WriteScenario = Callable[[dict[str, object]], Path]


@pytest.fixture
async def start_gateway() -> AsyncIterator[StartGateway]:
    """Start fake gateways; all are stopped when the test ends."""
    servers: list[grpc.aio.Server] = []

    async def start(behaviour: Behaviour) -> FakeGateway:
        server, state = await start_fake_gateway(behaviour)
        servers.append(server)
        return state

    yield start
    for server in servers:
        await server.stop(grace=None)


@pytest.fixture
def write_scenario(tmp_path: Path) -> WriteScenario:
    """Write a scenario YAML file into the test's directory and return its path."""

    def write(data: dict[str, object]) -> Path:
        path = tmp_path / f"scenario-{len(list(tmp_path.glob('scenario-*')))}.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    return write
