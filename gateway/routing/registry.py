"""The set of known workers and what each serves, kept fresh in the background."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import grpc
from llmgateway.worker.v1 import worker_pb2 as pb
from llmgateway.worker.v1 import worker_pb2_grpc as pb_grpc

from gateway.settings import RoutingSettings

log = logging.getLogger(__name__)

# Keepalive pings from gateway to workers must stay below the workers' permitted rate.
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


@dataclass(eq=False)
class WorkerState:
    """One worker as the router sees it."""

    target: str
    channel: grpc.aio.Channel
    stub: pb_grpc.WorkerServiceAsyncStub
    worker_id: str = ""
    models: frozenset[str] = frozenset()
    pool: str = ""
    max_slots: int = 0
    ready: bool = False
    in_flight: int = 0
    load: pb.Load = field(default_factory=pb.Load)


class StaticRegistry:
    """Workers from a static list of targets; each worker's info is refreshed periodically."""

    def __init__(self, settings: RoutingSettings) -> None:
        self._settings = settings
        self.workers: list[WorkerState] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect to every worker and learn what it serves (workers that are down join later)."""
        for target in self._settings.workers:
            channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
            stub = pb_grpc.WorkerServiceStub(channel)
            self.workers.append(WorkerState(target, channel, stub))
        await asyncio.gather(*(self._refresh(w) for w in self.workers))
        self._task = asyncio.create_task(self._refresh_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*(w.channel.close() for w in self.workers))

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.info_refresh_s)
            await asyncio.gather(*(self._refresh(w) for w in self.workers))

    async def _refresh(self, worker: WorkerState) -> None:
        try:
            info = await worker.stub.GetInfo(
                pb.GetInfoRequest(), timeout=self._settings.connect_timeout_s
            )
            load = await worker.stub.GetLoad(
                pb.GetLoadRequest(), timeout=self._settings.connect_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            if worker.ready:
                log.warning("worker %s unreachable: %s", worker.target, exc.code().name)
            worker.ready = False
            return
        if not worker.ready:
            log.info(
                "worker %s ready: models %s, pool %s", worker.target, list(info.models), info.pool
            )
        worker.worker_id = info.worker_id
        worker.models = frozenset(info.models)
        worker.pool = info.pool
        worker.max_slots = info.max_slots
        worker.load = load.load
        worker.ready = not load.load.draining
