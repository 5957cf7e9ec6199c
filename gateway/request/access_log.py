"""The access log: one structured line per finished request, rate-limited under floods.

A line names the request (request id, trace id), who and what (department, model), how it ended
(outcome, gRPC status), tokens and durations. It never carries prompt or answer text, a subject
or a bearer token: `RequestSummary` holds none of them. A token bucket bounds the lines per
second, so that a flood of refused calls cannot flood the log store; lines left out are counted
in `llmgw_access_log_suppressed_total` and reported on the next line that passes.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import Counter

from gateway.request import metrics
from gateway.request.metrics import RequestSummary

LOGGER_NAME = "llmgateway.access"
log = logging.getLogger(LOGGER_NAME)

SUPPRESSED = Counter(
    "llmgw_access_log_suppressed",
    "Access log lines left out because more requests ended than the rate limit lets through.",
)


class TokenBucket:
    """`rate` events per second on average, up to `burst` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = time.monotonic()

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class AccessLog:
    """Writes access lines to the `llmgateway.access` logger, at most `rate_per_s` on average."""

    def __init__(self, *, enabled: bool = True, rate_per_s: float = 200.0) -> None:
        self.enabled = enabled
        self._bucket = TokenBucket(rate_per_s, burst=max(rate_per_s, 1.0))
        self._suppressed = 0

    def write(self, s: RequestSummary) -> bool:
        """Log one request; False when the rate limit left it out (it is counted)."""
        if not self.enabled or not log.isEnabledFor(logging.INFO):
            return False
        if not self._bucket.take():
            self._suppressed += 1
            SUPPRESSED.inc()
            return False
        fields: dict[str, object] = {
            "request_id": s.request_id,
            "trace_id": s.trace_id,
            "department": s.department,
            "model": s.model,
            "interface": s.interface,
            "outcome": s.outcome,
            "grpc_status": s.grpc_status,
            "input_tokens": s.input_tokens,
            "output_tokens": s.output_tokens,
            "duration_ms": round(s.total_s * 1000, 3),
            "queue_ms": round(s.queue_s * 1000, 3),
            "ttft_ms": None if s.ttft_s is None else round(s.ttft_s * 1000, 3),
            "worker": s.worker,
        }
        if self._suppressed:
            fields["suppressed_before"] = self._suppressed
            self._suppressed = 0
        # The message repeats the fields for text-format logs; JSON logs get them as keys too.
        log.info(
            "%s %s %s %s/%s %s in=%d out=%d %.1fms",
            s.request_id,
            s.department,
            s.model,
            s.interface,
            s.outcome,
            s.grpc_status,
            s.input_tokens,
            s.output_tokens,
            s.total_s * 1000,
            extra=fields,
        )
        return True


ACCESS_LOG = AccessLog()


def configure(*, enabled: bool, rate_per_s: float) -> None:
    """Set the process's access log from `logging.access_log` and `logging.access_log_rate`."""
    global ACCESS_LOG
    ACCESS_LOG = AccessLog(enabled=enabled, rate_per_s=rate_per_s)


def write(summary: RequestSummary) -> bool:
    return ACCESS_LOG.write(summary)


def record(summary: RequestSummary) -> None:
    """Everything a finished request leaves behind besides its audit record: metrics, a line."""
    metrics.observe(summary)
    ACCESS_LOG.write(summary)
