"""Choosing among eligible workers: rendezvous affinity bounded by load, else least loaded."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence

from llmgateway.worker.v1 import worker_pb2 as pb

from gateway.routing.worker import WorkerState

# Up to this share of its slots a worker keeps the sessions hashed to it whatever the others' load:
# while every worker has room, reusing a KV cache is worth more than an even spread.
_KEEP_BELOW = 0.5


def eligible(
    workers: Iterable[WorkerState],
    model: str,
    allowed_pools: tuple[str, ...] | None,
    exclude: Sequence[WorkerState] = (),
) -> list[WorkerState]:
    """Ready workers serving `model` in a pool cleared for the request, minus `exclude`."""
    return [
        w
        for w in workers
        if w.ready
        and model in w.models
        and (allowed_pools is None or w.pool in allowed_pools)
        and w not in exclude
    ]


def affinity_digest(
    department: str, affinity_key: str, message: pb.GenerateRequest, prefix_chars: int
) -> bytes:
    """The rendezvous key: department plus the affinity key, or plus the prompt's prefix.

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


def rendezvous_score(key: bytes, worker: WorkerState) -> int:
    """Highest-random-weight score: stable per (key, worker), the same in every replica."""
    digest = hashlib.blake2b(worker.hash_id, digest_size=8, key=key).digest()
    return int.from_bytes(digest, "big")


def pick(
    candidates: Sequence[WorkerState], key: bytes | None, load_factor: float
) -> WorkerState | None:
    """The worker for the next generation, or None when every candidate is full.

    With a key: the candidate with the highest rendezvous score among those with a free slot whose
    load after this request stays within `load_factor` times the average (consistent hashing with
    bounded loads), so a session sticks to its worker until that worker is saturated or clearly
    busier than the rest. Without a key, or when no candidate is within the bound: the least
    utilized candidate with a free slot.
    """
    free = [w for w in candidates if w.free_slots() > 0]
    if not free:
        return None
    if key is not None:
        busy_total = 1 + sum(w.capacity - w.free_slots() for w in candidates)
        capacity_total = sum(w.capacity for w in candidates)
        best: WorkerState | None = None
        best_score = -1
        for worker in free:
            busy = worker.capacity - worker.free_slots() + 1
            bound = math.ceil(load_factor * busy_total * worker.capacity / capacity_total)
            if busy <= bound or busy <= worker.capacity * _KEEP_BELOW:
                score = rendezvous_score(key, worker)
                if score > best_score:
                    best, best_score = worker, score
        if best is not None:
            return best
    return min(free, key=WorkerState.utilization)
