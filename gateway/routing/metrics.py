"""Prometheus metrics of routing: retries, ejections, the priority queue and shedding."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
)
