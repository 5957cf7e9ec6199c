"""The behaviour both limiters must share, run against each on the same fake clock."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from gateway.limits import Admission, Completion, RateLimiter
from gateway.limits.base import AdmissionDecision
from policy.limits import DepartmentLimits, Limit, LimitSet
from tests.gateway.limits.conftest import LEASE_TTL_S, RESERVATION_TTL_S, FakeClock

DAY = 86_400


def admission(
    limits: DepartmentLimits, *, user: str = "alice", reserve: int = 0, rid: str | None = None
) -> Admission:
    return Admission(
        request_id=rid or uuid.uuid4().hex,
        department=limits.department,
        user=user,
        reserve_tokens=reserve,
        limits=limits,
    )


def dept(name: str = "radiology", **kw: Limit) -> DepartmentLimits:
    return DepartmentLimits(department=name, department_limits=LimitSet(**kw))


async def probe(
    limiter: RateLimiter, limits: DepartmentLimits, user: str = "probe"
) -> dict[str, int]:
    """Remaining quota as seen by a zero-token admission, which is then released."""
    decision = await limiter.admit(admission(limits, user=user))
    assert decision.allowed and decision.lease is not None
    assert await limiter.complete(decision.lease, 0) is Completion.RECONCILED
    return dict(decision.remaining)


async def test_requests_per_minute_exact_under_overload(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    limits = dept(requests_per_minute=Limit(10, 60))
    decisions = await asyncio.gather(*(limiter.admit(admission(limits)) for _ in range(50)))
    allowed = [d for d in decisions if d.allowed]
    denied = [d for d in decisions if not d.allowed]
    assert len(allowed) == 10
    assert {d.violated for d in denied} == {"department.requests_per_minute"}
    # One request refills every 6 s: the first refusal waits exactly that long.
    assert all(d.retry_after_s == pytest.approx(6.0) for d in denied)
    assert sorted(d.remaining["department.requests_per_minute"] for d in allowed) == list(range(10))
    clock.advance(5.9)
    assert not (await limiter.admit(admission(limits))).allowed
    clock.advance(0.1)
    assert (await limiter.admit(admission(limits))).allowed
    assert not (await limiter.admit(admission(limits))).allowed


async def test_user_limits_are_per_user(limiter: RateLimiter) -> None:
    limits = DepartmentLimits(
        department="er",
        department_limits=LimitSet(requests_per_minute=Limit(100, 60)),
        user_limits=LimitSet(requests_per_minute=Limit(3, 60)),
    )
    results = [(await limiter.admit(admission(limits, user="ann"))) for _ in range(4)]
    assert [d.allowed for d in results] == [True, True, True, False]
    assert results[3].violated == "user.requests_per_minute"
    assert (await limiter.admit(admission(limits, user="bob"))).allowed
    # A user name cannot escape its key: these would collide without escaping.
    assert (await limiter.admit(admission(limits, user="ann:rpm"))).allowed


async def test_concurrent_streams_hold_and_release(limiter: RateLimiter) -> None:
    limits = dept(concurrent_streams=Limit(3, 0))
    held = [await limiter.admit(admission(limits)) for _ in range(3)]
    assert all(d.allowed for d in held)
    refused = await limiter.admit(admission(limits))
    assert not refused.allowed
    assert refused.violated == "department.concurrent_streams"
    assert refused.retry_after_s == pytest.approx(1.0)
    assert held[0].lease is not None
    assert await limiter.complete(held[0].lease, 0) is Completion.RECONCILED
    again = await limiter.admit(admission(limits))
    assert again.allowed
    assert again.remaining["department.concurrent_streams"] == 0


async def test_daily_budget_reserves_then_refunds(limiter: RateLimiter, clock: FakeClock) -> None:
    limits = dept(tokens_per_day=Limit(1000, DAY))
    first = await limiter.admit(admission(limits, reserve=600))
    assert first.allowed and first.lease is not None
    assert first.remaining["department.tokens_per_day"] == 400
    refused = await limiter.admit(admission(limits, reserve=600))
    assert refused.violated == "department.tokens_per_day"
    # A spent budget reopens at the next UTC midnight: 12 h after START.
    assert refused.retry_after_s == pytest.approx(12 * 3600)
    assert await limiter.complete(first.lease, 100) is Completion.RECONCILED
    second = await limiter.admit(admission(limits, reserve=600))
    assert second.allowed
    assert second.remaining["department.tokens_per_day"] == 300
    clock.advance(12 * 3600)
    assert (await probe(limiter, limits))["department.tokens_per_day"] == 1000


async def test_tokens_per_minute_bucket_refund_and_retry(limiter: RateLimiter) -> None:
    limits = dept(tokens_per_minute=Limit(1000, 60))
    first = await limiter.admit(admission(limits, reserve=800))
    assert first.allowed and first.lease is not None
    refused = await limiter.admit(admission(limits, reserve=800))
    assert refused.violated == "department.tokens_per_minute"
    assert refused.retry_after_s == pytest.approx(36.0)  # 600 tokens at 1000 per 60 s
    too_big = await limiter.admit(admission(limits, reserve=1001))
    assert too_big.violated == "department.tokens_per_minute"
    assert await limiter.complete(first.lease, 200) is Completion.RECONCILED
    assert (await limiter.admit(admission(limits, reserve=800))).allowed


async def test_replayed_request_id_is_charged_once(limiter: RateLimiter) -> None:
    limits = dept(tokens_per_day=Limit(1000, DAY), concurrent_streams=Limit(2, 0))
    first = await limiter.admit(admission(limits, reserve=300, rid="req-1"))
    replay = await limiter.admit(admission(limits, reserve=300, rid="req-1"))
    assert first.allowed and replay.allowed and replay.replayed
    assert replay.lease == first.lease
    remaining = await probe(limiter, limits)
    assert remaining["department.tokens_per_day"] == 700
    assert remaining["department.concurrent_streams"] == 0  # req-1 holds one of two, probe one
    assert first.lease is not None
    assert await limiter.complete(first.lease, 50) is Completion.RECONCILED
    assert await limiter.complete(first.lease, 50) is Completion.ALREADY_DONE
    assert (await probe(limiter, limits))["department.tokens_per_day"] == 950
    late = await limiter.admit(admission(limits, reserve=300, rid="req-1"))
    assert not late.allowed and late.violated == "request.duplicate_id"
    assert (await probe(limiter, limits))["department.tokens_per_day"] == 950


async def test_killed_gateway_lease_and_reservation_expire(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    limits = dept(tokens_per_day=Limit(1000, DAY), concurrent_streams=Limit(1, 0))
    orphan = await limiter.admit(admission(limits, reserve=400))
    assert orphan.allowed and orphan.lease is not None
    assert not (await limiter.admit(admission(limits))).allowed
    clock.advance(LEASE_TTL_S)
    remaining = await probe(limiter, limits)
    assert remaining["department.concurrent_streams"] == 0  # the lease is gone
    assert remaining["department.tokens_per_day"] == 600  # the reservation is not (yet)
    clock.advance(RESERVATION_TTL_S)
    assert await limiter.complete(orphan.lease, 10) is Completion.EXPIRED
    # Expired unreconciled: charged in full, never refunded late.
    assert (await probe(limiter, limits))["department.tokens_per_day"] == 600


async def test_heartbeat_keeps_a_long_stream_alive(limiter: RateLimiter, clock: FakeClock) -> None:
    limits = dept(concurrent_streams=Limit(1, 0))
    stream = await limiter.admit(admission(limits, reserve=5))
    assert stream.lease is not None
    for _ in range(10):  # 80 s of streaming, beyond both TTLs
        clock.advance(LEASE_TTL_S * 0.8)
        assert await limiter.heartbeat(stream.lease)
        assert not (await limiter.admit(admission(limits))).allowed
    assert await limiter.complete(stream.lease, 5) is Completion.RECONCILED
    assert not await limiter.heartbeat(stream.lease)
    assert (await limiter.admit(admission(limits))).allowed


async def test_shadow_limit_counts_without_refusing(limiter: RateLimiter) -> None:
    limits = dept(
        "shadowed", requests_per_minute=Limit(2, 60, shadow=True), concurrent_streams=Limit(10, 0)
    )
    labels = {"department": "shadowed", "limit": "department.requests_per_minute"}
    before = REGISTRY.get_sample_value("llmgw_limiter_shadow_violations_total", labels) or 0.0
    decisions = [await limiter.admit(admission(limits)) for _ in range(5)]
    assert all(d.allowed for d in decisions)
    assert [d.shadow_violations for d in decisions] == [()] * 2 + [
        ("department.requests_per_minute",)
    ] * 3
    assert all("department.requests_per_minute" not in d.remaining for d in decisions)
    after = REGISTRY.get_sample_value("llmgw_limiter_shadow_violations_total", labels)
    assert after == before + 3


async def test_enforced_refusal_charges_nothing(limiter: RateLimiter) -> None:
    limits = DepartmentLimits(
        department="ward",
        department_limits=LimitSet(
            requests_per_minute=Limit(100, 60), tokens_per_day=Limit(1000, DAY)
        ),
        user_limits=LimitSet(concurrent_streams=Limit(1, 0)),
    )
    assert (await limiter.admit(admission(limits, reserve=100))).allowed
    refused = await limiter.admit(admission(limits, reserve=100))
    assert refused.violated == "user.concurrent_streams"
    remaining = await probe(limiter, limits, user="other")
    assert remaining["department.requests_per_minute"] == 98  # 1 admitted + the probe
    assert remaining["department.tokens_per_day"] == 900


async def test_monthly_budget_follows_the_calendar_month(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    clock.now = datetime(2025, 1, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    limits = dept(tokens_per_month=Limit(100, 30 * DAY))
    assert (await limiter.admit(admission(limits, reserve=100))).allowed
    refused = await limiter.admit(admission(limits, reserve=1))
    assert refused.violated == "department.tokens_per_month"
    assert refused.retry_after_s == pytest.approx(1.0)
    clock.advance(1.0)  # February begins
    assert (await limiter.admit(admission(limits, reserve=100))).allowed


def _expected_violation(
    active: dict[str, float], users: dict[str, str], user: str, used: int, reserve: int
) -> str | None:
    """The first refusing limit of the randomized test's limits, in evaluation order."""
    if len(active) >= 20:
        return "department.concurrent_streams"
    if used + reserve > 600_000:
        return "department.tokens_per_day"
    if sum(1 for rid in active if users[rid] == user) >= 5:
        return "user.concurrent_streams"
    return None


async def test_randomized_admissions_charge_exactly_what_was_used(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    rng = random.Random(5)
    limits = DepartmentLimits(
        department="random",
        department_limits=LimitSet(
            concurrent_streams=Limit(20, 0), tokens_per_day=Limit(600_000, DAY)
        ),
        user_limits=LimitSet(concurrent_streams=Limit(5, 0)),
    )
    charged = 0  # what the model says the day budget holds
    active: dict[str, float] = {}  # request id -> lease expiry (seconds)
    leases: dict[str, tuple[Admission, AdmissionDecision]] = {}
    users: dict[str, str] = {}
    outcomes = {"allowed": 0, "refused": 0, "completed": 0, "abandoned": 0}
    for _ in range(10_000):
        clock.advance(rng.random() * 0.05)
        for rid in [r for r, exp in active.items() if exp <= clock.now]:
            del active[rid]  # abandoned leases expire
        if leases and rng.random() < 0.45:
            rid = rng.choice(list(leases))
            adm, decision = leases.pop(rid)
            assert decision.lease is not None
            if rng.random() < 0.1:
                outcomes["abandoned"] += 1  # the gateway died: never completed
                continue
            used = rng.randint(0, adm.reserve_tokens)  # cancelled, deadline or finished
            assert await limiter.complete(decision.lease, used) is Completion.RECONCILED
            charged -= adm.reserve_tokens - used
            del active[rid]
            outcomes["completed"] += 1
            continue
        user = f"user-{rng.randrange(8)}"
        adm = admission(limits, user=user, reserve=rng.randint(1, 500))
        users[adm.request_id] = user
        expected = _expected_violation(active, users, user, charged, adm.reserve_tokens)
        decision = await limiter.admit(adm)
        assert decision.violated == expected
        if decision.allowed:
            charged += adm.reserve_tokens
            active[adm.request_id] = clock.now + LEASE_TTL_S
            leases[adm.request_id] = (adm, decision)
            outcomes["allowed"] += 1
        else:
            outcomes["refused"] += 1
    assert min(outcomes.values()) > 100, outcomes  # every path was exercised
    for adm, decision in leases.values():  # still running at the end: finish them
        assert decision.lease is not None
        assert await limiter.complete(decision.lease, adm.reserve_tokens) is Completion.RECONCILED
    clock.advance(LEASE_TTL_S)
    remaining = await probe(limiter, limits)
    assert remaining["department.tokens_per_day"] == 600_000 - charged
    assert remaining["department.concurrent_streams"] == 19  # no leaked lease, only the probe


async def test_an_earlier_stamp_neither_refills_nor_drains_a_bucket(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    # Replicas stamp admissions with their own clocks and Redis sees them out of order: a
    # request stamped 3 s before the bucket's last update must find the same level, not less.
    limits = dept(requests_per_minute=Limit(2, 60))
    assert (await limiter.admit(admission(limits))).allowed
    clock.advance(-3.0)
    assert (await limiter.admit(admission(limits))).allowed
    clock.advance(3.0)
    refused = await limiter.admit(admission(limits))
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(30.0)  # one refill every 30 s, none yet
