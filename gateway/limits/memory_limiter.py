"""The in-process limiter: the embedded default without Redis, and Redis's fail-open fallback.

It implements the exact semantics of `redis_limiter` + `admit.lua`/`complete.lua` (same checks,
same arithmetic, same clock model) for one process. Every method runs without awaiting, so on
one event loop each decision is atomic like a Lua script.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from gateway.limits import metrics
from gateway.limits.base import Admission, AdmissionDecision, Backend, Completion, Lease
from gateway.limits.checks import Check, Kind, plan, reservation_key

_STREAMS_RETRY_MS = 1000  # a stream's end is unknowable; ask the caller to retry in a second
_SWEEP_EVERY_MS = 1000


@dataclass(slots=True)
class _Bucket:
    level: float
    at_ms: int
    full_ms: int  # when it will have refilled completely, so the sweep can forget it


@dataclass(slots=True)
class _Budget:
    window: int
    used: int
    end_ms: int


@dataclass(slots=True)
class _Reservation:
    held: bool
    reserved: int
    expires_ms: int
    forget_ms: int
    keys: tuple[str, ...]
    charges: list[Check] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Eval:
    ok: bool
    retry_ms: int
    remaining: int


class MemoryLimiter:
    """`RateLimiter` over dictionaries in this process; state is lost on restart.

    `clock` returns wall-clock seconds (injectable for tests). `record_metrics=False` when it
    serves as another limiter's fallback, which records its own metrics.
    """

    def __init__(
        self,
        *,
        lease_ttl_s: float = 30.0,
        reservation_ttl_s: float = 900.0,
        key_prefix: str = "llmgw:",
        clock: Callable[[], float] = time.time,
        record_metrics: bool = True,
    ) -> None:
        self._lease_ttl_ms = int(lease_ttl_s * 1000)
        self._reservation_ttl_ms = int(reservation_ttl_s * 1000)
        self._prefix = key_prefix
        self._clock = clock
        self._record = record_metrics
        self._buckets: dict[str, _Bucket] = {}
        self._streams: dict[str, dict[str, int]] = {}
        self._budgets: dict[str, _Budget] = {}
        self._reservations: dict[str, _Reservation] = {}
        self._next_sweep_ms = 0

    async def admit(self, admission: Admission) -> AdmissionDecision:
        """Decide and reserve atomically (see `RateLimiter.admit`)."""
        return self.admit_now(admission)

    async def complete(self, lease: Lease, used_tokens: int) -> Completion:
        """Release and refund (see `RateLimiter.complete`)."""
        return self.complete_now(lease, used_tokens)

    async def heartbeat(self, lease: Lease) -> bool:
        """Extend the lease and the reservation (see `RateLimiter.heartbeat`)."""
        now = self._now_ms()
        res = self._reservations.get(lease.keys[0])
        if res is None or not res.held or res.expires_ms <= now:
            return False
        res.expires_ms = max(res.expires_ms, now + self._reservation_ttl_ms)
        res.forget_ms = res.expires_ms + self._reservation_ttl_ms
        alive = True
        for check in res.charges:
            if check.kind is Kind.STREAMS:
                leases = self._streams.get(check.key, {})
                if leases.get(lease.request_id, 0) <= now:
                    alive = False
                else:
                    leases[lease.request_id] = now + self._lease_ttl_ms
        return alive

    def health(self) -> dict[str, str]:
        """The in-process limiter is always available."""
        return {"limiter": "ok (in-process, per replica)"}

    async def close(self) -> None:
        """Nothing to release."""

    def admit_now(self, admission: Admission) -> AdmissionDecision:
        """`admit` without the coroutine, for callers that must not yield (the fallback)."""
        now = self._now_ms()
        self._sweep(now)
        res_key = reservation_key(self._prefix, admission.department, admission.request_id)
        checks = plan(admission, self._prefix, now)
        lease = Lease(
            request_id=admission.request_id,
            department=admission.department,
            user=admission.user,
            reserved_tokens=admission.reserve_tokens,
            backend=Backend.LOCAL,
            keys=(res_key, *(c.key for c in checks)),
        )
        previous = self._reservations.get(res_key)
        if previous is not None:
            decision = _replay(previous, lease, now)
        else:
            decision = self._decide(admission, checks, lease, res_key, now)
        if self._record:
            metrics.record_decision(decision, admission.department, Backend.LOCAL)
        return decision

    def complete_now(self, lease: Lease, used_tokens: int) -> Completion:
        """`complete` without the coroutine."""
        now = self._now_ms()
        res = self._reservations.get(lease.keys[0])
        if res is None:
            result = Completion.EXPIRED
        elif not res.held:
            result = Completion.ALREADY_DONE
        elif res.expires_ms <= now:
            self._release(res, lease.request_id)
            result = Completion.EXPIRED
        else:
            self._refund(res, lease.request_id, res.reserved - used_tokens, now)
            result = Completion.RECONCILED
        if res is not None and res.held:
            res.held = False
            res.forget_ms = now + self._reservation_ttl_ms
        if self._record:
            metrics.COMPLETIONS.labels(result=result.value).inc()
        return result

    def _decide(
        self, admission: Admission, checks: list[Check], lease: Lease, res_key: str, now: int
    ) -> AdmissionDecision:
        evals = [self._evaluate(c, now) for c in checks]
        refused = next((i for i, c in enumerate(checks) if not c.shadow and not evals[i].ok), None)
        shadow = tuple(c.name for c, e in zip(checks, evals, strict=True) if c.shadow and not e.ok)
        if refused is not None:
            return AdmissionDecision(
                allowed=False,
                retry_after_s=evals[refused].retry_ms / 1000,
                violated=checks[refused].name,
                shadow_violations=shadow,
            )
        charged = [c for c, e in zip(checks, evals, strict=True) if e.ok]
        for check in charged:
            self._charge(check, lease.request_id, now)
        expires = now + self._reservation_ttl_ms
        self._reservations[res_key] = _Reservation(
            held=True,
            reserved=admission.reserve_tokens,
            expires_ms=expires,
            forget_ms=expires + self._reservation_ttl_ms,
            keys=lease.keys,
            charges=charged,
        )
        remaining = {
            c.name: e.remaining for c, e in zip(checks, evals, strict=True) if not c.shadow
        }
        return AdmissionDecision(
            allowed=True, lease=lease, remaining=remaining, shadow_violations=shadow
        )

    def _evaluate(self, check: Check, now: int) -> _Eval:
        if check.kind is Kind.BUCKET:
            level = self._level(check, now)
            if check.cost <= level:
                return _Eval(True, 0, max(0, math.floor(level - check.cost)))
            if check.cost > check.amount:
                return _Eval(False, check.period_ms, 0)
            wait = math.ceil((check.cost - level) * check.period_ms / check.amount)
            return _Eval(False, wait, 0)
        if check.kind is Kind.STREAMS:
            leases = self._streams.get(check.key, {})
            for rid in [r for r, exp in leases.items() if exp <= now]:
                del leases[rid]
            count = len(leases)
            if count + 1 <= check.amount:
                return _Eval(True, 0, check.amount - count - 1)
            return _Eval(False, _STREAMS_RETRY_MS, 0)
        used = self._budget_used(check)
        if used + check.cost <= check.amount:
            return _Eval(True, 0, check.amount - used - check.cost)
        return _Eval(False, check.window_end_ms - now, 0)

    def _charge(self, check: Check, request_id: str, now: int) -> None:
        if check.kind is Kind.BUCKET:
            self._set_level(check, self._level(check, now) - check.cost, now)
        elif check.kind is Kind.STREAMS:
            self._streams.setdefault(check.key, {})[request_id] = now + self._lease_ttl_ms
        else:
            used = self._budget_used(check)
            self._budgets[check.key] = _Budget(check.window, used + check.cost, check.window_end_ms)

    def _refund(self, res: _Reservation, request_id: str, refund: int, now: int) -> None:
        for check in res.charges:
            if check.kind is Kind.STREAMS:
                self._streams.get(check.key, {}).pop(request_id, None)
            elif not check.tokens:
                continue  # requests/min counts the request, which did happen
            elif check.kind is Kind.BUCKET:
                if check.key in self._buckets:
                    self._set_level(check, min(check.amount, self._level(check, now) + refund), now)
            else:
                budget = self._budgets.get(check.key)
                if budget is not None and budget.window == check.window:
                    budget.used = max(0, budget.used - refund)

    def _release(self, res: _Reservation, request_id: str) -> None:
        for check in res.charges:
            if check.kind is Kind.STREAMS:
                self._streams.get(check.key, {}).pop(request_id, None)

    def _level(self, check: Check, now: int) -> float:
        state = self._buckets.get(check.key)
        if state is None:
            return float(check.amount)
        # Like admit.lua: a bucket's time never moves backwards (a clock step back refills nothing).
        refill = max(0, now - state.at_ms) * check.amount / max(1, check.period_ms)
        return min(float(check.amount), state.level + refill)

    def _set_level(self, check: Check, level: float, now: int) -> None:
        previous = self._buckets.get(check.key)
        if previous is not None:
            now = max(now, previous.at_ms)
        full = now + math.ceil((check.amount - level) * check.period_ms / max(1, check.amount))
        self._buckets[check.key] = _Bucket(level, now, full)

    def _budget_used(self, check: Check) -> int:
        state = self._budgets.get(check.key)
        return state.used if state is not None and state.window == check.window else 0

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _sweep(self, now: int) -> None:
        # Drop state that no longer changes any decision, so memory follows live traffic only.
        if now < self._next_sweep_ms:
            return
        self._next_sweep_ms = now + _SWEEP_EVERY_MS
        self._reservations = {k: r for k, r in self._reservations.items() if r.forget_ms > now}
        self._budgets = {k: b for k, b in self._budgets.items() if b.end_ms > now}
        self._streams = {
            k: live
            for k, leases in self._streams.items()
            if (live := {r: e for r, e in leases.items() if e > now})
        }
        self._buckets = {k: b for k, b in self._buckets.items() if b.full_ms > now}


def _replay(previous: _Reservation, lease: Lease, now: int) -> AdmissionDecision:
    # The lease of the original admission: its keys, not those of today's (maybe reloaded) policy.
    if previous.held and previous.expires_ms > now:
        original = replace(lease, reserved_tokens=previous.reserved, keys=previous.keys)
        return AdmissionDecision(allowed=True, lease=original, replayed=True)
    return AdmissionDecision(allowed=False, violated="request.duplicate_id", replayed=True)
