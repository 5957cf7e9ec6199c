"""The set of known workers: targets from discovery sources, each kept fresh by a monitor."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from common.egress import ResidencyViolation
from gateway.routing import metrics
from gateway.routing.ejection import OutlierEjector
from gateway.routing.health import WorkerMonitor
from gateway.routing.settings import RoutingSettings
from gateway.routing.worker import WorkerState

log = logging.getLogger(__name__)

Publish = Callable[[frozenset[str]], Awaitable[None]]


class Discovery(Protocol):
    """A source of worker targets (`host:port`).

    `run` publishes the complete set it knows every time it changes (or is re-read); a static
    source publishes once and returns, a dynamic one loops until cancelled. A source that fails to
    read keeps its last published set rather than dropping every worker on a transient error.
    """

    name: str

    async def run(self, publish: Publish) -> None: ...


class EgressCheck(Protocol):
    """The residency guard (`common.egress.EgressGuard` satisfies it)."""

    async def check_async(self, url_or_target: str, *, what: str, tls: bool) -> None: ...


class StaticDiscovery:
    """The `routing.workers` list."""

    name = "static"

    def __init__(self, targets: Sequence[str]) -> None:
        self._targets = frozenset(targets)

    async def run(self, publish: Publish) -> None:
        await publish(self._targets)


class WorkerRegistry:
    """Every worker any source knows, each with a `WorkerMonitor`; a composite of sources.

    A target listed by several sources is one worker; it leaves when no source lists it any
    more. Targets found at run time pass `guard` (the residency allowlist) before anything is
    sent to them; a refused target is logged and never contacted. A worker that leaves gets no new
    generations; its channel closes once its in-flight ones have finished. `subscribe` registers a
    callback run whenever a worker's readiness or load changes; `version` changes with the worker
    list and with any worker's models or pool.
    """

    def __init__(
        self,
        settings: RoutingSettings,
        sources: Sequence[Discovery],
        *,
        guard: EgressCheck | None = None,
    ) -> None:
        self.settings = settings
        self.ejector = OutlierEjector(settings)
        self._sources = tuple(sources)
        self._guard = guard
        self._by_source: dict[str, frozenset[str]] = {}
        self._monitors: dict[str, WorkerMonitor] = {}
        self._refused: set[str] = set()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribers: list[Callable[[], None]] = []
        self._workers: tuple[WorkerState, ...] = ()
        self._version = 0

    @property
    def workers(self) -> Sequence[WorkerState]:
        """The workers known now, ready or not."""
        return self._workers

    @workers.setter
    def workers(self, workers: Sequence[WorkerState]) -> None:
        self._workers = tuple(workers)
        self._version += 1

    @property
    def version(self) -> int:
        """Changes whenever `workers` is replaced or a worker's models or pool change.

        The router's `CandidateIndex` rebuilds its per-model worker sets when it sees a new one.
        """
        return self._version

    def info_changed(self) -> None:
        """A worker's models or pool changed (its monitor read a different GetInfo)."""
        self._version += 1

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._subscribers.append(callback)

    async def start(self) -> None:
        """Run every source; returns once each has published (or `connect_timeout_s` passed)."""
        published = [asyncio.Event() for _ in self._sources]
        for source, event in zip(self._sources, published, strict=True):
            self._tasks.append(
                asyncio.create_task(self._run(source, event), name=f"discovery {source.name}")
            )
        self._tasks.append(asyncio.create_task(self._export_metrics(), name="worker metrics"))
        if published:
            waits = [asyncio.create_task(event.wait()) for event in published]
            _, pending = await asyncio.wait(waits, timeout=self.settings.connect_timeout_s * 2)
            for task in pending:
                task.cancel()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self._lock:
            monitors = list(self._monitors.values())
            self._monitors.clear()
            self.workers = []
        await asyncio.gather(*(m.stop() for m in monitors))
        await asyncio.gather(*(m.worker.channel.close() for m in monitors))

    async def _export_metrics(self) -> None:
        while True:
            metrics.export_workers(self._workers)
            await asyncio.sleep(metrics.EXPORT_INTERVAL_S)

    def retire_if_idle(self, worker: WorkerState) -> None:
        """Close a departed worker's channel after its last in-flight generation."""
        if worker.retired and worker.in_flight == 0:
            task = asyncio.get_running_loop().create_task(worker.channel.close())
            self._tasks.append(task)

    def notify(self) -> None:
        for callback in self._subscribers:
            callback()

    async def _run(self, source: Discovery, published: asyncio.Event) -> None:
        async def publish(targets: frozenset[str]) -> None:
            await self._reconcile(source.name, targets)
            published.set()

        try:
            await source.run(publish)
        except asyncio.CancelledError:
            raise
        except Exception:  # a broken source must not take the gateway down; others keep working
            log.exception("worker discovery %s stopped", source.name)
        finally:
            published.set()

    async def _reconcile(self, source: str, targets: frozenset[str]) -> None:
        async with self._lock:
            self._by_source[source] = targets
            wanted = frozenset().union(*self._by_source.values())
            added = [t for t in sorted(wanted) if t not in self._monitors]
            removed = [t for t in self._monitors if t not in wanted]
            for target in removed:
                monitor = self._monitors.pop(target)
                await monitor.stop()
                monitor.worker.retired = True
                log.info("worker %s left (no discovery source lists it)", monitor.worker.name)
                self.retire_if_idle(monitor.worker)
            admitted = [t for t in added if await self._allowed(t)]
            monitors = [
                WorkerMonitor(
                    WorkerState.connect(t, self.settings.tls),
                    self.settings,
                    self.ejector,
                    self.notify,
                    on_info_change=self.info_changed,
                )
                for t in admitted
            ]
            await asyncio.gather(*(m.start() for m in monitors))
            for monitor in monitors:
                self._monitors[monitor.worker.target] = monitor
            if added or removed:
                self.workers = [m.worker for m in self._monitors.values()]
                self.notify()

    async def _allowed(self, target: str) -> bool:
        if self._guard is None:
            return True
        try:
            await self._guard.check_async(target, what="routing worker", tls=False)
        except (ResidencyViolation, OSError, ValueError) as exc:  # the message names the rule
            if target not in self._refused:
                log.error("worker %s refused by the residency guard: %s", target, exc)
                self._refused.add(target)
            return False
        self._refused.discard(target)
        return True


class StaticRegistry(WorkerRegistry):
    """Only the static `routing.workers` list (what the walking skeleton built)."""

    def __init__(self, settings: RoutingSettings, *, guard: EgressCheck | None = None) -> None:
        super().__init__(settings, [StaticDiscovery(settings.workers)], guard=guard)
