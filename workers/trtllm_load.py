"""The trtllm engine's load report: iteration statistics checked against its own count.

TensorRT-LLM publishes one statistics record per executor iteration (`LLM.get_stats_async`); an
idle executor runs no iterations, so the last record goes stale and would keep reporting the
requests that were active when the engine went quiet. The engine therefore also counts its own
in-flight requests (it is the only client of its `LLM`) and trusts the statistics only while they
are fresh, falling back to that count otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client import Counter

from workers.engine import EngineLoad
from workers.trtllm_api import LLM

_log = logging.getLogger(__name__)

STATS_ERRORS = Counter(
    "llmgw_trtllm_stats_errors_total",
    "Failures reading TensorRT-LLM iteration statistics; load falls back to the in-flight count.",
)


@dataclass(frozen=True, slots=True)
class IterationSnapshot:
    """The load-relevant part of one TensorRT-LLM iteration statistics record."""

    active: int
    queued: int
    kv_cache_utilization: float | None
    received_at: float


def _int_field(stat: Mapping[str, object], key: str) -> int | None:
    value = stat.get(key)
    # bool is an int subclass; a JSON true here would be a different schema, not a count.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def parse_iteration_stats(
    stat: Mapping[str, object], received_at: float
) -> IterationSnapshot | None:
    """Read `numActiveRequests`, `numQueuedRequests` and `kvCacheStats` from one record.

    Returns None when the record lacks the request counts (a schema this code was not written
    against), so that the caller keeps its fallback instead of reporting zeros.
    """
    active = _int_field(stat, "numActiveRequests")
    queued = _int_field(stat, "numQueuedRequests")
    if active is None or queued is None:
        return None
    kv_use: float | None = None
    kv = stat.get("kvCacheStats")
    if isinstance(kv, Mapping):
        max_blocks = _int_field(kv, "maxNumBlocks")
        used = _int_field(kv, "usedNumBlocks")
        free = _int_field(kv, "freeNumBlocks")
        if used is None and free is not None and max_blocks is not None:
            used = max_blocks - free
        if max_blocks and used is not None:
            kv_use = min(1.0, max(0.0, used / max_blocks))
    return IterationSnapshot(max(0, active), max(0, queued), kv_use, received_at)


class LoadTracker:
    """Combines the engine's in-flight count with the latest fresh iteration statistics.

    `max_slots` is the engine's `max_batch_size`. Statistics older than `stale_after_s` are
    ignored for the request counts (the in-flight count is used instead); the last KV-cache
    utilisation seen is kept, since cached blocks stay allocated while the engine idles.
    """

    def __init__(
        self,
        max_slots: int,
        *,
        stale_after_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_slots = max_slots
        self._stale_after_s = stale_after_s
        self._clock = clock
        self._in_flight = 0
        self._latest: IterationSnapshot | None = None
        self._kv_use = 0.0

    @property
    def in_flight(self) -> int:
        """Requests submitted by this engine and not yet finished or aborted."""
        return self._in_flight

    def request_started(self) -> None:
        self._in_flight += 1

    def request_ended(self) -> None:
        self._in_flight = max(0, self._in_flight - 1)

    def observe(self, stat: Mapping[str, object]) -> None:
        """Take one statistics record from `get_stats_async`; ignores records it cannot read."""
        snapshot = parse_iteration_stats(stat, self._clock())
        if snapshot is None:
            return
        self._latest = snapshot
        if snapshot.kv_cache_utilization is not None:
            self._kv_use = snapshot.kv_cache_utilization

    def load(self) -> EngineLoad:
        """The current load report."""
        latest = self._latest
        if (
            self._in_flight > 0
            and latest is not None
            and self._clock() - latest.received_at <= self._stale_after_s
        ):
            # numQueuedRequests is the incoming request queue (`PyExecutor._update_iter_stats`:
            # `executor_request_queue.get_request_queue_size()`), which every iteration empties;
            # requests fetched but still waiting for a batch slot are in neither count, so
            # what this engine has in flight beyond the active ones is waiting too.
            active = latest.active
            queued = max(latest.queued, self._in_flight - latest.active)
        else:
            # No fresh statistics, or nothing in flight (then the engine is idle whatever the
            # last record said): every in-flight request holds a slot until the batch is full.
            active = min(self._in_flight, self._max_slots)
            queued = self._in_flight - active
        return EngineLoad(
            active=active,
            queued=queued,
            free_slots=max(0, self._max_slots - active),
            max_slots=self._max_slots,
            kv_cache_utilization=self._kv_use,
        )


async def poll_iteration_stats(
    llm: LLM,
    tracker: LoadTracker,
    *,
    timeout_s: float,
    idle_interval_s: float,
    stop: asyncio.Event,
) -> None:
    """Feed `tracker` from `llm.get_stats_async(timeout_s)` until `stop` is set or cancelled.

    One `get_stats_async` round ends when no record arrives for `timeout_s`; before the first
    request it ends at once (TensorRT-LLM has no statistics queue yet). A round that yielded
    nothing is followed by `idle_interval_s` of sleep so that an idle engine is not polled in a
    tight loop. `stop` ends the loop even when a cancellation is lost (on Python 3.11,
    `asyncio.wait_for` swallows a cancel that coincides with its result, and TensorRT-LLM's
    queues wait with timeouts).
    """
    while not stop.is_set():
        received = 0
        try:
            async for stat in llm.get_stats_async(timeout_s):
                tracker.observe(stat)
                received += 1
        except asyncio.CancelledError:
            raise
        except Exception:
            # A background reader must survive a bad record or a transient executor error: the
            # load report falls back to the in-flight count, and the next round tries again.
            STATS_ERRORS.inc()
            _log.warning("reading TensorRT-LLM iteration statistics failed", exc_info=True)
            received = 0
        if received == 0:
            await asyncio.sleep(idle_interval_s)
