"""Limiter cost against a local redis-server: latency per admission/completion and decisions/s.

Run: `python -m load_tests.bench_limiter [--requests N] [--concurrency C] [--redis-url URL]`.
Without a URL it starts a redis-server on a free port (needs `redis-server` on PATH). Prints a
table with a raw PING round trip from the same client library, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from gateway.limits import (
    Admission,
    Lease,
    LimitsSettings,
    MemoryLimiter,
    RateLimiter,
    RedisLimiter,
)
from load_tests.bench_common import start_redis
from policy.limits import DepartmentLimits, Limit, LimitSet

LIMITS = DepartmentLimits(
    department="bench",
    department_limits=LimitSet(
        requests_per_minute=Limit(10**9, 60),
        concurrent_streams=Limit(10**6, 0),
        tokens_per_minute=Limit(10**12, 60),
        tokens_per_day=Limit(10**15, 86_400),
        tokens_per_month=Limit(10**15, 30 * 86_400),
    ),
    user_limits=LimitSet(requests_per_minute=Limit(10**9, 60), concurrent_streams=Limit(10**6, 0)),
)


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _sequential(op: Callable[[], Awaitable[object]], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await op()
        samples.append(time.perf_counter() - started)
    return samples


async def _throughput(op: Callable[[], Awaitable[object]], n: int, concurrency: int) -> float:
    async def worker(count: int) -> None:
        for _ in range(count):
            await op()

    started = time.perf_counter()
    await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    return (n // concurrency * concurrency) / (time.perf_counter() - started)


def _admit_complete(limiter: RateLimiter) -> tuple[Callable[[], Awaitable[object]], ...]:
    pending: list[Lease] = []

    async def admit() -> object:
        decision = await limiter.admit(Admission(uuid.uuid4().hex, "bench", "u1", 300, LIMITS))
        assert decision.allowed, decision
        assert decision.lease is not None
        pending.append(decision.lease)
        return decision

    async def complete() -> object:
        lease = pending.pop()
        return await limiter.complete(lease, 120)

    async def both() -> object:
        await admit()
        return await complete()

    return admit, complete, both


async def run(url: str, n: int, concurrency: int) -> list[tuple[str, float, float, float]]:
    """Rows of (operation, p50 ms, p99 ms, operations/s)."""
    client = Redis.from_url(url)
    redis_limiter = RedisLimiter.from_settings(
        LimitsSettings(redis_url=url, decision_timeout_s=1.0, socket_timeout_s=1.0)
    )
    memory_limiter = MemoryLimiter()
    rows = []
    try:
        for _ in range(200):  # warm connections and the script cache
            await client.ping()
            await _admit_complete(redis_limiter)[2]()

        async def ping() -> object:
            return await client.ping()

        ping_lat = await _sequential(ping, n)
        rows.append(("redis PING (raw)", ping_lat, await _throughput(ping, n, concurrency)))
        for name, limiter in (("redis", redis_limiter), ("in-process", memory_limiter)):
            admit, complete, both = _admit_complete(limiter)
            admit_lat = await _sequential(admit, n)
            complete_lat = await _sequential(complete, n)
            rows.append((f"{name} admit", admit_lat, 0.0))
            rows.append((f"{name} complete", complete_lat, 0.0))
            both_rate = await _throughput(both, n, concurrency)
            rows.append((f"{name} admit+complete", [], both_rate))
    finally:
        await redis_limiter.close()
        await client.aclose()
    return [
        (
            name,
            _percentile(lat, 0.5) * 1000 if lat else float("nan"),
            _percentile(lat, 0.99) * 1000 if lat else float("nan"),
            rate if rate else len(lat) / sum(lat),
        )
        for name, lat, rate in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--redis-url")
    args = parser.parse_args()
    redis, url = (None, args.redis_url) if args.redis_url else start_redis(None)
    try:
        rows = asyncio.run(run(url, args.requests, args.concurrency))
    finally:
        if redis is not None:
            redis.stop()
    print(f"{args.requests} operations, throughput with {args.concurrency} concurrent callers")
    print(f"{'operation':<28}{'p50 ms':>10}{'p99 ms':>10}{'ops/s':>12}")
    for name, p50, p99, rate in rows:
        print(f"{name:<28}{p50:>10.3f}{p99:>10.3f}{rate:>12.0f}")
    print("(rows without latency are throughput runs; sequential ops/s = 1 / mean latency)")


if __name__ == "__main__":
    main()
