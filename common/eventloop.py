"""The event loop every server process runs on, and its shutdown signal."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


async def wait_for_shutdown_signal() -> None:
    """Return when SIGTERM or SIGINT arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on uvloop, the event loop every server process uses.

    uvloop's loop costs less CPU per callback and socket operation than asyncio's own, and a
    gateway request runs dozens of each (gRPC, Redis, spool wake-ups); grpc.aio supports it.
    """
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
