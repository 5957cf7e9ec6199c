"""When to retry a refused call and how long to wait: RetryInfo first, else jittered backoff."""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc

from llmgw_client.errors import GatewayError


@dataclass(frozen=True)
class RetryPolicy:
    """Retries for calls the gateway refused with a retryable status.

    A call is retried when its status is in `codes`, attempts remain, and the wait fits before
    the call's deadline. The wait is the refusal's RetryInfo delay when it carries one (a
    RESOURCE_EXHAUSTED without RetryInfo, such as a request over the size limit, is never
    retried), otherwise exponential backoff with full jitter. A wait longer than
    `max_retry_after_s` is not sat out: the refusal is raised. A stream is retried only before its
    first message; after that the refusal is raised, since part of the answer was delivered.
    """

    max_attempts: int = 3
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    max_retry_after_s: float = 30.0
    codes: frozenset[grpc.StatusCode] = frozenset(
        {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
    )

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")

    def delay(self, error: GatewayError, attempt: int, time_left_s: float) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None when not to retry."""
        if attempt >= self.max_attempts or error.code not in self.codes:
            return None
        if error.retry_after is not None:
            wait = error.retry_after
            if wait > self.max_retry_after_s:
                return None
        elif error.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return None
        else:
            ceiling = min(self.max_backoff_s, self.initial_backoff_s * 2 ** (attempt - 1))
            wait = random.uniform(0, ceiling)
        return wait if wait < time_left_s else None


NO_RETRY = RetryPolicy(max_attempts=1)
