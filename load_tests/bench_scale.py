"""Benchmark 5: admission cost at 10 vs 1,000 departments, pick cost at 2 vs 200 workers.

Run: ``python -m load_tests.bench_scale [--requests N] [--picks N]``. Admission is what the
request path does before routing: the policy decision
(`gateway.request.admission.decide_policy` over a
generated policy of N departments, each with its own caps, limits and guard patterns) and the
limiter's admit + complete on a real redis-server, with callers spread over the N departments.
Routing reuses `bench_routing`'s fleets. Each figure is CPU per request of this process (the
Redis round trips are included as the client's CPU; the wait for Redis is not).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from gateway.auth.principal import Principal
from gateway.limits.redis_limiter import RedisLimiter
from gateway.limits.settings import LimitsSettings
from gateway.request.admission import admission, decide_policy
from gateway.request.domain import GenerationRequest
from load_tests import bench_common as bc
from load_tests import bench_policy, bench_routing
from policy import load_directory


def _principal(department: str, user: int) -> Principal:
    return Principal(
        subject=f"user-{user}",
        department=department,
        roles=frozenset(),
        clearance="health",
        purpose="treatment",
        token_id=None,
        issuer="bench",
        expires_at=time.time() + 3600,
    )


async def admission_cost(departments: int, requests: int, redis_url: str) -> tuple[float, float]:
    """(policy us/request, limiter admit+complete us/request) with `departments` departments."""
    with tempfile.TemporaryDirectory() as tmp:
        bench_policy.write_policy(Path(tmp), departments)
        policy = load_directory(tmp)
    rng = random.Random(departments)
    callers = [
        _principal(f"dept{rng.randrange(departments):04d}", rng.randrange(10_000))
        for _ in range(requests)
    ]
    request = GenerationRequest(
        model=bc.MODEL,
        prompt=bench_policy.PROMPT,
        messages=(),
        max_tokens=256,
        classification="health",
        purpose="treatment",
    )
    started = time.process_time()
    decisions = [decide_policy(policy, who, request, 600) for who in callers]
    policy_us = (time.process_time() - started) / requests * 1e6
    if not all(d.allowed for d in decisions):
        raise RuntimeError("the generated policy refused a benchmark request")
    limiter = RedisLimiter.from_settings(
        LimitsSettings(redis_url=redis_url, decision_timeout_s=1.0, key_prefix=f"s{departments}:")
    )
    started = time.process_time()
    for i, (who, decision) in enumerate(zip(callers, decisions, strict=True)):
        # The departments' own limits apply (some small ones refuse: the script runs every
        # check either way, and a refusal has nothing to complete).
        result = await limiter.admit(admission(f"r{departments}-{i}", who, decision, 100))
        if result.lease is not None:
            await limiter.complete(result.lease, 50)
    limiter_us = (time.process_time() - started) / requests * 1e6
    await limiter.close()
    return policy_us, limiter_us


async def run(args: argparse.Namespace) -> None:
    redis, redis_url = bc.start_redis(None)
    try:
        admissions = {n: await admission_cost(n, args.requests, redis_url) for n in (10, 1000)}
    finally:
        redis.stop()
    picks = {n: await bench_routing.measure(n, args.picks) for n in (2, 200)}
    rows: list[list[object]] = []
    for n, (policy_us, limiter_us) in admissions.items():
        rows.append([f"admission, {n} departments", policy_us, limiter_us, policy_us + limiter_us])
    bc.print_table(["case", "policy us/req", "limiter us/req", "admission us/req"], rows)
    print()
    bc.print_table(
        ["case", "affinity pick us", "load-only pick us"],
        [[f"pick, {n} workers", keyed, by_load] for n, (keyed, by_load) in picks.items()],
    )
    small, large = admissions[10], admissions[1000]
    print(
        f"ratios: admission 1000/10 departments {sum(large) / sum(small):.2f}x; pick 200/2 "
        f"workers {picks[200][0] / picks[2][0]:.2f}x (affinity), "
        f"{picks[200][1] / picks[2][1]:.2f}x (load only)"
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--picks", type=int, default=5000)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    asyncio.run(run(parse(argv)))


if __name__ == "__main__":
    main()
