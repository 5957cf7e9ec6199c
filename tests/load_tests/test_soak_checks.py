"""The soak's invariant checks fail when their invariant is broken (so a PASS means something)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from audit.sqlite_ledger import SqliteLedger
from load_tests import soak, soak_stack
from tests.support.redis_server import RedisServer


def _soak(seconds: float, memory: list[tuple[float, int]]) -> soak.Soak:
    stack: Any = None  # the memory check reads samples only
    return soak.Soak(stack, seconds, 10.0, random.Random(0), memory=memory)


def test_memory_check_fails_on_growth_and_passes_when_flat() -> None:
    mb = 2**20
    flat: list[tuple[float, int]] = [(t, 70 * mb) for t in range(0, 61, 2)]
    growing: list[tuple[float, int]] = [(t, (70 + t) * mb) for t in range(0, 61, 2)]
    assert soak._memory(_soak(60, flat)).ok
    assert not soak._memory(_soak(60, growing)).ok


def test_lease_check_fails_on_a_held_lease_or_an_open_reservation(tmp_path: Path) -> None:
    base = f"llmgw:{{dept:{soak_stack.DEPARTMENT}}}"
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            assert soak._leases(client).ok
            client.zadd(f"{base}:d:streams", {"r1": 1})
            assert not soak._leases(client).ok
            client.delete(f"{base}:d:streams")
            client.hset(f"{base}:res:r2", mapping={"held": 1, "reserved": 10})
            assert not soak._leases(client).ok
            client.hset(f"{base}:res:r2", "used", 7)
            assert soak._leases(client).ok
        finally:
            client.close()


def test_a_reservation_that_expires_during_the_check_is_not_open() -> None:
    # A soak of 30 minutes reported two "reservations never completed" whose hashes were empty:
    # settled reservations expiring between the key scan and the read of each key.
    base = f"llmgw:{{dept:{soak_stack.DEPARTMENT}}}"
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            client.hset(f"{base}:res:settled", mapping={"held": 0, "reserved": 10, "used": 7})
            scan = client.scan_iter

            def scan_then_expire(*args: Any, **kwargs: Any) -> Iterator[Any]:
                for key in scan(*args, **kwargs):
                    client.delete(key)  # gone before the check reads it
                    yield key

            client.scan_iter = scan_then_expire  # type: ignore[method-assign]
            assert soak._leases(client).ok
        finally:
            client.close()


async def test_a_data_dir_with_state_is_refused(tmp_path: Path) -> None:
    (tmp_path / "audit.db").write_bytes(b"an earlier run")
    with pytest.raises(ValueError, match="not empty"):
        await soak.run_soak(1.0, data_dir=tmp_path)


async def test_the_checks_wait_for_a_late_completion_and_no_longer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The 60 s soak in CI failed once with a Redis pause that ended with the load: a completion
    # the gateway was still retrying (every 1 s) was reported as a leaked lease and its unused
    # tokens as overcharged. The checks now give such completions SETTLE_S to land.
    base = f"llmgw:{{dept:{soak_stack.DEPARTMENT}}}"
    ledger = SqliteLedger(tmp_path / "audit.db")
    ledger.close()  # an empty ledger: nothing delivered
    stack: Any = SimpleNamespace(ledger=tmp_path / "audit.db")
    run = soak.Soak(stack, 60, 10.0, random.Random(0))
    monkeypatch.setattr(soak, "SETTLE_S", 2.0)
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            # Admitted and charged 66 tokens; its completion has not landed yet.
            client.hset(f"{base}:d:day", "u", 66)
            client.zadd(f"{base}:d:streams", {"late": 1})
            client.hset(f"{base}:res:late", mapping={"held": 1, "reserved": 66})

            async def complete_late() -> None:
                await asyncio.sleep(0.8)  # as complete.lua does: refund, release, mark used
                client.hset(f"{base}:d:day", "u", 0)
                client.zrem(f"{base}:d:streams", "late")
                client.hset(f"{base}:res:late", mapping={"held": 0, "used": 0})

            landing = asyncio.create_task(complete_late())
            tokens, leases = await soak._settled(run, client)
            await landing
            assert tokens.ok and leases.ok

            client.hset(f"{base}:res:stuck", mapping={"held": 1, "reserved": 5})  # never lands
            started = time.monotonic()
            tokens, leases = await soak._settled(run, client)
            assert not leases.ok and "1 reservations never completed" in leases.detail
            assert 2.0 <= time.monotonic() - started < 5.0
        finally:
            client.close()
