"""The gateway's error hierarchy: each class carries its gRPC status code and a public message.

Handlers and services raise these; `gateway.request.interceptors.ErrorInterceptor` is the one
place that turns them into a gRPC status with `google.rpc` details (unary and streaming alike).
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

ERROR_DOMAIN = "llmgateway"


class GatewayError(Exception):
    """An error with a status code and a message that is safe to show to the caller.

    `message` must say what was wrong and what the caller can do; it must never contain prompt
    text, tokens or secrets. `details` are google.rpc detail messages attached to the status.
    """

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, details: Sequence[Message] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details: tuple[Message, ...] = tuple(details)


class InvalidArgument(GatewayError):
    """The request itself is wrong; retrying it unchanged will fail again."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(GatewayError):
    """A named thing (a model) does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class Unauthenticated(GatewayError):
    """The caller could not be identified: missing, malformed, expired or unverifiable token."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(GatewayError):
    """An identified caller may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(GatewayError):
    """A limit, budget or queue is full; details say which and how long to wait."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(GatewayError):
    """The system is not in a state to run this request (e.g. audit spool full)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(GatewayError):
    """No worker or backing store can serve the request now; retrying later may succeed."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(GatewayError):
    """The caller's deadline passed before the answer was complete."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(GatewayError):
    """The request was cancelled."""

    code = grpc.StatusCode.CANCELLED


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
