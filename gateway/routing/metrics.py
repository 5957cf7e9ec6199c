"""Prometheus metrics of routing: retries, ejections, the priority queue and shedding."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from prometheus_client import Counter, Gauge, Histogram

from gateway.routing.worker import WorkerState

RETRIES = Counter(
    "llmgw_routing_retries_total",
    "Generations retried on another worker before their first token, by the failure retried.",
    ["reason"],
)
EJECTIONS = Counter(
    "llmgw_routing_ejections_total",
    "Workers ejected after consecutive failed generations.",
)
READMISSIONS = Counter(
    "llmgw_routing_readmissions_total",
    "Ejected workers readmitted after a successful probe.",
)
QUEUE_DEPTH = Gauge(
    "llmgw_routing_queue_depth",
    "Generations waiting in this gateway for a free worker slot.",
    multiprocess_mode="livesum",
)
QUEUE_WAIT = Histogram(
    "llmgw_routing_queue_wait_seconds",
    "Time generations waited for a free worker slot (dispatched ones only).",
    buckets=(0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SHED = Counter(
    "llmgw_routing_shed_total",
    "Generations refused with RESOURCE_EXHAUSTED by the scheduler, by reason.",
    ["reason"],
)
DIGEST_MISMATCH = Gauge(
    "llmgw_routing_digest_mismatch",
    "1 while a worker gets no traffic for a model because its weights digest differs from the "
    "model register's.",
    ["model", "worker"],
)
WORKERS = Gauge(
    "llmgw_routing_workers",
    "Workers known to this gateway, by state (ready, not_ready, ejected, draining).",
    ["state"],
    multiprocess_mode="max",
)
WORKER_IN_FLIGHT = Gauge(
    "llmgw_routing_worker_in_flight",
    "Generations this gateway has running on each worker (its in-flight streams and calls).",
    ["worker"],
    multiprocess_mode="livesum",
)
WORKER_UTILIZATION = Gauge(
    "llmgw_routing_worker_utilization",
    "Busy and queued work over batch slots, as last reported by each worker (1 = full).",
    ["worker"],
    multiprocess_mode="max",
)
WORKER_KV_CACHE = Gauge(
    "llmgw_routing_worker_kv_cache_utilization",
    "Share of each worker's KV cache in use, as last reported by the worker.",
    ["worker"],
    multiprocess_mode="max",
)
MODEL_READY_WORKERS = Gauge(
    "llmgw_routing_model_ready_workers",
    "Ready workers serving each model (0: requests for it fail with UNAVAILABLE).",
    ["model"],
    multiprocess_mode="max",
)
EXPORT_INTERVAL_S = 1.0
# Models once served stay at 0 when their last worker goes, so "no ready worker" can alert.
_seen_models: set[str] = set()


def export_workers(workers: Sequence[WorkerState], catalog: Iterable[str] = ()) -> None:
    """Set the per-worker and per-state gauges from the workers known now.

    Series of workers that left are removed (`clear`), so the label sets stay those of the
    current fleet. Models in `catalog`, or served before, show 0 when no ready worker serves them.
    """
    states = {"ready": 0, "not_ready": 0, "ejected": 0, "draining": 0}
    _seen_models.update(catalog)
    ready_by_model: dict[str, int] = dict.fromkeys(_seen_models, 0)
    for gauge in (WORKER_IN_FLIGHT, WORKER_UTILIZATION, WORKER_KV_CACHE):
        _forget_series(gauge)
    for worker in workers:
        if worker.retired:
            continue
        if worker.ejected:
            state = "ejected"
        elif worker.draining:
            state = "draining"
        elif worker.ready:
            state = "ready"
        else:
            state = "not_ready"
        states[state] += 1
        for model in worker.models:
            ready_by_model[model] = ready_by_model.get(model, 0) + (state == "ready")
        name = worker.name
        WORKER_IN_FLIGHT.labels(worker=name).set(worker.in_flight)
        WORKER_UTILIZATION.labels(worker=name).set(worker.utilization())
        WORKER_KV_CACHE.labels(worker=name).set(worker.load.kv_cache_utilization)
    for state, count in states.items():
        WORKERS.labels(state=state).set(count)
    _seen_models.update(ready_by_model)
    for model, count in ready_by_model.items():
        MODEL_READY_WORKERS.labels(model=model).set(count)


def _forget_series(gauge: Gauge) -> None:
    """Drop every series of `gauge`; in multi-process mode, where prometheus_client cannot remove
    series from the shared files, set them to 0 instead (the next export sets the live ones)."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        gauge.clear()
        return
    for sample in next(iter(gauge.collect())).samples:
        gauge.labels(**sample.labels).set(0)
