"""Waiting in tests for a condition that another task, thread or process makes true."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

Predicate = Callable[[], bool] | Callable[[], Awaitable[bool]]


async def wait_until(
    predicate: Predicate, within: float = 5.0, *, every: float = 0.002, what: str = "condition"
) -> None:
    """Check `predicate` (plain or async) every `every` seconds until it is true.

    Fails the test with an AssertionError naming `what` if it is still false after `within`
    seconds. The deadline is wall-clock on purpose: the condition depends on real servers.
    """
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within * 1000:.0f} ms")
        await asyncio.sleep(every)


def wait_until_sync(
    predicate: Callable[[], bool],
    within: float = 5.0,
    *,
    every: float = 0.02,
    what: str = "condition",
) -> None:
    """`wait_until` for code outside an event loop (fixtures that start servers synchronously)."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within * 1000:.0f} ms")
        time.sleep(every)
