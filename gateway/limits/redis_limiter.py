"""The shared limiter: one Lua script per admission and per completion on a real Redis.

Every replica runs the same scripts against the same keys, so limits hold across replicas.
Each call is bounded by `decision_timeout_s` and never retried (a retried script after a read
timeout could run twice). The scripts run over `ScriptClient`, one pipelined connection. When Redis
fails, the department's `failure_mode` decides: CLOSED refuses (the edge answers UNAVAILABLE),
OPEN falls back to this replica's `MemoryLimiter` and marks the replica degraded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

from gateway.limits import metrics
from gateway.limits.base import Admission, AdmissionDecision, Backend, Completion, Lease
from gateway.limits.checks import Check, plan, reservation_key
from gateway.limits.fallback import scaled_for_replicas
from gateway.limits.memory_limiter import MemoryLimiter
from gateway.limits.script_client import ReplyError, Script, ScriptClient
from gateway.limits.settings import LimitsSettings
from policy.limits import FailureMode

_log = logging.getLogger(__name__)

# Errors that mean "the store did not answer": anything else is a bug and must surface.
_STORE_ERRORS = (ReplyError, OSError, TimeoutError)
_ORPHAN_RELEASE_LIMIT = 10_000


def _script(name: str) -> str:
    return resources.files("gateway.limits").joinpath(name).read_text(encoding="utf-8")


class RedisLimiter:
    """`RateLimiter` on Redis (standalone, Sentinel-fronted or one Cluster slot per department).

    `clock` returns wall-clock seconds; every replica must run NTP, since decisions use the
    calling replica's clock (a skew of d shifts refills and lease expiry by d).
    """

    def __init__(
        self,
        client: ScriptClient,
        settings: LimitsSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._settings = settings
        self._clock = clock
        self._admit_script = Script.of(_script("admit.lua"))
        self._complete_script = Script.of(_script("complete.lua"))
        self._heartbeat_script = Script.of(_script("heartbeat.lua"))
        self._fallback = MemoryLimiter(
            lease_ttl_s=settings.lease_ttl_s,
            reservation_ttl_s=settings.reservation_ttl_s,
            key_prefix=settings.key_prefix,
            clock=clock,
            record_metrics=False,
        )
        self._lease_ttl_ms = int(settings.lease_ttl_s * 1000)
        self._res_ttl_ms = int(settings.reservation_ttl_s * 1000)
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._orphans: set[asyncio.Task[None]] = set()
        # A failed completion is retried until its lease would have expired anyway.
        self._completion_tries = max(
            3, math.ceil(self._settings.lease_ttl_s / self._settings.retry_interval_s)
        )

    @classmethod
    def from_settings(
        cls, settings: LimitsSettings, *, clock: Callable[[], float] = time.time
    ) -> RedisLimiter:
        """Connect (lazily) to `settings.redis_url` with bounded timeouts and no retries."""
        if settings.redis_url is None:
            raise ValueError("limits.redis_url: required for the Redis limiter")
        client = ScriptClient.from_url(
            settings.redis_url,
            connect_timeout_s=settings.connect_timeout_s,
            socket_timeout_s=settings.socket_timeout_s,
        )
        return cls(client, settings, clock=clock)

    async def admit(self, admission: Admission) -> AdmissionDecision:
        """Decide and reserve in one Redis round trip (see `RateLimiter.admit`)."""
        started = time.perf_counter()
        if not self._store_usable():
            return self._without_store(admission)
        now = int(self._clock() * 1000)
        checks = plan(admission, self._settings.key_prefix, now)
        res_key = reservation_key(
            self._settings.key_prefix, admission.department, admission.request_id
        )
        keys = [res_key, *(c.key for c in checks)]
        args: list[str | int] = [
            now,
            admission.request_id,
            admission.reserve_tokens,
            self._lease_ttl_ms,
            self._res_ttl_ms,
            _packed_checks(checks),
        ]
        try:
            async with asyncio.timeout(self._settings.decision_timeout_s):
                with metrics.store_call("admit"):
                    reply = await self._client.run(self._admit_script, keys=keys, args=args)
        except _STORE_ERRORS as err:
            self._store_failed("admit", err)
            # The script may have run before the reply was lost: release whatever it reserved.
            self._release_later(admission, tuple(keys))
            return self._without_store(admission)
        self._store_ok()
        decision = _decision(reply, admission)
        metrics.record_decision(decision, admission.department, Backend.REDIS)
        metrics.DECISION_SECONDS.labels(backend=Backend.REDIS.value).observe(
            time.perf_counter() - started
        )
        return decision

    async def complete(self, lease: Lease, used_tokens: int) -> Completion:
        """Release and refund in one Redis round trip (see `RateLimiter.complete`)."""
        if lease.backend is Backend.LOCAL:
            result = self._fallback.complete_now(lease, used_tokens)
        else:
            result = await self._reconcile(lease, used_tokens)
            if result is Completion.FAILED:
                # The script may never have run (a dropped connection): without another try the
                # lease stays held for lease_ttl_s and the unused tokens charged until the
                # reservation expires. complete.lua is idempotent, so retry in the background.
                self._retry_later(lease, used_tokens, self._completion_tries)
        metrics.COMPLETIONS.labels(result=result.value).inc()
        return result

    async def _reconcile(
        self, lease: Lease, used_tokens: int, *, background: bool = False
    ) -> Completion:
        now = int(self._clock() * 1000)
        try:
            async with asyncio.timeout(self._settings.decision_timeout_s):
                with metrics.store_call("complete"):
                    reply = await self._client.run(
                        self._complete_script,
                        keys=lease.keys,
                        args=[now, lease.request_id, used_tokens, self._res_ttl_ms],
                    )
        except _STORE_ERRORS as err:
            if background:
                # A background release must not postpone the next probe of Redis: during an
                # outage those retries would keep the limiter degraded after Redis is back.
                metrics.STORE_ERRORS.labels(operation="release").inc()
            else:
                self._store_failed("complete", err)
            return Completion.FAILED
        self._store_ok()
        return Completion(reply)

    async def heartbeat(self, lease: Lease) -> bool:
        """Extend lease and reservation in one round trip (see `RateLimiter.heartbeat`).

        A failed heartbeat answers True: the lease is probably still there, and a stream must
        not be cut because Redis blinked; the lease TTL bounds the damage.
        """
        if lease.backend is Backend.LOCAL:
            return await self._fallback.heartbeat(lease)
        now = int(self._clock() * 1000)
        try:
            async with asyncio.timeout(self._settings.decision_timeout_s):
                with metrics.store_call("heartbeat"):
                    reply = await self._client.run(
                        self._heartbeat_script,
                        keys=lease.keys,
                        args=[now, lease.request_id, self._lease_ttl_ms, self._res_ttl_ms],
                    )
        except _STORE_ERRORS as err:
            self._store_failed("heartbeat", err)
            return True
        self._store_ok()
        return bool(reply)

    def health(self) -> dict[str, str]:
        """`limiter: ok (redis)` or the degraded state and what it means for requests."""
        if self._down_since is None:
            return {"limiter": "ok (redis)"}
        down_for = time.monotonic() - self._down_since
        return {
            "limiter": (
                f"degraded: redis unreachable for {down_for:.1f}s; departments failing open use "
                "per-replica local limits, departments failing closed are refused"
            )
        }

    @property
    def degraded(self) -> bool:
        """True while the last Redis call failed."""
        return self._down_since is not None

    async def close(self) -> None:
        """Stop pending releases and close the connection pool."""
        for task in list(self._orphans):
            task.cancel()
        await asyncio.gather(*self._orphans, return_exceptions=True)
        await self._client.aclose()

    def _store_usable(self) -> bool:
        # While down, skip Redis until the retry time so each decision does not pay the timeout;
        # the first decision after it probes Redis, which is how the limiter reconnects.
        return self._down_since is None or time.monotonic() >= self._retry_at

    def _store_failed(self, operation: str, err: BaseException) -> None:
        metrics.STORE_ERRORS.labels(operation=operation).inc()
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            _log.warning("limiter: redis %s failed (%s); degraded", operation, type(err).__name__)
        self._retry_at = now + self._settings.retry_interval_s
        metrics.DEGRADED.set(1)

    def _store_ok(self) -> None:
        if self._down_since is not None:
            _log.warning("limiter: redis reachable again; leaving degraded state")
        self._down_since = None
        metrics.DEGRADED.set(0)

    def _without_store(self, admission: Admission) -> AdmissionDecision:
        if admission.limits.failure_mode is FailureMode.CLOSED:
            decision = AdmissionDecision(
                allowed=False,
                retry_after_s=self._settings.retry_interval_s,
                violated="limiter.unavailable",
                unavailable=True,
                degraded=True,
            )
            metrics.record_decision(decision, admission.department, Backend.REDIS)
            return decision
        local = Admission(
            request_id=admission.request_id,
            department=admission.department,
            user=admission.user,
            reserve_tokens=admission.reserve_tokens,
            limits=scaled_for_replicas(admission.limits, self._settings.fallback_replicas),
        )
        decision = self._fallback.admit_now(local)
        metrics.record_decision(decision, admission.department, Backend.LOCAL)
        return AdmissionDecision(
            allowed=decision.allowed,
            lease=decision.lease,
            retry_after_s=decision.retry_after_s,
            violated=decision.violated,
            remaining=decision.remaining,
            shadow_violations=decision.shadow_violations,
            degraded=True,
            replayed=decision.replayed,
        )

    def _release_later(self, admission: Admission, keys: tuple[str, ...]) -> None:
        lease = Lease(
            request_id=admission.request_id,
            department=admission.department,
            user=admission.user,
            reserved_tokens=admission.reserve_tokens,
            backend=Backend.REDIS,
            keys=keys,
        )
        # As many tries as a completion gets: the script may still reach Redis late (TCP resends
        # it once a partition heals). A release that lands first leaves a done record that
        # refuses the late admission (complete.lua), so one successful try settles it either way.
        self._retry_later(lease, 0, self._completion_tries)

    def _retry_later(self, lease: Lease, used_tokens: int, tries: int) -> None:
        if len(self._orphans) >= _ORPHAN_RELEASE_LIMIT:
            return  # the reservation TTL cleans up what we cannot track
        task = asyncio.get_running_loop().create_task(
            self._reconcile_later(lease, used_tokens, tries)
        )
        self._orphans.add(task)
        task.add_done_callback(self._orphans.discard)

    async def _reconcile_later(self, lease: Lease, used_tokens: int, tries: int) -> None:
        for _ in range(tries):
            await asyncio.sleep(self._settings.retry_interval_s)
            if await self._reconcile(lease, used_tokens, background=True) is not Completion.FAILED:
                return


def _packed_checks(checks: Sequence[Check]) -> str:
    """The checks as the one JSON argument admit.lua decodes (see its header)."""
    return json.dumps(
        [
            [
                c.name,
                c.kind.value,
                c.amount,
                c.period_ms,
                int(c.shadow),
                c.cost,
                int(c.tokens),
                c.window,
                c.window_end_ms,
            ]
            for c in checks
        ],
        separators=(",", ":"),
    )


def _decision(reply: Any, admission: Admission) -> AdmissionDecision:
    allowed, violated, retry_ms, remaining, shadow, replayed, reserved, keys = reply
    flat: list[Any] = list(remaining)
    lease = None
    if allowed:
        lease = Lease(
            request_id=admission.request_id,
            department=admission.department,
            user=admission.user,
            reserved_tokens=int(reserved),
            backend=Backend.REDIS,
            keys=tuple(keys),
        )
    return AdmissionDecision(
        allowed=bool(allowed),
        lease=lease,
        retry_after_s=int(retry_ms) / 1000,
        violated=violated or None,
        remaining={str(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)},
        shadow_violations=tuple(shadow),
        replayed=bool(replayed),
    )
