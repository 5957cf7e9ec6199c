"""Rate limits, concurrency leases and token budgets per department and user."""

from gateway.limits.base import (
    Admission,
    AdmissionDecision,
    Backend,
    Completion,
    Lease,
    RateLimiter,
)
from gateway.limits.factory import build_limiter
from gateway.limits.memory_limiter import MemoryLimiter
from gateway.limits.redis_limiter import RedisLimiter
from gateway.limits.settings import LimitsSettings

__all__ = [
    "Admission",
    "AdmissionDecision",
    "Backend",
    "Completion",
    "Lease",
    "LimitsSettings",
    "MemoryLimiter",
    "RateLimiter",
    "RedisLimiter",
    "build_limiter",
]
