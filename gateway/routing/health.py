"""Keeps one worker's state fresh: GetInfo, `grpc.health.v1` checks, the WatchLoad stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2
from llmgateway.worker.v1 import worker_pb2 as pb

from gateway.routing.ejection import OutlierEjector
from gateway.routing.settings import RoutingSettings
from gateway.routing.worker import WorkerState

log = logging.getLogger(__name__)

WORKER_SERVICE = "llmgateway.worker.v1.WorkerService"


class WorkerMonitor:
    """Two background tasks per worker.

    The health task reads GetInfo (at start and every `info_refresh_s`) and checks
    `grpc.health.v1` every `health_check_s`; it also probes ejected workers whose backoff is over
    and readmits them when the probe succeeds. The load task holds a WatchLoad stream open so that
    load (and draining) is known within `load_report_ms`; when the stream breaks the worker is
    marked not serving at once, without waiting for the next health check. `on_change` is called
    whenever readiness or load changes (the scheduler then retries waiting generations),
    `on_info_change` whenever GetInfo reports other models, digests or another pool than before.
    """

    def __init__(
        self,
        worker: WorkerState,
        settings: RoutingSettings,
        ejector: OutlierEjector,
        on_change: Callable[[], None],
        *,
        on_info_change: Callable[[], None],
    ) -> None:
        self.worker = worker
        self._settings = settings
        self._ejector = ejector
        self._on_change = on_change
        self._on_info_change = on_info_change
        self._tasks: list[asyncio.Task[None]] = []
        self._connected = asyncio.Event()

    async def start(self) -> None:
        """Learn the worker's info, load and health once, then keep them fresh in the background."""
        await self._refresh_info()
        if self.worker.info_known:
            # Without a first report the worker would look full until WatchLoad delivers one.
            with contextlib.suppress(grpc.aio.AioRpcError):
                answer = await self.worker.stub.GetLoad(
                    pb.GetLoadRequest(), timeout=self._settings.connect_timeout_s
                )
                self.worker.report(answer.load)
        await self._check_health()
        self._tasks = [
            asyncio.create_task(self._health_loop(), name=f"health {self.worker.target}"),
            asyncio.create_task(self._load_loop(), name=f"load {self.worker.target}"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _health_loop(self) -> None:
        next_info = time.monotonic() + self._settings.info_refresh_s
        while True:
            await asyncio.sleep(self._settings.health_check_s)
            if not self.worker.info_known or time.monotonic() >= next_info:
                await self._refresh_info()
                next_info = time.monotonic() + self._settings.info_refresh_s
            await self._check_health()

    async def _refresh_info(self) -> None:
        worker = self.worker
        try:
            info = await worker.stub.GetInfo(
                pb.GetInfoRequest(), timeout=self._settings.connect_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            if worker.info_known:
                log.warning("worker %s: GetInfo failed (%s)", worker.name, exc.code().name)
            return
        if not worker.info_known:
            log.info(
                "worker %s at %s: models %s, pool %s, %d slots",
                info.worker_id,
                worker.target,
                list(info.models),
                info.pool,
                info.max_slots,
            )
        models = frozenset(info.models)
        digests = dict(info.model_digests)
        changed = (
            models != worker.models or info.pool != worker.pool or digests != worker.model_digests
        )
        worker.worker_id = info.worker_id
        worker.models = models
        worker.model_digests = digests
        worker.pool = info.pool
        worker.max_slots = info.max_slots
        if changed:
            self._on_info_change()
        if not worker.info_known:
            worker.info_known = True
            self._connected.set()
            self._on_change()

    async def _check_health(self) -> None:
        worker = self.worker
        was_ready = worker.ready
        try:
            answer = await worker.health_stub.Check(
                health_pb2.HealthCheckRequest(service=WORKER_SERVICE),
                timeout=self._settings.connect_timeout_s,
            )
            serving = answer.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.aio.AioRpcError:
            serving = False
        if serving and worker.ejection_over():
            # The probe before readmission: the health service alone can say SERVING while the
            # worker service is broken, so the worker must also answer a load request.
            try:
                load = await worker.stub.GetLoad(
                    pb.GetLoadRequest(), timeout=self._settings.connect_timeout_s
                )
            except grpc.aio.AioRpcError:
                serving = False
            else:
                worker.report(load.load)
                self._ejector.readmit(worker)
        if serving != worker.serving:
            log.log(
                logging.INFO if serving else logging.WARNING,
                "worker %s health: %s",
                worker.name,
                "SERVING" if serving else "not serving",
            )
        worker.serving = serving
        if worker.ready != was_ready:
            self._on_change()

    async def _load_loop(self) -> None:
        worker = self.worker
        request = pb.WatchLoadRequest(interval_ms=self._settings.load_report_ms)
        while True:
            await self._connected.wait()
            try:
                async for message in worker.stub.WatchLoad(request):
                    was_ready = worker.ready
                    worker.report(message.load)
                    if not worker.serving and not worker.ejected:
                        # A load report proves the worker service answers again.
                        await self._check_health()
                    if worker.ready or was_ready:
                        self._on_change()
            except grpc.aio.AioRpcError as exc:
                if worker.serving:
                    log.warning("worker %s load stream lost (%s)", worker.name, exc.code().name)
                    worker.serving = False
                    self._on_change()
            await asyncio.sleep(min(self._settings.health_check_s, 1.0))
