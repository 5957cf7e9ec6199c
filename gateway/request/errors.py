"""The gateway's error hierarchy: each class carries its gRPC status code and a public message.

Handlers and services raise these; `gateway.request.stack` (gRPC) and the HTTP door are the
places that turn them into a status with `google.rpc` details (unary and streaming alike).
Anything else becomes INTERNAL "internal error (request id ...)" and its traceback goes to the
log, never to the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from audit.record import Outcome

ERROR_DOMAIN = "llmgateway"


class GatewayError(Exception):
    """An error with a status code and a message that is safe to show to the caller.

    `message` must say what was wrong and what the caller can do; it must never contain prompt
    text, tokens or secrets. `details` are google.rpc detail messages attached to the status.
    """

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    # How a request refused with this error ends in the audit record.
    outcome: ClassVar[Outcome] = Outcome.ERROR

    def __init__(self, message: str, *, details: Sequence[Message] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details: tuple[Message, ...] = tuple(details)


class InvalidArgument(GatewayError):
    """The request itself is wrong; retrying it unchanged will fail again."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    outcome = Outcome.DENIED


class NotFound(GatewayError):
    """A named thing (a model) does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    outcome = Outcome.DENIED


class Unauthenticated(GatewayError):
    """The caller could not be identified: missing, malformed, expired or unverifiable token."""

    code = grpc.StatusCode.UNAUTHENTICATED
    outcome = Outcome.DENIED


class PermissionDenied(GatewayError):
    """An identified caller may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED
    outcome = Outcome.DENIED


class ResourceExhausted(GatewayError):
    """A limit, budget or queue is full; details say which and how long to wait."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    outcome = Outcome.SHED


class LimitExceeded(ResourceExhausted):
    """A rate limit, concurrency limit or token budget refused the request (not load shedding)."""

    outcome = Outcome.DENIED


class FailedPrecondition(GatewayError):
    """The system is not in a state to run this request (e.g. audit spool full)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    outcome = Outcome.DENIED


class Unavailable(GatewayError):
    """No worker or backing store can serve the request now; retrying later may succeed."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(GatewayError):
    """The caller's deadline passed before the answer was complete."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    outcome = Outcome.DEADLINE


class Cancelled(GatewayError):
    """The request was cancelled."""

    code = grpc.StatusCode.CANCELLED
    outcome = Outcome.CANCELLED


def error_info(
    reason: str, metadata: Mapping[str, str] | None = None
) -> error_details_pb2.ErrorInfo:
    """A google.rpc.ErrorInfo naming the machine-readable reason (e.g. a policy rule id)."""
    return error_details_pb2.ErrorInfo(
        reason=reason, domain=ERROR_DOMAIN, metadata=dict(metadata or {})
    )


def retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    """A google.rpc.RetryInfo telling the caller how long to wait before retrying."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(max(0, int(seconds * 1e9)))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def quota_failure(subject: str, description: str) -> error_details_pb2.QuotaFailure:
    """A google.rpc.QuotaFailure naming the limit that refused the request."""
    return error_details_pb2.QuotaFailure(
        violations=[
            error_details_pb2.QuotaFailure.Violation(subject=subject, description=description)
        ]
    )


def bad_request(field: str, description: str) -> error_details_pb2.BadRequest:
    """A google.rpc.BadRequest naming the offending request field."""
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
        ]
    )


def spool_full() -> Unavailable:
    """The refusal of a request that must be audited while the audit spool has no room."""
    return Unavailable(
        "the audit spool is full and this department may not be served unaudited; retry later",
        details=[retry_info(5.0), error_info("audit.spool_full")],
    )
