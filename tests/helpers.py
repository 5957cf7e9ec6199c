"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from gateway.server import GatewayHandle
from workers.server import WorkerHandle

StartWorker = Callable[..., Awaitable[WorkerHandle]]
StartGateway = Callable[..., Awaitable[GatewayHandle]]


async def wait_until(predicate: Callable[[], bool], within: float) -> None:
    """Poll `predicate` every 2 ms; fail if it is not true within `within` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {within * 1000:.0f} ms")
        await asyncio.sleep(0.002)
