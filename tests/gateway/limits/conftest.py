"""Fixtures for the limiter suites: a real redis-server, a controllable clock, both limiters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from common.settings import read
from gateway.limits import LimitsSettings, MemoryLimiter, RateLimiter, RedisLimiter
from tests.support.redis_server import RedisServer

# 2025-06-15T12:00:00Z: mid-day, mid-month, so budget windows do not roll unless a test says so.
START = 1_749_988_800.0
LEASE_TTL_S = 10.0
RESERVATION_TTL_S = 60.0


class FakeClock:
    """Wall-clock seconds that move only when the test says so."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server per test module, flushed by the fixtures that use it."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def redis_settings(server: RedisServer, **overrides: object) -> LimitsSettings:
    """Settings for a test limiter on `server`; a generous time bound unless a test sets one."""
    values: dict[str, object] = {
        "redis_url": server.url,
        "decision_timeout_s": 2.0,
        "socket_timeout_s": 2.0,
        "lease_ttl_s": LEASE_TTL_S,
        "reservation_ttl_s": RESERVATION_TTL_S,
    }
    values.update(overrides)
    return read(LimitsSettings, values, "limits")


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[RateLimiter]:
    """The behavioural suite runs once per implementation, both on the same fake clock.

    The Redis server is requested only for the Redis run, so that the in-memory limiter's tests
    pass on a machine without `redis-server`.
    """
    built: RateLimiter
    if request.param == "memory":
        built = MemoryLimiter(
            lease_ttl_s=LEASE_TTL_S, reservation_ttl_s=RESERVATION_TTL_S, clock=clock
        )
    else:
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        redis_server.command("FLUSHALL")
        built = RedisLimiter.from_settings(redis_settings(redis_server), clock=clock)
    yield built
    await built.close()


@pytest.fixture
async def redis_limiters(
    redis_server: RedisServer,
) -> AsyncIterator[Callable[..., RedisLimiter]]:
    """Make Redis limiters on the module's server (each its own client, as replicas have)."""
    redis_server.command("FLUSHALL")
    made: list[RedisLimiter] = []

    def make(**overrides: object) -> RedisLimiter:
        limiter = RedisLimiter.from_settings(redis_settings(redis_server, **overrides))
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.close()
