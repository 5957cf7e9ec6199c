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
        if model in w.models
        and w.ready
        and (allowed_pools is None or w.pool in allowed_pools)
        and (not exclude or w not in exclude)
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


_MASK = (1 << 64) - 1


def rendezvous_score(key: bytes, worker: WorkerState) -> int:
    """Highest-random-weight score: stable per (key, worker), the same in every replica.

    The key is hashed once per request (blake2b); per worker only a splitmix64 finalizer mixes it
    with the worker's precomputed 64-bit id, which keeps a pick over 200 workers cheap.
    """
    return _mix(int.from_bytes(key[:8], "big") ^ worker.hash_int)


def _mix(x: int) -> int:
    x = (x * 0x9E3779B97F4A7C15) & _MASK
    x ^= x >> 29
    x = (x * 0xBF58476D1CE4E5B9) & _MASK
    return x ^ (x >> 32)


def pick(
    candidates: Sequence[WorkerState], key: bytes | None, load_factor: float
) -> WorkerState | None:
    """The worker for the next generation, or None when every candidate is full.

    With a key: the candidate with the highest rendezvous score among those with a free slot whose
    load after this request stays within `load_factor` times the average (consistent hashing with
    bounded loads) or under half its slots, so a session sticks to its worker until that worker is
    saturated or clearly busier than the rest. Without a key, or when no candidate is within the
    bound: the least utilized candidate with a free slot.
    """
    # WorkerState.free_slots and .capacity inlined: this runs for every worker on every request.
    loads = []
    for w in candidates:
        cap = w.reported_slots or w.max_slots or 1
        loads.append((w, min(w.reported_free - w.unreported, cap - w.in_flight), cap))
    free = [entry for entry in loads if entry[1] > 0]
    if not free:
        return None
    if key is not None:
        busy_total = 1 + sum(cap - slots for _, slots, cap in loads)
        share = load_factor * busy_total / sum(cap for _, _, cap in loads)
        key_int = int.from_bytes(key[:8], "big")
        best: WorkerState | None = None
        best_score = -1
        for worker, slots, cap in free:
            busy = cap - slots + 1
            if busy <= math.ceil(share * cap) or busy <= cap * _KEEP_BELOW:
                score = _mix(key_int ^ worker.hash_int)
                if score > best_score:
                    best, best_score = worker, score
        if best is not None:
            return best
    return min(free, key=lambda e: (e[2] - e[1] + e[0].reported_queued) / e[2])[0]
