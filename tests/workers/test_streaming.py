"""Coalescing: the first item is never delayed, a slow consumer gets merged batches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

import pytest

from workers.streaming import coalesce


async def numbers(n: int, delay: float = 0.0, fail_at: int | None = None) -> AsyncIterator[int]:
    for i in range(n):
        if fail_at == i:
            raise RuntimeError("boom")
        await asyncio.sleep(delay)
        yield i


async def test_fast_consumer_gets_items_one_by_one() -> None:
    batches = [b async for b in coalesce(numbers(5, delay=0.01))]
    assert batches == [[0], [1], [2], [3], [4]]


async def test_slow_consumer_gets_everything_merged_in_order() -> None:
    batches = []
    async for batch in coalesce(numbers(200)):
        batches.append(batch)
        await asyncio.sleep(0.01)
    assert [i for b in batches for i in b] == list(range(200))
    assert batches[0] == [0]  # the first item goes out alone, at once
    assert len(batches) < 20


async def test_error_is_raised_after_preceding_items() -> None:
    seen: list[int] = []
    with pytest.raises(RuntimeError, match="boom"):
        async for batch in coalesce(numbers(10, fail_at=3)):
            seen.extend(batch)
    assert seen == [0, 1, 2]


async def test_leaving_early_closes_the_source() -> None:
    closed = asyncio.Event()

    async def source() -> AsyncIterator[int]:
        try:
            for i in range(1000):
                await asyncio.sleep(0.001)
                yield i
        finally:
            closed.set()

    stream = coalesce(source())
    async for _ in stream:
        break
    await cast(AsyncGenerator[list[int], None], stream).aclose()
    assert closed.is_set()
