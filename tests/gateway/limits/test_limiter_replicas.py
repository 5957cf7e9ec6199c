"""Limits hold across gateway replicas sharing one Redis: separate clients and processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.limits import Admission, Completion, RedisLimiter
from policy.limits import DepartmentLimits, Limit, LimitSet
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

REPLICA = Path(__file__).with_name("replica_process.py")


def admission(limits: DepartmentLimits, user: str = "u") -> Admission:
    return Admission(uuid.uuid4().hex, limits.department, user, 0, limits)


async def test_three_replicas_admit_exactly_the_rate_under_5x_overload(
    redis_limiters: Callable[..., RedisLimiter],
) -> None:
    replicas = [redis_limiters() for _ in range(3)]
    # One refill per 2 minutes: the burst of 150 sees exactly the 30 of the bucket.
    limits = DepartmentLimits("triage", LimitSet(requests_per_minute=Limit(30, 3600)))
    # Ten waves of 15 concurrent admissions, 5 per replica. Each replica pipelines what it sends
    # in one event-loop iteration, so one wave of 150 would reach Redis as three batches and the
    # first replica's batch alone would empty the bucket; waves keep every replica taking part.
    decisions = []
    for _ in range(10):
        decisions += await asyncio.gather(
            *(replicas[i % 3].admit(admission(limits)) for i in range(15))
        )
    assert sum(d.allowed for d in decisions) == 30
    per_replica = [sum(d.allowed for d in decisions[i::3]) for i in range(3)]
    assert sum(per_replica) == 30 and max(per_replica) < 30  # all replicas took part


async def test_concurrency_limit_holds_across_replicas(
    redis_limiters: Callable[..., RedisLimiter],
) -> None:
    replicas = [redis_limiters() for _ in range(3)]
    limits = DepartmentLimits("icu", LimitSet(concurrent_streams=Limit(5, 0)))
    first = await asyncio.gather(*(replicas[i % 3].admit(admission(limits)) for i in range(30)))
    held = [d.lease for d in first if d.lease is not None]
    assert len(held) == 5
    # Released on one replica, the slots are free on every other one.
    for lease in held[:2]:
        assert await replicas[0].complete(lease, 0) is Completion.RECONCILED
    second = await asyncio.gather(*(replicas[i % 3].admit(admission(limits)) for i in range(30)))
    assert sum(d.allowed for d in second) == 2


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "expected"), [("rpm", 30), ("streams", 7)])
def test_replicas_in_separate_processes(
    redis_server: RedisServer, mode: str, expected: int
) -> None:
    redis_server.command("FLUSHALL")
    start_at = time.time() + 2.0  # after every interpreter has started and connected
    procs = [
        subprocess.Popen(
            [sys.executable, str(REPLICA), redis_server.url, str(start_at), mode, "50"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert sum(r["total"] for r in results) == 150
    assert sum(r["allowed"] for r in results) == expected
