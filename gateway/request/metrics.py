"""Request metrics under the OpenTelemetry GenAI conventions, in Prometheus naming.

`observe(summary)` records one finished request. Labels are bounded: department and model come
from policy (a name the policy does not know is recorded as `unknown`), outcome and gRPC status
from small fixed sets; never a subject or a request id. Trace ids travel as exemplars on the
duration and time-to-first-token histograms, which Prometheus sees when it scrapes OpenMetrics
from a single-process gateway (prometheus_client keeps no exemplars in multiprocess mode).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Container
from dataclasses import dataclass
from importlib import metadata

from prometheus_client import Counter, Gauge, Histogram

from gateway.request.domain import GenerationResult

UNKNOWN = "unknown"
# Milliseconds to minutes: a cached refusal takes a millisecond, a long answer several minutes.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640,
)  # fmt: skip
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80,
)  # fmt: skip
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
# The bucket boundaries the GenAI conventions advise for gen_ai.client.token.usage.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)

REQUESTS = Counter(
    "llmgw_requests",
    "Requests by department, model, outcome and gRPC status (one per request, at its end).",
    ["department", "model", "outcome", "grpc_status", "interface"],
)
TOKENS = Counter(
    "llmgw_tokens",
    "Tokens of finished requests: input (prompt) and output (completion).",
    ["department", "model", "gen_ai_token_type"],
)
DURATION = Histogram(
    "gen_ai_server_request_duration_seconds",
    "gen_ai.server.request.duration: time from arrival to the last byte of the answer.",
    ["gen_ai_operation_name", "gen_ai_request_model", "department", "error_type"],
    buckets=LATENCY_BUCKETS,
)
TTFT = Histogram(
    "gen_ai_server_time_to_first_token_seconds",
    "gen_ai.server.time_to_first_token: time from arrival to the first output token.",
    ["gen_ai_operation_name", "gen_ai_request_model", "department"],
    buckets=TTFT_BUCKETS,
)
TPOT = Histogram(
    "gen_ai_server_time_per_output_token_seconds",
    "gen_ai.server.time_per_output_token: decode time per output token after the first.",
    ["gen_ai_operation_name", "gen_ai_request_model"],
    buckets=TPOT_BUCKETS,
)
TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage",
    "gen_ai.client.token.usage: tokens per request by type (input, output).",
    ["gen_ai_operation_name", "gen_ai_request_model", "gen_ai_token_type"],
    buckets=TOKEN_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "llmgw_request_queue_wait_seconds",
    "Time requests waited in this gateway for a worker slot, by department.",
    ["department"],
    buckets=TTFT_BUCKETS,
)

BUILD_INFO = Gauge(
    "llmgw_build_info",
    "Always 1; the labels say which gateway build and Python run this process.",
    ["version", "python"],
    multiprocess_mode="max",
)
try:
    _VERSION = metadata.version("llm-gateway")
except metadata.PackageNotFoundError:  # running from a source tree without installing
    _VERSION = "unknown"
BUILD_INFO.labels(version=_VERSION, python=platform.python_version()).set(1)

OPERATION = "chat"
_ENABLED = os.environ.get("LLMGW_REQUEST_METRICS", "1") != "0"


@dataclass(frozen=True, slots=True)
class RequestSummary:
    """What metrics and the access log need of one finished request (no text, no subject)."""

    request_id: str
    trace_id: str
    department: str
    model: str
    outcome: str
    grpc_status: str
    interface: str
    streaming: bool
    total_s: float
    queue_s: float
    ttft_s: float | None
    tpot_s: float | None
    input_tokens: int
    output_tokens: int
    worker: str = ""


def metrics_outcome(audit_outcome: str, grpc_status: str) -> str:
    """A finer outcome than the audit record's, so refusals by policy and by limits differ."""
    if audit_outcome != "denied":
        return audit_outcome
    return {
        "RESOURCE_EXHAUSTED": "rate_limited",
        "UNAUTHENTICATED": "unauthenticated",
        "PERMISSION_DENIED": "denied",
    }.get(grpc_status, "invalid")


def summarize(
    result: GenerationResult,
    *,
    department: str,
    audit_outcome: str,
    grpc_status: str,
    streaming: bool,
    trace_id: str,
    known_models: Container[str],
    known_departments: Container[str],
) -> RequestSummary:
    """The summary of a finished exchange; names policy does not know become `unknown`."""
    ttft_s = result.time_to_first_token_ms / 1000 if result.time_to_first_token_ms else None
    tpot_s = None
    if ttft_s is not None and result.completion_tokens > 1:
        tpot_s = max(result.total_ms / 1000 - ttft_s, 0.0) / (result.completion_tokens - 1)
    return RequestSummary(
        request_id=result.request_id,
        trace_id=trace_id,
        department=department if department in known_departments else UNKNOWN,
        model=result.model if result.model in known_models else UNKNOWN,
        outcome=metrics_outcome(audit_outcome, grpc_status),
        grpc_status=grpc_status,
        interface="GenerateStream" if streaming else "Generate",
        streaming=streaming,
        total_s=result.total_ms / 1000,
        queue_s=result.queue_ms / 1000,
        ttft_s=ttft_s,
        tpot_s=tpot_s,
        input_tokens=result.prompt_tokens,
        output_tokens=result.completion_tokens,
        worker=result.worker,
    )


def observe(summary: RequestSummary) -> None:
    """Record one finished request (a no-op when LLMGW_REQUEST_METRICS=0, for the benchmark)."""
    if not _ENABLED:
        return
    s = summary
    REQUESTS.labels(s.department, s.model, s.outcome, s.grpc_status, s.interface).inc()
    exemplar = {"trace_id": s.trace_id} if s.trace_id else None
    error_type = "" if s.grpc_status == "OK" else s.grpc_status
    DURATION.labels(OPERATION, s.model, s.department, error_type).observe(s.total_s, exemplar)
    if s.ttft_s is not None:
        TTFT.labels(OPERATION, s.model, s.department).observe(s.ttft_s, exemplar)
    if s.tpot_s is not None:
        TPOT.labels(OPERATION, s.model).observe(s.tpot_s)
    if s.input_tokens or s.output_tokens:
        TOKENS.labels(s.department, s.model, "input").inc(s.input_tokens)
        TOKENS.labels(s.department, s.model, "output").inc(s.output_tokens)
        TOKEN_USAGE.labels(OPERATION, s.model, "input").observe(s.input_tokens)
        TOKEN_USAGE.labels(OPERATION, s.model, "output").observe(s.output_tokens)
    if s.worker:  # dispatched to a worker: it waited (or not) for a slot
        QUEUE_WAIT.labels(s.department).observe(s.queue_s)


def set_enabled(enabled: bool) -> None:
    """Turn recording on or off in this process (the overhead benchmark compares both)."""
    global _ENABLED
    _ENABLED = enabled
