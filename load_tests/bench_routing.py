"""Cost of one routing decision (affinity hash + bounded-load pick) with 2, 20 and 200 workers.

Usage: ``python -m load_tests.bench_routing [--picks N]``. Workers are in-memory states with
realistic load reports (no network), so the table shows the router's own CPU per request. The
first pick after the worker list changes builds the candidate index and hash ring; it is timed
apart ("first pick") and the per-pick figures are the steady state after it.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

from llmgateway.worker.v1 import worker_pb2 as pb

from gateway.routing.picker import affinity_digest
from gateway.routing.registry import StaticRegistry
from gateway.routing.router import Router
from gateway.routing.settings import RoutingSettings
from gateway.routing.worker import WorkerState

MODEL = "llama-3.1-8b-instruct"


def fleet(size: int, rng: random.Random) -> list[WorkerState]:
    workers = []
    for i in range(size):
        worker = WorkerState.connect(f"10.0.{i // 250}.{i % 250}:50061")
        worker.info_known = worker.serving = True
        worker.models = frozenset({MODEL})
        worker.pool = "onprem-gpu"
        worker.max_slots = 16
        active = rng.randrange(0, 16)
        worker.report(pb.Load(active=active, free_slots=16 - active, max_slots=16))
        workers.append(worker)
    return workers


async def measure(size: int, picks: int) -> tuple[float, float]:
    """Microseconds per pick: with an affinity key, and by load alone."""
    keyed, by_load, _ = await measure_all(size, picks)
    return keyed, by_load


async def measure_all(size: int, picks: int) -> tuple[float, float, float]:
    """Microseconds per keyed and per load-only pick, and milliseconds of the first pick."""
    rng = random.Random(size)
    registry = StaticRegistry(RoutingSettings())
    registry.workers = fleet(size, rng)
    router = Router(registry)
    message = pb.GenerateRequest(model=MODEL, prompt="You are the ward assistant. " * 40)
    keys = [f"session-{i}" for i in range(1000)]
    started = time.perf_counter()
    router.pick(MODEL, ("onprem-gpu",), key=affinity_digest("ed", "warm-up", message, 512))
    first_ms = (time.perf_counter() - started) * 1e3
    started = time.perf_counter()
    for i in range(picks):
        digest = affinity_digest("ed", keys[i % len(keys)], message, 512)
        router.pick(MODEL, ("onprem-gpu",), key=digest)
    keyed = (time.perf_counter() - started) / picks * 1e6
    started = time.perf_counter()
    for _ in range(picks):
        router.pick(MODEL, ("onprem-gpu",))
    by_load = (time.perf_counter() - started) / picks * 1e6
    await asyncio.gather(*(w.channel.close() for w in registry.workers))
    return keyed, by_load, first_ms


async def main(picks: int) -> None:
    # 20 shows the trend between the two sizes the goal names.
    rows = {size: await measure_all(size, picks) for size in (2, 20, 200)}
    print(
        f"{'workers':>8} {'affinity pick (us)':>20} {'load-only pick (us)':>20} "
        f"{'first pick (ms)':>16}"
    )
    for size, (keyed, by_load, first_ms) in rows.items():
        print(f"{size:>8} {keyed:>20.1f} {by_load:>20.1f} {first_ms:>16.2f}")
    (k2, l2, _), (k200, l200, _) = rows[2], rows[200]
    print(f"ratio 200/2: affinity {k200 / k2:.1f}x, load-only {l200 / l2:.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--picks", type=int, default=5000)
    asyncio.run(main(parser.parse_args().picks))
