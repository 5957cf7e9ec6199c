"""Prometheus metrics of the limiters (decisions, denials, shadow hits, degraded state)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

from gateway.limits.base import AdmissionDecision, Backend

DECISIONS = Counter(
    "llmgw_limiter_decisions_total",
    "Admission decisions by the store that made them and their outcome.",
    ["backend", "outcome"],
)
DENIALS = Counter(
    "llmgw_limiter_denials_total",
    "Admissions refused by an enforced limit, by department and limit (scope.limit).",
    ["department", "limit"],
)
SHADOW_VIOLATIONS = Counter(
    "llmgw_limiter_shadow_violations_total",
    "Admissions that exceeded a shadow limit (counted, not refused), by department and limit.",
    ["department", "limit"],
)
COMPLETIONS = Counter(
    "llmgw_limiter_completions_total",
    "Reconciliations of reservations by result (reconciled, already_done, expired, failed).",
    ["result"],
)
STORE_ERRORS = Counter(
    "llmgw_limiter_store_errors_total",
    "Redis calls of the limiter that failed or ran past the decision time bound, by operation.",
    ["operation"],
)
DEGRADED = Gauge(
    "llmgw_limiter_degraded",
    "1 while this replica cannot reach the shared limiter store (Redis), else 0.",
    multiprocess_mode="max",
)
STORE_SECONDS = Histogram(
    "llmgw_limiter_store_seconds",
    "Round trips to the limiter store (Redis) that got an answer, by operation.",
    ["operation"],
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
)
DECISION_SECONDS = Histogram(
    "llmgw_limiter_decision_seconds",
    "Time to decide one admission, by backend.",
    ["backend"],
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
)


@contextmanager
def store_call(operation: str) -> Iterator[None]:
    """Time one store round trip; a call that raises is counted in STORE_ERRORS instead."""
    started = time.perf_counter()
    yield
    STORE_SECONDS.labels(operation=operation).observe(time.perf_counter() - started)


def record_decision(decision: AdmissionDecision, department: str, backend: Backend) -> None:
    """Count one decision and what it refused or would have refused."""
    if decision.allowed:
        outcome = "allowed"
    elif decision.unavailable:
        outcome = "unavailable"
    else:
        outcome = "denied"
    DECISIONS.labels(backend=backend.value, outcome=outcome).inc()
    if decision.violated is not None and not decision.unavailable:
        DENIALS.labels(department=department, limit=decision.violated).inc()
    for name in decision.shadow_violations:
        SHADOW_VIOLATIONS.labels(department=department, limit=name).inc()
