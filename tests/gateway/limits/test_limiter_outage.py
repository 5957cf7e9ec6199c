"""Redis stopped or hung under load: bounded decisions, the configured mode, then recovery."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import pytest
from prometheus_client import REGISTRY

from gateway.limits import Admission, AdmissionDecision, Backend, Completion, Lease, RedisLimiter
from gateway.limits.checks import plan, reservation_key
from policy.limits import DepartmentLimits, FailureMode, Limit, LimitSet
from tests.gateway.limits.conftest import redis_settings
from tests.support.redis_server import BUSY_SCRIPT, RedisServer, resp

pytestmark = pytest.mark.integration

BOUND_S = 0.05
# Scheduling slack on a loaded 2-core CI machine; still far below redis-py's default stall.
SLACK_S = 0.15


def limits(mode: FailureMode, rpm: int = 1000) -> DepartmentLimits:
    return DepartmentLimits(
        department=f"dept-{mode.value}",
        department_limits=LimitSet(
            requests_per_minute=Limit(rpm, 3600), concurrent_streams=Limit(100, 0)
        ),
        failure_mode=mode,
    )


async def timed_admit(
    limiter: RedisLimiter, dept: DepartmentLimits
) -> tuple[AdmissionDecision, float]:
    started = time.perf_counter()
    decision = await limiter.admit(Admission(uuid.uuid4().hex, dept.department, "u", 10, dept))
    return decision, time.perf_counter() - started


def make(server: RedisServer, **overrides: object) -> RedisLimiter:
    values: dict[str, object] = {
        "decision_timeout_s": BOUND_S,
        "socket_timeout_s": BOUND_S,
        "connect_timeout_s": BOUND_S,
        "retry_interval_s": 0.2,
    }
    return RedisLimiter.from_settings(redis_settings(server, **(values | overrides)))


async def test_fail_closed_refuses_within_bound_then_recovers(redis_server: RedisServer) -> None:
    limiter = make(redis_server)
    dept = limits(FailureMode.CLOSED)
    before, _ = await timed_admit(limiter, dept)
    assert before.allowed and before.lease is not None and before.lease.backend is Backend.REDIS
    redis_server.stop()
    during = await asyncio.gather(*(timed_admit(limiter, dept) for _ in range(50)))
    for _ in range(5):  # keep the load going across several retry intervals
        await asyncio.sleep(0.1)
        during += await asyncio.gather(*(timed_admit(limiter, dept) for _ in range(10)))
    assert max(elapsed for _, elapsed in during) < BOUND_S + SLACK_S
    assert all(d.unavailable and not d.allowed and d.degraded for d, _ in during)
    assert all(d.violated == "limiter.unavailable" and d.retry_after_s > 0 for d, _ in during)
    assert limiter.health()["limiter"].startswith("degraded")
    assert REGISTRY.get_sample_value("llmgw_limiter_degraded") == 1.0
    # Completing a Redis lease during the outage does not hang either; its TTL will clean up.
    started = time.perf_counter()
    assert await limiter.complete(before.lease, 5) is Completion.FAILED
    assert time.perf_counter() - started < BOUND_S + SLACK_S

    redis_server.start()
    await asyncio.sleep(0.25)  # past the retry interval: the next decision probes Redis
    after, _ = await timed_admit(limiter, dept)
    assert after.allowed and not after.degraded
    assert after.lease is not None and after.lease.backend is Backend.REDIS
    assert limiter.health() == {"limiter": "ok (redis)"}
    assert REGISTRY.get_sample_value("llmgw_limiter_degraded") == 0.0
    await limiter.close()


async def test_fail_open_uses_local_per_replica_limits(redis_server: RedisServer) -> None:
    limiter = make(redis_server, fallback_replicas=2)
    dept = limits(FailureMode.OPEN, rpm=10)
    local_before = (
        REGISTRY.get_sample_value(
            "llmgw_limiter_decisions_total", {"backend": "local", "outcome": "allowed"}
        )
        or 0.0
    )
    redis_server.stop()
    during = await asyncio.gather(*(timed_admit(limiter, dept) for _ in range(20)))
    assert max(elapsed for _, elapsed in during) < BOUND_S + SLACK_S
    allowed = [d for d, _ in during if d.allowed]
    assert len(allowed) == 5  # this replica's half of 10 requests per hour
    assert all(d.degraded and not d.unavailable for d, _ in during)
    assert {d.violated for d, _ in during if not d.allowed} == {"department.requests_per_minute"}
    assert all(d.lease is not None and d.lease.backend is Backend.LOCAL for d in allowed)
    local_after = REGISTRY.get_sample_value(
        "llmgw_limiter_decisions_total", {"backend": "local", "outcome": "allowed"}
    )
    assert local_after == local_before + 5
    lease = allowed[0].lease
    assert lease is not None
    assert await limiter.complete(lease, 3) is Completion.RECONCILED

    redis_server.start()
    await asyncio.sleep(0.25)
    after, _ = await timed_admit(limiter, dept)
    assert after.allowed and not after.degraded
    assert after.lease is not None and after.lease.backend is Backend.REDIS
    await limiter.close()


async def test_hung_redis_times_out_within_bound_and_leaks_nothing(
    redis_server: RedisServer,
) -> None:
    limiter = make(redis_server)
    dept = DepartmentLimits(
        "hung", LimitSet(concurrent_streams=Limit(3, 0)), failure_mode=FailureMode.CLOSED
    )
    assert (await timed_admit(limiter, dept))[0].allowed  # connected, then the server hangs
    with socket.create_connection(("127.0.0.1", redis_server.port)) as blocker:
        blocker.sendall(resp("EVAL", BUSY_SCRIPT, "0", "400000"))
        await asyncio.sleep(0.05)
        during = await asyncio.gather(*(timed_admit(limiter, dept) for _ in range(5)))
        assert blocker.recv(64) == b":1\r\n"  # the busy script ended
    assert max(elapsed for _, elapsed in during) < BOUND_S + SLACK_S
    assert all(d.unavailable for d, _ in during)
    # The timed-out scripts still ran once the server was free (their replies were lost) and took
    # the remaining 2 streams; the limiter's background release gives them back.
    await asyncio.sleep(0.8)
    after = [await timed_admit(limiter, dept) for _ in range(3)]
    assert [d.allowed for d, _ in after] == [True, True, False]
    await limiter.close()


async def test_script_cache_flush_is_recovered(redis_server: RedisServer) -> None:
    limiter = make(redis_server, decision_timeout_s=2.0, socket_timeout_s=2.0)
    dept = limits(FailureMode.CLOSED)
    first, _ = await timed_admit(limiter, dept)
    redis_server.command("SCRIPT", "FLUSH")
    second, _ = await timed_admit(limiter, dept)
    assert first.allowed and second.allowed and not second.degraded
    assert second.lease is not None
    assert await limiter.complete(second.lease, 1) is Completion.RECONCILED
    await limiter.close()


async def test_background_releases_do_not_delay_recovery(redis_server: RedisServer) -> None:
    # A failed admission schedules background releases (the script may have run); their own
    # failures while Redis is down must not push back the next probe once Redis is back.
    limiter = make(redis_server, retry_interval_s=1.0)
    dept = limits(FailureMode.OPEN, rpm=10)
    redis_server.stop()
    failed, _ = await timed_admit(limiter, dept)
    assert failed.degraded
    await asyncio.sleep(2.5)  # background releases failed at ~1 s and ~2 s
    redis_server.start()
    after, _ = await timed_admit(limiter, dept)
    assert after.allowed and not after.degraded
    assert after.lease is not None and after.lease.backend is Backend.REDIS
    await limiter.close()


async def test_completion_that_fails_is_retried_and_frees_the_lease(
    redis_server: RedisServer,
) -> None:
    # Found by the soak: a completion during a Redis stall failed and was never retried, so the
    # lease stayed held until its TTL and the unused tokens stayed charged.
    limiter = make(redis_server, retry_interval_s=0.2)
    dept = DepartmentLimits(
        "stall", LimitSet(concurrent_streams=Limit(1, 0)), failure_mode=FailureMode.CLOSED
    )
    admitted, _ = await timed_admit(limiter, dept)
    assert admitted.allowed and admitted.lease is not None
    with socket.create_connection(("127.0.0.1", redis_server.port)) as blocker:
        blocker.sendall(resp("EVAL", BUSY_SCRIPT, "0", "300000"))
        await asyncio.sleep(0.05)
        assert await limiter.complete(admitted.lease, 5) is Completion.FAILED
        assert blocker.recv(64) == b":1\r\n"
    # The one stream slot comes back without waiting for the 30 s lease TTL.
    for _ in range(50):
        await asyncio.sleep(0.1)
        if (await timed_admit(limiter, dept))[0].allowed:
            break
    else:
        pytest.fail("the lease of the failed completion was never released")
    await limiter.close()


async def test_a_release_that_lands_first_refuses_the_late_admission(
    redis_server: RedisServer,
) -> None:
    """complete.lua leaves a done record for a request id it does not know, so an admission
    whose reply was lost and that reaches Redis after its release charges nothing."""
    limiter = make(redis_server, decision_timeout_s=2.0, socket_timeout_s=2.0)
    dept = DepartmentLimits(
        "late", LimitSet(concurrent_streams=Limit(1, 0)), failure_mode=FailureMode.CLOSED
    )
    admission = Admission(uuid.uuid4().hex, dept.department, "u", 10, dept)
    now, prefix = int(time.time() * 1000), redis_settings(redis_server).key_prefix
    keys = (
        reservation_key(prefix, dept.department, admission.request_id),
        *(c.key for c in plan(admission, prefix, now)),
    )
    release = Lease(admission.request_id, dept.department, "u", 10, Backend.REDIS, keys)
    assert await limiter.complete(release, 0) is Completion.EXPIRED  # nothing to release yet
    late = await limiter.admit(admission)  # the lost admission arrives after its release
    assert not late.allowed and late.violated == "request.duplicate_id"
    other = await limiter.admit(Admission(uuid.uuid4().hex, dept.department, "u", 10, dept))
    assert other.allowed  # the one stream slot was not taken by the late admission
    assert other.lease is not None
    await limiter.complete(other.lease, 0)
    await limiter.close()
