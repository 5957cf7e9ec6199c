"""The priority queue in front of the workers: who gets the next free slot, and who is shed."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from gateway.request.errors import ResourceExhausted, Unavailable, retry_info
from gateway.routing.metrics import QUEUE_DEPTH, QUEUE_WAIT, SHED
from gateway.routing.settings import RoutingSettings
from gateway.routing.worker import WorkerState

# Picks a worker with a free slot for one generation (None: all full); raises Unavailable when no
# worker could ever serve it (none ready for the model and pools).
Select = Callable[[], WorkerState | None]


@dataclass(eq=False)
class _Waiter:
    priority: int
    department: str
    seq: int
    select: Select
    future: asyncio.Future[WorkerState] = field(repr=False)


class Scheduler:
    """Hands free worker slots to generations: at once when one is free, else through a queue.

    The queue holds at most `queue_size` generations, ordered by priority (higher first) and,
    within a priority, round-robin over departments (FIFO inside one department), so one busy
    department cannot starve another of the same class. When the queue is full the newest of the
    lowest-priority waiters is shed with RESOURCE_EXHAUSTED, so an emergency request displaces
    an administrative one rather than being refused. A request is also shed at once when the
    queue's recent drain rate says it would wait past its deadline, and when it has waited
    `queue_timeout_s` or until just before its deadline: callers get RESOURCE_EXHAUSTED with
    RetryInfo, never a timeout. `wake()` (called whenever a slot may have freed) dispatches.
    """

    def __init__(self, settings: RoutingSettings) -> None:
        self._settings = settings
        self._levels: dict[int, OrderedDict[str, deque[_Waiter]]] = {}
        self._size = 0
        self._seq = itertools.count()
        self._dispatched: deque[float] = deque(maxlen=32)
        self._wake_scheduled = False

    def __len__(self) -> int:
        return self._size

    async def acquire(
        self, select: Select, *, priority: int, department: str, deadline: float | None
    ) -> WorkerState:
        """A worker with a slot reserved (`dispatched()`) for this generation; may wait."""
        worker = select()
        if worker is not None:
            worker.dispatched()
            return worker
        now = time.monotonic()
        wait_s = self._settings.queue_timeout_s
        if deadline is not None:
            wait_s = min(wait_s, deadline - now)
            expected = self._expected_wait(priority)
            if expected is not None and expected > deadline - now:
                self._shed("deadline", expected)
        waiter = _Waiter(
            priority,
            department,
            next(self._seq),
            select,
            asyncio.get_running_loop().create_future(),
        )
        self._enqueue(waiter)
        try:
            async with asyncio.timeout(max(0.0, wait_s)):
                worker = await asyncio.shield(waiter.future)
        except TimeoutError:
            granted = _granted(waiter.future)
            if granted is None:
                self._remove(waiter)
                waiter.future.cancel()
                self._shed("timeout", self._expected_wait(priority) or 1.0)
            worker = granted  # the slot arrived together with the timeout: use it
        except asyncio.CancelledError:
            self._remove(waiter)
            granted = _granted(waiter.future)
            if granted is not None:  # the slot arrived together with the cancellation
                granted.finished()
                self.wake()
            waiter.future.cancel()
            raise
        QUEUE_WAIT.observe(time.monotonic() - now)
        return worker

    def wake(self) -> None:
        """A slot may have freed or a worker changed: dispatch waiters soon (coalesced)."""
        if self._size and not self._wake_scheduled:
            self._wake_scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._wake_scheduled = False
        while self._size and self._dispatch_one():
            pass

    def _dispatch_one(self) -> bool:
        for priority in sorted(self._levels, reverse=True):
            departments = self._levels[priority]
            for department, queue in list(departments.items()):
                for waiter in list(queue):
                    try:
                        worker = waiter.select()
                    except Unavailable as exc:
                        self._remove(waiter)
                        waiter.future.set_exception(exc)
                        return True
                    if worker is None:
                        continue
                    self._remove(waiter)
                    worker.dispatched()
                    waiter.future.set_result(worker)
                    self._dispatched.append(time.monotonic())
                    if department in departments:
                        departments.move_to_end(department)  # round-robin within a priority
                    return True
        return False

    def _enqueue(self, waiter: _Waiter) -> None:
        if self._size >= self._settings.queue_size:
            victim = self._lowest()
            if victim is None or victim.priority >= waiter.priority:
                self._shed("queue_full", self._expected_wait(waiter.priority) or 1.0)
            self._remove(victim)
            SHED.labels(reason="displaced").inc()
            victim.future.set_exception(
                ResourceExhausted(
                    "the workers for this model are saturated and higher-priority requests took "
                    "this request's place in the queue; retry after the delay in RetryInfo",
                    details=[retry_info(self._expected_wait(victim.priority) or 1.0)],
                )
            )
        level = self._levels.setdefault(waiter.priority, OrderedDict())
        level.setdefault(waiter.department, deque()).append(waiter)
        self._size += 1
        QUEUE_DEPTH.inc()

    def _remove(self, waiter: _Waiter) -> None:
        level = self._levels.get(waiter.priority)
        queue = level.get(waiter.department) if level is not None else None
        if level is None or queue is None or waiter not in queue:
            return
        queue.remove(waiter)
        if not queue:
            del level[waiter.department]
        if not level:
            del self._levels[waiter.priority]
        self._size -= 1
        QUEUE_DEPTH.dec()

    def _lowest(self) -> _Waiter | None:
        """The newest waiter of the lowest priority: the first to shed."""
        if not self._levels:
            return None
        level = self._levels[min(self._levels)]
        return max((q[-1] for q in level.values()), key=lambda w: w.seq)

    def _expected_wait(self, priority: int) -> float | None:
        """Seconds until a new waiter of `priority` would be served, from the recent drain rate."""
        times = self._dispatched
        if len(times) < 4 or time.monotonic() - times[-1] > 5.0:
            return None
        span = times[-1] - times[0]
        if span <= 0:
            return None
        ahead = sum(
            len(q) for p, level in self._levels.items() if p >= priority for q in level.values()
        )
        return (ahead + 1) * span / (len(times) - 1)

    def _shed(self, reason: str, retry_after: float) -> NoReturn:
        SHED.labels(reason=reason).inc()
        messages = {
            "queue_full": "the workers for this model are saturated and the queue is full",
            "deadline": "the workers for this model are saturated and the request would not be "
            "served before its deadline",
            "timeout": "the workers for this model stayed saturated while the request waited",
        }
        raise ResourceExhausted(
            f"{messages[reason]}; retry after the delay in RetryInfo",
            details=[retry_info(retry_after)],
        )


def _granted(future: asyncio.Future[WorkerState]) -> WorkerState | None:
    """The worker a finished future carries, or None (pending, cancelled or failed)."""
    if not future.done() or future.cancelled() or future.exception() is not None:
        return None
    return future.result()
