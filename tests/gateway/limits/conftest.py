"""Fixtures for the limiter suites: a controllable clock, both limiters on a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from common.settings import read
from gateway.limits import LimitsSettings, MemoryLimiter, RateLimiter, RedisLimiter
from tests.support.clock import START as START  # re-exported for the limiter suites
from tests.support.clock import FakeClock as FakeClock
from tests.support.redis_server import RedisServer

LEASE_TTL_S = 10.0
RESERVATION_TTL_S = 60.0


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
        built = RedisLimiter.from_settings(redis_settings(redis_server), clock=clock)
    yield built
    await built.close()


@pytest.fixture
async def redis_limiters(
    redis_server: RedisServer,
) -> AsyncIterator[Callable[..., RedisLimiter]]:
    """Make Redis limiters on the test's server (each its own client, as replicas have)."""
    made: list[RedisLimiter] = []

    def make(**overrides: object) -> RedisLimiter:
        limiter = RedisLimiter.from_settings(redis_settings(redis_server, **overrides))
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.close()
