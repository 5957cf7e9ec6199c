"""Typed exceptions for the gateway's refusals, built from the google.rpc details they carry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """A request field that was refused (google.rpc.BadRequest.FieldViolation)."""

    field: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """A limit that refused the request (google.rpc.QuotaFailure.Violation)."""

    subject: str
    description: str


class GatewayError(Exception):
    """A call the gateway (or the transport) refused or failed, with its status and details.

    `reason` is ErrorInfo's reason: the policy rule id or the limit that decided (for example
    `models.not_allowed`, `limits.requests_per_minute`); `retry_after` is RetryInfo's delay in
    seconds. Both are None when the refusal did not carry them.
    """

    def __init__(
        self, code: grpc.StatusCode, message: str, details: tuple[Message, ...] = ()
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.details = details
        self.reason: str | None = None
        self.error_metadata: dict[str, str] = {}
        self.retry_after: float | None = None
        self.field_violations: tuple[FieldViolation, ...] = ()
        self.quota_violations: tuple[QuotaViolation, ...] = ()
        for detail in details:
            if isinstance(detail, error_details_pb2.ErrorInfo):
                self.reason = detail.reason
                self.error_metadata = dict(detail.metadata)
            elif isinstance(detail, error_details_pb2.RetryInfo):
                self.retry_after = detail.retry_delay.ToTimedelta().total_seconds()
            elif isinstance(detail, error_details_pb2.BadRequest):
                self.field_violations += tuple(
                    FieldViolation(v.field, v.description) for v in detail.field_violations
                )
            elif isinstance(detail, error_details_pb2.QuotaFailure):
                self.quota_violations += tuple(
                    QuotaViolation(v.subject, v.description) for v in detail.violations
                )


class Unauthenticated(GatewayError):
    """The token is missing, malformed, expired or not signed by a trusted key."""


class PolicyDenied(GatewayError):
    """The department's policy refuses the request; `rule_id` names the rule."""

    @property
    def rule_id(self) -> str | None:
        return self.reason


class InvalidArgument(GatewayError):
    """The request is malformed (`field_violations`) or lacks what policy requires (`rule_id`)."""

    @property
    def rule_id(self) -> str | None:
        return self.reason


class ResourceExhausted(GatewayError):
    """The request is too large, or the gateway is out of capacity for it now."""


class RateLimited(ResourceExhausted):
    """A rate limit or token budget ran out: `quota` names it; retry after `retry_after` s."""

    @property
    def quota(self) -> str | None:
        return self.quota_violations[0].description if self.quota_violations else None


class Overloaded(ResourceExhausted):
    """Every worker is busy and the queue is full; retry after `retry_after` seconds."""


class Unavailable(GatewayError):
    """No healthy worker, limiter store or audit spool now; `retry_after` hints when to retry."""


class DeadlineExceeded(GatewayError):
    """The call's deadline passed before the answer was complete."""


class Cancelled(GatewayError):
    """The call was cancelled."""


class NotFound(GatewayError):
    """The named thing does not exist."""


class InternalError(GatewayError):
    """The gateway failed unexpectedly; the message carries a request id for the operators."""


_BY_CODE: dict[grpc.StatusCode, type[GatewayError]] = {
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PolicyDenied,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INTERNAL: InternalError,
}

_DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.RetryInfo,
    error_details_pb2.QuotaFailure,
    error_details_pb2.BadRequest,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.ResourceInfo,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
    error_details_pb2.DebugInfo,
)


def _unpack(status: status_pb2.Status) -> tuple[Message, ...]:
    unpacked: list[Message] = []
    for packed in status.details:
        for kind in _DETAIL_TYPES:
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                unpacked.append(message)
    return tuple(unpacked)


def error_from_rpc(error: Any) -> GatewayError:
    """The typed exception for a failed call (a grpc.RpcError or grpc.aio.AioRpcError)."""
    code: grpc.StatusCode = error.code()
    message: str = error.details() or ""
    details: tuple[Message, ...] = ()
    for key, value in error.trailing_metadata() or ():
        if key == DETAILS_KEY and isinstance(value, bytes):
            details = _unpack(status_pb2.Status.FromString(value))
    kind = _BY_CODE.get(code, GatewayError)
    if kind is ResourceExhausted:
        if any(isinstance(d, error_details_pb2.QuotaFailure) for d in details):
            kind = RateLimited
        elif any(isinstance(d, error_details_pb2.RetryInfo) for d in details):
            kind = Overloaded
    return kind(code, message, details)
