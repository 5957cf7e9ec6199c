"""Router-level fixtures: a real registry and router over real sim workers on 127.0.0.1:0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from gateway.routing.registry import StaticRegistry, WorkerRegistry
from gateway.routing.router import Router
from tests.gateway.routing.routing_helpers import FAST_ROUTING, StartRouter
from workers.server import WorkerHandle


@pytest.fixture
async def start_router() -> AsyncIterator[StartRouter]:
    """Start routers over given workers (StaticRegistry) or a given registry; closed at teardown."""
    registries: list[WorkerRegistry] = []

    async def start(
        *workers: WorkerHandle, registry: WorkerRegistry | None = None, **settings: object
    ) -> Router:
        if registry is None:
            configured = replace(FAST_ROUTING, workers=tuple(w.target for w in workers), **settings)  # type: ignore[arg-type]
            registry = StaticRegistry(configured)
        await registry.start()
        registries.append(registry)
        return Router(registry)

    yield start
    for registry in registries:
        await registry.close()
