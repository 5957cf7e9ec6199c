"""Builds the limiter the settings ask for: Redis when a URL is set, else in-process."""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.limits.base import RateLimiter
from gateway.limits.memory_limiter import MemoryLimiter
from gateway.limits.redis_limiter import RedisLimiter
from gateway.limits.settings import LimitsSettings


def build_limiter(
    settings: LimitsSettings, *, clock: Callable[[], float] = time.time
) -> RateLimiter:
    """The shared Redis limiter if `settings.redis_url` is set, else the in-process one.

    Creating it opens no connection; the first admission connects (bounded by the timeouts).
    """
    if settings.redis_url is not None:
        return RedisLimiter.from_settings(settings, clock=clock)
    return MemoryLimiter(
        lease_ttl_s=settings.lease_ttl_s,
        reservation_ttl_s=settings.reservation_ttl_s,
        key_prefix=settings.key_prefix,
        clock=clock,
    )
