"""The priority queue: emergency before administrative, shedding fast with RetryInfo, deadlines."""

from __future__ import annotations

import asyncio
import time

import pytest
from google.rpc import error_details_pb2

from gateway.request.errors import ResourceExhausted
from gateway.routing.router import RouteOutcome, Router, WorkerCall
from tests.gateway.routing.routing_helpers import StartRouter, call, run
from tests.helpers import StartWorker, wait_until
from workers.sim import SimConfig

ONE_SLOT = SimConfig(
    time_to_first_token_ms=5, inter_token_latency_ms=4, prefill_ms_per_token=0, max_num_seqs=1
)


async def occupy(router: Router, max_tokens: int) -> asyncio.Task[tuple[str, RouteOutcome]]:
    """Start a generation that holds the only slot, and wait until it does."""
    task = asyncio.create_task(run(router, call("hold the slot", max_tokens=max_tokens)))
    await wait_until(lambda: any(w.in_flight for w in router.registry.workers), 1.0)
    return task


def retry_delay(error: ResourceExhausted) -> float:
    infos = [d for d in error.details if isinstance(d, error_details_pb2.RetryInfo)]
    assert len(infos) == 1
    nanoseconds: int = infos[0].retry_delay.ToNanoseconds()
    return nanoseconds / 1e9


async def test_emergency_overtakes_queued_administrative_requests(
    start_sim_worker: StartWorker, start_router: StartRouter
) -> None:
    worker = await start_sim_worker(ONE_SLOT)
    router = await start_router(worker)
    holder = await occupy(router, max_tokens=25)
    served: list[str] = []

    async def queued(name: str, worker_call: WorkerCall) -> RouteOutcome:
        outcome = RouteOutcome()
        async for _ in router.generate(worker_call, outcome):
            if name not in served:
                served.append(name)
        return outcome

    tasks = []
    for i in range(3):
        tasks.append(asyncio.create_task(queued(f"admin-{i}", call(priority=10, department="adm"))))
        await wait_until(lambda n=i + 1: len(router.scheduler) == n, 1.0)
    tasks.append(asyncio.create_task(queued("emergency", call(priority=100, department="ed"))))
    await wait_until(lambda: len(router.scheduler) == 4, 1.0)
    outcomes = await asyncio.gather(*tasks)
    await holder
    assert served == ["emergency", "admin-0", "admin-1", "admin-2"]
    assert all(o.queue_ms > 20 for o in outcomes)  # every one of them really waited


async def test_full_queue_sheds_lowest_priority_quickly_with_retry_info(
    start_sim_worker: StartWorker, start_router: StartRouter
) -> None:
    worker = await start_sim_worker(ONE_SLOT)
    router = await start_router(worker, queue_size=2)
    holder = await occupy(router, max_tokens=60)
    low = [asyncio.create_task(run(router, call(priority=10))) for _ in range(2)]
    await wait_until(lambda: len(router.scheduler) == 2, 1.0)

    started = time.monotonic()
    with pytest.raises(ResourceExhausted) as refused:
        await run(router, call(priority=10))
    assert time.monotonic() - started < 0.05  # refused at once, not after a timeout
    assert "queue is full" in refused.value.message and retry_delay(refused.value) > 0

    # A higher priority displaces the newest low-priority waiter instead of being refused.
    high = asyncio.create_task(run(router, call(priority=100)))
    with pytest.raises(ResourceExhausted) as displaced:
        await low[1]
    assert "higher-priority" in displaced.value.message
    _, high_outcome = await high
    await low[0]
    await holder
    assert high_outcome.worker_id == "sim-0"


async def test_request_that_cannot_make_its_deadline_is_shed_not_timed_out(
    start_sim_worker: StartWorker, start_router: StartRouter
) -> None:
    worker = await start_sim_worker(ONE_SLOT)
    router = await start_router(worker)
    holder = await occupy(router, max_tokens=100)  # ~0.4 s
    started = time.monotonic()
    with pytest.raises(ResourceExhausted) as shed:
        await run(router, call(deadline=time.monotonic() + 0.15))
    waited = time.monotonic() - started
    assert 0.1 < waited < 0.3 and "saturated" in shed.value.message
    assert len(router.scheduler) == 0
    holder.cancel()


async def test_cancelled_waiter_leaves_the_queue_and_frees_nothing_twice(
    start_sim_worker: StartWorker, start_router: StartRouter
) -> None:
    worker = await start_sim_worker(ONE_SLOT)
    router = await start_router(worker)
    holder = await occupy(router, max_tokens=20)
    waiter = asyncio.create_task(run(router, call()))
    await wait_until(lambda: len(router.scheduler) == 1, 1.0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert len(router.scheduler) == 0
    await holder
    text, outcome = await run(router, call())
    assert text and outcome.queue_ms < 20
    assert [w.in_flight for w in router.registry.workers] == [0]
