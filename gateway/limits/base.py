"""The `RateLimiter` port and the data it exchanges with the request path."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from policy.limits import DepartmentLimits


class Backend(enum.Enum):
    """Which store holds a lease: the shared Redis, or this replica's memory."""

    REDIS = "redis"
    LOCAL = "local"


@dataclass(frozen=True, slots=True)
class Admission:
    """One request asking to start.

    `request_id` is the idempotency key: admitting the same id twice charges once.
    `reserve_tokens` is prompt tokens + the effective max output tokens; it is charged to the
    token limits now and reconciled by `RateLimiter.complete`.
    """

    request_id: str
    department: str
    user: str
    reserve_tokens: int
    limits: DepartmentLimits

    def __post_init__(self) -> None:
        if self.reserve_tokens < 0:
            raise ValueError(
                f"reserve_tokens must be >= 0 (got {self.reserve_tokens}): pass prompt tokens "
                "plus the effective max output tokens"
            )


@dataclass(frozen=True, slots=True)
class Lease:
    """What `complete` and `heartbeat` need to find an admitted request's reservation again.

    `keys` are the store keys the admission touched, in the order the store recorded them
    (Redis scripts must declare every key they touch, and Redis Cluster needs them up front).
    """

    request_id: str
    department: str
    user: str
    reserved_tokens: int
    backend: Backend
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    """The limiter's answer; the edge turns a refusal into a gRPC status.

    - `allowed`: the request may run; `lease` is then set and must be completed.
    - `violated`: the first enforced limit that refused, as `<scope>.<limit>` (e.g.
      `department.requests_per_minute`, `user.concurrent_streams`), for QuotaFailure.
    - `retry_after_s`: how long until the violated limit could admit this request (RetryInfo).
    - `remaining`: what is left of each enforced limit after this admission (response metadata).
    - `shadow_violations`: shadow limits this request exceeded (counted, never refusing).
    - `unavailable`: the shared store could not answer and the department fails closed: the
      edge maps this to UNAVAILABLE, not RESOURCE_EXHAUSTED.
    - `degraded`: decided by this replica's local fallback because the shared store is down.
    - `replayed`: the request id had already been admitted; nothing was charged again.
    """

    allowed: bool
    lease: Lease | None = None
    retry_after_s: float = 0.0
    violated: str | None = None
    remaining: Mapping[str, int] = field(default_factory=dict)
    shadow_violations: tuple[str, ...] = ()
    unavailable: bool = False
    degraded: bool = False
    replayed: bool = False


class Completion(enum.Enum):
    """What `RateLimiter.complete` did with a lease."""

    RECONCILED = "reconciled"  # lease released, unused tokens refunded
    ALREADY_DONE = "already_done"  # an earlier completion of the same request id did it
    EXPIRED = "expired"  # the reservation expired first: the full reservation stays charged
    FAILED = "failed"  # the store did not answer; the reservation will expire by TTL


class RateLimiter(Protocol):
    """Requests/min, concurrent streams, tokens/min and daily/monthly budgets per department/user.

    Contract:
    - `admit` evaluates every limit of the department and user scopes atomically and, only if all
      enforced limits pass, applies them all: one request slot, one concurrency lease and a token
      reservation of `reserve_tokens`. A refused admission changes nothing but shadow counters.
    - `complete` releases the lease and refunds `reserved - used` tokens; calling it again, or
      after the reservation expired, changes nothing. Call it on every outcome (success, cancel,
      deadline, worker failure).
    - `heartbeat` extends a long stream's lease and reservation by their TTLs; call it at least
      every `lease_ttl_s / 3` while a stream runs. It returns False when the lease is gone.
    - A reservation never completed expires by TTL and stays charged in full (the conservative
      reading: the worker may have generated every reserved token); its lease expires too.
    - Neither `admit` nor `complete` raises for store failures: they are decisions.
    """

    async def admit(self, admission: Admission) -> AdmissionDecision:
        """Decide whether the request may start, and reserve its tokens if so."""
        ...

    async def complete(self, lease: Lease, used_tokens: int) -> Completion:
        """Release the lease and refund the unused part of the reservation."""
        ...

    async def heartbeat(self, lease: Lease) -> bool:
        """Keep a running stream's lease and reservation alive."""
        ...

    def health(self) -> dict[str, str]:
        """Component name -> state, for the health endpoint (no secrets)."""
        ...

    async def close(self) -> None:
        """Release connections and background tasks."""
        ...
