"""Choosing a worker among the candidates: bounded-load consistent hashing, else least loaded.

Every pick looks at a few workers whatever the fleet's size. With a key it walks the candidates'
hash ring from the key's position (consistent hashing with bounded loads, Mirrokni et al.): the
first ready, not excluded worker with a free slot whose load after this request stays under
`_KEEP_BELOW` of its slots, or within `load_factor` times the fleet's average (cached, see
`Candidates.average_load`), wins. After `_WALK` distinct workers it gives up on affinity.
Without a key, or after giving up: the less utilized of two random ready workers with a free slot
(power of two choices, as Envoy's least-request balancer). With at most `_SCAN_UP_TO` candidates,
or when sampling finds none, an exact scan picks the least utilized, so "None: every candidate is
full" stays exact.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

from llmgateway.worker.v1 import worker_pb2 as pb

from gateway.routing.candidates import Candidates
from gateway.routing.worker import WorkerState

# Up to this share of its slots a worker keeps the sessions hashed to it whatever the others' load:
# while every worker has room, reusing a KV cache is worth more than an even spread.
_KEEP_BELOW = 0.5
# Distinct workers an affinity pick tries on the ring before it falls back to the load alone.
_WALK = 8
# Up to this many candidates a load-only pick scans them all; above, it samples.
_SCAN_UP_TO = 8
# Power of d choices: workers with a free slot compared per load-only pick, and random draws
# allowed to find them (not-ready, excluded and full workers are drawn and skipped).
_CHOICES = 2
_DRAWS = 8


class NoReadyWorker(Exception):
    """No ready, not excluded candidate: nothing will ever be picked by waiting for a slot."""


def affinity_digest(
    department: str, affinity_key: str, message: pb.GenerateRequest, prefix_chars: int
) -> bytes:
    """The affinity key hashed: department plus the affinity key, or plus the prompt's prefix.

    The department is always part of it, so one session key used by two departments maps to
    unrelated workers: KV-cache reuse stays inside a department (the worker's `cache_salt`
    enforces it; this keeps the routing from even trying).
    """
    if affinity_key:
        basis = "key\0" + affinity_key
    elif message.WhichOneof("input") == "chat":
        parts: list[str] = []
        size = 0
        for turn in message.chat.messages:
            parts.append(f"{turn.role}\0{turn.content}\0")
            size += len(parts[-1])
            if size >= prefix_chars:
                break
        basis = "chat\0" + "".join(parts)[:prefix_chars]
    else:
        basis = "prompt\0" + message.prompt[:prefix_chars]
    material = f"{department}\0{basis}".encode()
    return hashlib.blake2b(material, digest_size=16).digest()


def pick(
    candidates: Candidates,
    key: bytes | None,
    load_factor: float,
    exclude: Sequence[WorkerState],
    random: Callable[[], float],
) -> WorkerState | None:
    """The worker for the next generation, or None when every candidate is full.

    Raises NoReadyWorker when no candidate is ready (outside `exclude`). `random` draws in [0, 1)
    for the power of two choices (see the module docstring for the whole procedure).
    """
    workers = candidates.workers
    if not workers:
        raise NoReadyWorker
    if key is not None:
        worker = _by_affinity(candidates, key, load_factor, exclude)
        if worker is not None:
            return worker
    if len(workers) > _SCAN_UP_TO:
        worker = _sampled(workers, exclude, random)
        if worker is not None:
            return worker
    return _least_utilized(workers, exclude)


def _by_affinity(
    candidates: Candidates, key: bytes, load_factor: float, exclude: Sequence[WorkerState]
) -> WorkerState | None:
    """The first worker clockwise from the key with a free slot and a load within the bound."""
    ring = candidates.ring
    owners = ring.owners
    size = len(owners)
    start = ring.start(key)
    walk = min(_WALK, len(candidates.workers))
    seen: list[WorkerState] = []
    # WorkerState.free_slots and .capacity inlined: this is the request path.
    for step in range(size):
        w = owners[(start + step) % size]
        if w in seen:
            continue
        seen.append(w)
        if w.ready and (not exclude or w not in exclude):
            cap = w.reported_slots or w.max_slots or 1
            busy = cap - min(w.reported_free - w.unreported, cap - w.in_flight) + 1
            if busy <= cap and (
                busy <= cap * _KEEP_BELOW
                or busy <= math.ceil(load_factor * candidates.average_load() * cap)
            ):
                return w
        if len(seen) >= walk:
            break
    return None


def _sampled(
    workers: Sequence[WorkerState], exclude: Sequence[WorkerState], random: Callable[[], float]
) -> WorkerState | None:
    """The less utilized of `_CHOICES` random ready workers with a free slot (None: none found)."""
    size = len(workers)
    best: WorkerState | None = None
    best_load = 0.0
    found = 0
    for _ in range(_DRAWS):
        w = workers[int(random() * size)]
        if w is best or not w.ready or (exclude and w in exclude):
            continue
        cap = w.reported_slots or w.max_slots or 1
        free = min(w.reported_free - w.unreported, cap - w.in_flight)
        if free <= 0:
            continue
        load = (cap - free + w.reported_queued) / cap
        if best is None or load < best_load:
            best, best_load = w, load
        found += 1
        if found == _CHOICES:
            break
    return best


def _least_utilized(
    workers: Sequence[WorkerState], exclude: Sequence[WorkerState]
) -> WorkerState | None:
    """The least utilized ready worker with a free slot: every candidate looked at."""
    best: WorkerState | None = None
    best_load = 0.0
    ready = False
    for w in workers:
        if not w.ready or (exclude and w in exclude):
            continue
        ready = True
        cap = w.reported_slots or w.max_slots or 1
        free = min(w.reported_free - w.unreported, cap - w.in_flight)
        if free <= 0:
            continue
        load = (cap - free + w.reported_queued) / cap
        if best is None or load < best_load:
            best, best_load = w, load
    if not ready:
        raise NoReadyWorker
    return best
