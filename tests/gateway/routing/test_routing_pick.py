"""Picking on in-memory fleets: ring affinity, bounded loads, two choices, the candidate index."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable

import pytest
from llmgateway.worker.v1 import worker_pb2 as pb

from gateway.request.errors import Unavailable
from gateway.routing.candidates import CandidateIndex, HashRing
from gateway.routing.picker import affinity_digest, pick
from gateway.routing.registry import StaticRegistry
from gateway.routing.router import Router
from gateway.routing.settings import RoutingSettings
from gateway.routing.worker import WorkerState
from tests.gateway.routing.routing_helpers import MODEL, StartRouter
from tests.helpers import StartWorker, wait_until

POOL = "onprem-gpu"
SLOTS = 16
Fleet = Callable[..., list[WorkerState]]


class CountingWorker(WorkerState):
    """A worker whose `ready` reads are counted: every worker a pick looks at is read once."""

    reads = 0

    @property
    def ready(self) -> bool:
        CountingWorker.reads += 1
        return super().ready


@pytest.fixture
async def make_fleet() -> AsyncIterator[Fleet]:
    """Build in-memory ready workers (no server behind them); channels closed at teardown."""
    made: list[WorkerState] = []

    def build(
        size: int,
        *,
        active: Iterable[int] | None = None,
        kind: type[WorkerState] = WorkerState,
        prefix: str = "10.0",
    ) -> list[WorkerState]:
        loads = list(active) if active is not None else [0] * size
        fleet = []
        for i in range(size):
            worker = kind.connect(f"{prefix}.{i // 250}.{i % 250}:50061")
            worker.info_known = worker.serving = True
            worker.models = frozenset({MODEL})
            worker.pool = POOL
            worker.max_slots = SLOTS
            set_active(worker, loads[i])
            fleet.append(worker)
        made.extend(fleet)
        return fleet

    yield build
    for worker in made:
        await worker.channel.close()


def set_active(worker: WorkerState, active: int) -> None:
    worker.report(pb.Load(active=active, free_slots=SLOTS - active, max_slots=SLOTS))


def router_over(workers: list[WorkerState]) -> Router:
    registry = StaticRegistry(RoutingSettings())
    registry.workers = workers
    return Router(registry)


def digest(i: int, department: str = "ed") -> bytes:
    return affinity_digest(department, f"session-{i}", pb.GenerateRequest(), 512)


def picked(router: Router, key: bytes | None, **kwargs: object) -> WorkerState:
    worker = router.pick(MODEL, (POOL,), key=key, **kwargs)  # type: ignore[arg-type]
    assert worker is not None
    return worker


async def test_replicas_that_know_the_same_workers_prefer_the_same_worker_per_key(
    make_fleet: Fleet,
) -> None:
    first = make_fleet(50)
    second = make_fleet(50)  # separate states for the same targets, as another replica has
    random.Random(1).shuffle(second)  # discovered in another order
    a, b = router_over(first), router_over(second)
    for i in range(2000):
        assert picked(a, digest(i)).target == picked(b, digest(i)).target


async def test_a_departing_worker_moves_only_its_own_keys(make_fleet: Fleet) -> None:
    workers = make_fleet(50)
    router = router_over(workers)
    before = {i: picked(router, digest(i)) for i in range(3000)}
    gone = workers[17]
    router.registry.workers = [w for w in workers if w is not gone]
    after = {i: picked(router, digest(i)) for i in range(3000)}
    moved = [i for i in before if after[i] is not before[i]]
    assert moved and all(before[i] is gone for i in moved)
    assert all(after[i] is not gone for i in after)
    # Its keys spread over several workers rather than all landing on one neighbour.
    assert len({after[i] for i in moved}) > 5


async def test_keys_spread_evenly_over_a_large_fleet(make_fleet: Fleet) -> None:
    router = router_over(make_fleet(200))
    shares = Counter(picked(router, digest(i)).target for i in range(20_000))
    assert len(shares) == 200
    mean = 20_000 / 200
    assert max(shares.values()) < 2 * mean and min(shares.values()) > mean / 2


async def test_a_preferred_worker_keeps_its_keys_until_it_is_over_the_bound(
    make_fleet: Fleet,
) -> None:
    workers = make_fleet(10)
    key = digest(1)
    preferred = HashRing(workers).owner(key)
    assert preferred is not None and picked(router_over(workers), key) is preferred

    # Under half its slots after this request: kept, whatever the others' load.
    set_active(preferred, SLOTS // 2 - 1)
    assert picked(router_over(workers), key) is preferred
    # Over half and far above the idle fleet's average: the next worker on the ring takes it.
    set_active(preferred, 12)
    ring = HashRing(workers)
    start = ring.start(key)
    following = next(
        w for w in (ring.owners[(start + s) % len(ring.owners)] for s in range(1, 1000))
        if w is not preferred
    )  # fmt: skip
    assert picked(router_over(workers), key) is following
    # The whole fleet equally busy: within `affinity_load_factor` x the average, kept again.
    for worker in workers:
        set_active(worker, 12)
    assert picked(router_over(workers), key) is preferred
    # Full: never picked, even for its own key.
    set_active(preferred, SLOTS)
    assert picked(router_over(workers), key) is not preferred


@pytest.mark.parametrize("size", [7, 40])  # exact scans, then sampling and the ring walk
async def test_not_ready_excluded_and_full_workers_are_never_picked(
    make_fleet: Fleet, size: int
) -> None:
    workers = make_fleet(size)
    rng = random.Random(size)
    bad = rng.sample(workers, size - 2)
    excluded = []
    for n, worker in enumerate(bad):
        match n % 5:
            case 0:
                worker.serving = False
            case 1:
                worker.draining = True
            case 2:
                worker.ejected_until = 1.0
            case 3:
                set_active(worker, SLOTS)
            case _:
                excluded.append(worker)
    good = {w.target for w in workers if w not in bad}
    router = router_over(workers)
    for i in range(500):
        assert picked(router, digest(i), exclude=excluded).target in good
        assert picked(router, None, exclude=excluded).target in good


@pytest.mark.parametrize("size", [3, 60])
async def test_all_full_is_none_and_none_ready_is_unavailable(make_fleet: Fleet, size: int) -> None:
    workers = make_fleet(size, active=[SLOTS] * size)
    router = router_over(workers)
    assert router.pick(MODEL, (POOL,), key=digest(1)) is None
    assert router.pick(MODEL, (POOL,)) is None
    set_active(workers[size // 2], SLOTS - 1)  # one slot anywhere is found
    assert picked(router, digest(1)) is workers[size // 2]
    assert picked(router, None) is workers[size // 2]
    for worker in workers:
        worker.serving = False
    with pytest.raises(Unavailable):
        router.pick(MODEL, (POOL,), key=digest(1))
    with pytest.raises(Unavailable):
        router.pick(MODEL, (POOL,), exclude=workers[:1])
    with pytest.raises(Unavailable):
        router.pick(MODEL, ("cloud",))  # no candidate in the pool at all


async def test_load_only_picks_on_a_large_fleet_prefer_less_loaded_workers(
    make_fleet: Fleet,
) -> None:
    rng = random.Random(5)
    workers = make_fleet(200, active=[rng.randrange(0, SLOTS - 1) for _ in range(200)])
    router = router_over(workers)
    median = statistics.median(w.utilization() for w in workers)
    chosen = [picked(router, None).utilization() for _ in range(4000)]
    # Two choices: the chosen one is above the median only when both draws are (1 in 4).
    assert sum(u <= median for u in chosen) / len(chosen) > 0.65
    assert statistics.mean(chosen) < statistics.mean(w.utilization() for w in workers) - 0.1


async def test_a_pick_looks_at_the_same_few_workers_whatever_the_fleet_size(
    make_fleet: Fleet,
) -> None:
    """Work, not time: `ready` reads per pick (once per worker looked at) on bench-like fleets."""
    per_pick = {}
    for size in (20, 200, 1000):
        rng = random.Random(size)
        workers = make_fleet(
            size, active=[rng.randrange(SLOTS) for _ in range(size)], kind=CountingWorker
        )
        registry = StaticRegistry(RoutingSettings())
        registry.workers = workers
        # A frozen clock: the cached average is refreshed by the count of picks alone.
        candidates = CandidateIndex(registry, clock=lambda: 0.0).get(MODEL, (POOL,))
        pick(candidates, digest(0), 1.25, (), rng.random)  # builds the ring
        CountingWorker.reads = 0
        for i in range(2000):
            assert pick(candidates, digest(i), 1.25, (), rng.random) is not None
            assert pick(candidates, None, 1.25, (), rng.random) is not None
        per_pick[size] = CountingWorker.reads / 4000
    # About 2 on the walk, 2 drawn, and the average's scan shared by size/4 picks.
    assert all(reads < 8 for reads in per_pick.values()), per_pick
    assert per_pick[1000] < 1.5 * per_pick[20], per_pick


async def test_the_index_follows_the_worker_list(make_fleet: Fleet) -> None:
    first = make_fleet(12)
    router = router_over(first)
    assert router.serves(MODEL) and picked(router, digest(1)) in first
    second = make_fleet(12, prefix="10.1")
    router.registry.workers = second
    assert {picked(router, digest(i)).target for i in range(200)} <= {w.target for w in second}
    router.registry.workers = []
    assert not router.serves(MODEL)
    with pytest.raises(Unavailable):
        router.pick(MODEL, None)


async def test_the_index_follows_models_and_pools_a_worker_reports(
    start_sim_worker: StartWorker, start_router: StartRouter
) -> None:
    worker = await start_sim_worker()
    router = await start_router(worker, info_refresh_s=0.05)
    assert router.serves(MODEL) and router.pick(MODEL, ("onprem-gpu",)) is not None
    assert not router.serves("mistral-7b-instruct")

    worker.engine.models = ("mistral-7b-instruct",)
    await wait_until(lambda: router.serves("mistral-7b-instruct"), within=2.0)
    assert not router.serves(MODEL)
    with pytest.raises(Unavailable):
        router.pick(MODEL, None)
    assert router.pick("mistral-7b-instruct", ("onprem-gpu",)) is not None

    worker.servicer.pool = "eu-cloud"
    await wait_until(lambda: router.registry.workers[0].pool == "eu-cloud", within=2.0)
    with pytest.raises(Unavailable):
        router.pick("mistral-7b-instruct", ("onprem-gpu",))
    assert router.pick("mistral-7b-instruct", ("eu-cloud",)) is not None
