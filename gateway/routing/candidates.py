"""The workers that could serve a (model, allowed pools), indexed once, and their hash ring."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Protocol

from gateway.routing.digests import DigestWatch
from gateway.routing.worker import WorkerState

# Points per worker on the ring. More points even out the share of keys each worker owns (at 100,
# each of 200 workers owns between about 0.7 and 1.3 times the average share) at the price of a
# bigger ring: 20,000 points for 200 workers, rebuilt in about 10 ms after a change.
POINTS_PER_WORKER = 100
# The fleet's average load, which bounds affinity, is recomputed once a quarter as many picks as
# there are candidates have used it, or once it is this old (seconds): a scan of the set costs a
# constant per pick however large the fleet, this gateway's own dispatches move the average by at
# most 1/(4 x slots per worker) in between, and 10 ms is well under the 50 ms between load reports.
AVERAGE_MAX_AGE_S = 0.01
# Distinct (model, allowed pools) sets kept; the policy names a handful, so this only caps a leak.
_MAX_SETS = 1024

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


class WorkerList(Protocol):
    """What the index reads from the registry (`WorkerRegistry` satisfies it).

    `version` changes whenever `workers` is replaced or a worker's models or pool change.
    """

    @property
    def workers(self) -> Sequence[WorkerState]: ...

    @property
    def version(self) -> int: ...


@lru_cache(maxsize=1024)
def worker_points(hash_int: int) -> tuple[int, ...]:
    """A worker's ring positions: the splitmix64 sequence seeded with its 64-bit target hash."""
    points = []
    for i in range(1, POINTS_PER_WORKER + 1):
        z = (hash_int + i * _GOLDEN) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        points.append(z ^ (z >> 31))
    return tuple(points)


class HashRing:
    """Consistent hashing: a key belongs to the first worker point at or after its position.

    Points depend only on each worker's `hash_int` (from its target), so every gateway replica
    that knows the same workers builds the same ring and prefers the same worker for a key, and a
    worker that leaves takes only its own points with it: its keys move to the next workers
    clockwise, no other key moves. `owners[i]` is the worker at `points[i]` (sorted ascending).
    """

    __slots__ = ("owners", "points")

    def __init__(self, workers: Sequence[WorkerState]) -> None:
        # Sorted by hash first so that equal points (2^-64 odds) still order alike in every replica.
        ordered = sorted(workers, key=lambda w: w.hash_int)
        points: list[int] = []
        owner_of: list[WorkerState] = []
        for worker in ordered:
            mine = worker_points(worker.hash_int)
            points.extend(mine)
            owner_of.extend([worker] * len(mine))
        order = sorted(range(len(points)), key=points.__getitem__)
        self.points = [points[i] for i in order]
        self.owners = [owner_of[i] for i in order]

    def start(self, key: bytes) -> int:
        """Index of the first point at or after the key's position (wrapping round)."""
        i = bisect_left(self.points, int.from_bytes(key[:8], "big"))
        return i if i < len(self.points) else 0

    def owner(self, key: bytes) -> WorkerState | None:
        """The worker a key prefers while it has room (None on an empty ring)."""
        return self.owners[self.start(key)] if self.owners else None


class Candidates:
    """The workers serving one model in the allowed pools, whatever their readiness or load.

    Readiness, exclusion and free slots change by the millisecond and are checked by the picker
    on the few workers a pick looks at; membership, models and pools change rarely and are what
    this set is built from. The ring is built on the first keyed pick. `average_load` is cached
    (see `AVERAGE_MAX_AGE_S`), so picks scan the whole set only once per many picks.
    """

    __slots__ = ("_average", "_average_at", "_average_uses", "_clock", "_ring", "_uses", "workers")

    def __init__(
        self, workers: Sequence[WorkerState], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.workers = tuple(workers)
        self._clock = clock
        self._ring: HashRing | None = None
        self._average = 0.0
        self._average_at = 0.0
        self._average_uses = 0
        self._uses = max(1, len(self.workers) // 4)

    @property
    def ring(self) -> HashRing:
        if self._ring is None:
            self._ring = HashRing(self.workers)
        return self._ring

    def average_load(self) -> float:
        """Busy slots over capacity of the ready workers, counting one more request, recently."""
        now = self._clock()
        self._average_uses -= 1
        if self._average_uses < 0 or now - self._average_at >= AVERAGE_MAX_AGE_S:
            busy = 1
            capacity = 0
            for w in self.workers:
                if w.ready:
                    cap = w.reported_slots or w.max_slots or 1
                    busy += cap - min(w.reported_free - w.unreported, cap - w.in_flight)
                    capacity += cap
            self._average = busy / max(1, capacity)
            self._average_at = now
            self._average_uses = self._uses - 1
        return self._average


class CandidateIndex:
    """`Candidates` per (model, allowed pools), dropped whenever the registry's version changes.

    Finding the candidates is then a dictionary lookup per request instead of a filter over every
    worker; the registry bumps its version when its worker list or a worker's models or pool
    change, the only inputs of the sets.
    """

    def __init__(
        self,
        registry: WorkerList,
        clock: Callable[[], float] = time.monotonic,
        digests: DigestWatch | None = None,
    ) -> None:
        self._registry = registry
        self._clock = clock
        self.digests = digests or DigestWatch()
        self._version = registry.version - 1
        self._sets: dict[tuple[str, tuple[str, ...] | None, str], Candidates] = {}
        self._models: frozenset[str] = frozenset()

    def serves(self, model: str) -> bool:
        """True if any known worker (ready or not) serves `model`."""
        if self._registry.version != self._version:
            self._refresh()
        return model in self._models

    def get(
        self, model: str, allowed_pools: tuple[str, ...] | None, digest: str = ""
    ) -> Candidates:
        """The candidates for `model` in `allowed_pools` (None: any pool).

        With a `digest` (the model register's), only workers advertising it for `model`.
        """
        if self._registry.version != self._version:
            self._refresh()
        found = self._sets.get((model, allowed_pools, digest))
        if found is None:
            if len(self._sets) >= _MAX_SETS:
                self._sets.clear()
            workers = self._registry.workers
            if digest:
                self.digests.observe(model, digest, workers)
            found = Candidates(
                [
                    w
                    for w in workers
                    if model in w.models
                    and (allowed_pools is None or w.pool in allowed_pools)
                    and (not digest or w.model_digests.get(model) == digest)
                ],
                self._clock,
            )
            self._sets[(model, allowed_pools, digest)] = found
        return found

    def _refresh(self) -> None:
        self._version = self._registry.version
        self._sets.clear()
        self._models = frozenset().union(*(w.models for w in self._registry.workers))
