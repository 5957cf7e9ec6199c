"""Rate limits and token budgets as declared by policy (enforced by gateway.limits)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FailureMode(enum.Enum):
    """What the limiter does when its shared store (Redis) cannot answer in time."""

    CLOSED = "closed"  # refuse the request with UNAVAILABLE
    OPEN = "open"  # fall back to a local per-replica limiter and mark the replica degraded


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit: `amount` per `period_s` seconds (or concurrent leases when period_s == 0).

    `shadow` limits are evaluated and counted but never refuse a request.
    """

    amount: int
    period_s: int
    shadow: bool = False


@dataclass(frozen=True, slots=True)
class LimitSet:
    """The limits of one scope (a whole department, or each user inside it). None = unlimited."""

    requests_per_minute: Limit | None = None
    concurrent_streams: Limit | None = None
    tokens_per_minute: Limit | None = None
    tokens_per_day: Limit | None = None
    tokens_per_month: Limit | None = None


@dataclass(frozen=True, slots=True)
class DepartmentLimits:
    """Everything the limiter needs to know about one department."""

    department: str
    department_limits: LimitSet = LimitSet()
    user_limits: LimitSet = LimitSet()
    failure_mode: FailureMode = FailureMode.CLOSED
