"""Outlier ejection and readmission, active health checks, and drain as the router sees them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from grpc_health.v1 import health_pb2

from gateway.routing.candidates import HashRing
from gateway.routing.picker import affinity_digest
from gateway.routing.router import Router
from tests.gateway.routing.routing_helpers import MODEL, StartRouter, call, run
from tests.helpers import FAST_SIM, StartWorker, wait_until
from workers import cli
from workers.engine import EngineChunk, EngineRequest, EngineUnavailable
from workers.server import SERVICE_NAME, WorkerHandle, start_worker
from workers.sim import SimConfig, SimEngine


class FailingSim(SimEngine):
    """The simulator with a switch that makes every generation fail as a broken GPU would."""

    failing = False
    attempts = 0

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineChunk]:
        self.attempts += 1
        if self.failing:
            raise EngineUnavailable("simulated GPU fault")
        async for chunk in super().generate(request):
            yield chunk


def preferred_key(router: Router, worker: WorkerHandle) -> str:
    """A session key that the router sends to `worker` while it is healthy."""
    ring = HashRing(router.registry.workers)  # every worker serves MODEL: the router's ring
    for i in range(1000):
        owner = ring.owner(affinity_digest("ed", f"k{i}", call().message, 512))
        if owner is not None and owner.target == worker.target:
            return f"k{i}"
    raise AssertionError("no key prefers the worker")


async def test_failing_worker_is_ejected_then_probed_and_readmitted(
    start_sim_worker: StartWorker, start_router: StartRouter
) -> None:
    engine = FailingSim(FAST_SIM)
    flaky = await start_worker(engine, worker_id="flaky")
    try:
        healthy = await start_sim_worker()
        router = await start_router(flaky, healthy)
        key = preferred_key(router, flaky)
        engine.failing = True
        outcomes = [
            (await run(router, call(affinity_key=key, department="ed")))[1] for _ in range(2)
        ]
        # Each failure was retried on the healthy worker: the caller saw success every time.
        assert [(o.worker_id, o.retries) for o in outcomes] == [("sim-0", 1), ("sim-0", 1)]
        state = next(w for w in router.registry.workers if w.target == flaky.target)
        assert state.ejected and not state.ready
        for _ in range(3):  # while ejected the flaky worker is not even tried
            _, outcome = await run(router, call(affinity_key=key, department="ed"))
            assert (outcome.worker_id, outcome.retries) == ("sim-0", 0)
        assert engine.attempts == 2

        engine.failing = False
        await wait_until(lambda: state.ready, within=2.0)  # backoff 0.3 s, then a probe
        _, outcome = await run(router, call(affinity_key=key, department="ed"))
        assert outcome.worker_id == "flaky" and engine.attempts == 3
    finally:
        await flaky.stop(grace=0)


async def test_second_ejection_lasts_longer(
    start_sim_worker: StartWorker, start_router: StartRouter
) -> None:
    engine = FailingSim(FAST_SIM)
    flaky = await start_worker(engine, worker_id="flaky")
    try:
        router = await start_router(flaky, await start_sim_worker())
        state = next(w for w in router.registry.workers if w.target == flaky.target)
        key = preferred_key(router, flaky)
        engine.failing = True
        periods = []
        for _ in range(2):
            await wait_until(lambda: state.ready, within=3.0)
            for _ in range(2):
                await run(router, call(affinity_key=key, department="ed"))
            assert state.ejected and state.ejected_until is not None
            periods.append(state.ejected_until - state.last_ejected)
            engine.failing = False
            await wait_until(lambda: state.ready, within=3.0)
            engine.failing = True
        assert periods == [pytest.approx(0.3), pytest.approx(0.6)]
    finally:
        await flaky.stop(grace=0)


async def test_worker_reporting_not_serving_gets_no_traffic(
    start_sim_worker: StartWorker, start_router: StartRouter
) -> None:
    sick = await start_sim_worker()
    other = await start_sim_worker()
    router = await start_router(sick, other)
    await sick.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
    await wait_until(lambda: router.models()[MODEL].ready_workers == 1, within=1.0)
    served = {(await run(router, call(f"p{i}")))[1].worker_id for i in range(6)}
    assert served == {"sim-1"}
    await sick.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    await wait_until(lambda: router.models()[MODEL].ready_workers == 2, within=1.0)


async def test_drain_lets_in_flight_finish_and_stops_new_traffic(
    start_sim_worker: StartWorker, start_router: StartRouter
) -> None:
    slow = SimConfig(time_to_first_token_ms=5, inter_token_latency_ms=10, prefill_ms_per_token=0)
    draining = await start_sim_worker(slow)
    other = await start_sim_worker()
    router = await start_router(draining, other)
    key = preferred_key(router, draining)
    in_flight = asyncio.create_task(
        run(router, call(affinity_key=key, department="ed", max_tokens=30))
    )
    await wait_until(lambda: draining.engine.load().active == 1, 1.0)

    code = await asyncio.to_thread(cli.main, ["drain", "--target", draining.target, "--wait"])
    # `--wait` returned only after the in-flight generation finished on the draining worker.
    assert code == 0 and in_flight.done()
    text, outcome = in_flight.result()
    assert outcome.worker_id == "sim-0" and len(text.split()) >= 25
    state = next(w for w in router.registry.workers if w.target == draining.target)
    await wait_until(lambda: not state.ready, within=0.5)
    _, outcome = await run(router, call(affinity_key=key, department="ed"))
    assert (outcome.worker_id, outcome.retries) == ("sim-1", 0)

    assert (
        await asyncio.to_thread(cli.main, ["drain", "--target", draining.target, "--resume"]) == 0
    )
    await wait_until(lambda: state.ready, within=1.0)
    _, outcome = await run(router, call(affinity_key=key, department="ed"))
    assert outcome.worker_id == "sim-0"


async def test_refusal_while_draining_is_retried_elsewhere_at_once(
    start_sim_worker: StartWorker, start_router: StartRouter
) -> None:
    draining = await start_sim_worker()
    other = await start_sim_worker()
    # Health and load refresh are slow here, so the router learns of the drain from the refusal.
    router = await start_router(draining, other, health_check_s=30.0, load_report_ms=60_000)
    key = preferred_key(router, draining)
    draining.servicer.draining = True  # refuses, without telling health or load watchers
    _, outcome = await run(router, call(affinity_key=key, department="ed"))
    assert (outcome.worker_id, outcome.retries) == ("sim-1", 1)
    state = next(w for w in router.registry.workers if w.target == draining.target)
    assert state.draining and not state.ejected  # a drain is not a fault
    _, outcome = await run(router, call(affinity_key=key, department="ed"))
    assert (outcome.worker_id, outcome.retries) == ("sim-1", 0)
