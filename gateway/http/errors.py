"""Gateway refusals as OpenAI-style HTTP errors: status, `{"error": {...}}` body, headers.

The same `GatewayError` that the gRPC door turns into a status with `google.rpc` details becomes
here an HTTP status and OpenAI's error body: `code` carries the machine-readable reason (the
ErrorInfo reason, e.g. a policy rule id), `param` the request field a BadRequest names, and a
RetryInfo becomes `Retry-After` (whole seconds, rounded up).
"""

from __future__ import annotations

import math
from typing import Any

import grpc
from google.rpc import error_details_pb2

from gateway.request.errors import GatewayError

# gRPC status -> (HTTP status, OpenAI error type).
_HTTP: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    # 499: the convention (nginx) for a client that closed the request; it is gone anyway.
    grpc.StatusCode.CANCELLED: (499, "cancelled"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout"),
}
INTERNAL = (500, "server_error")


def http_status(err: GatewayError) -> int:
    """The HTTP status of a refusal."""
    return _HTTP.get(err.code, INTERNAL)[0]


def error_body(err: GatewayError) -> dict[str, Any]:
    """OpenAI's error object for `err`: message, type, param, code."""
    code: str | None = None
    param: str | None = None
    for detail in err.details:
        if isinstance(detail, error_details_pb2.ErrorInfo) and code is None:
            code = detail.reason
        elif isinstance(detail, error_details_pb2.BadRequest) and param is None:
            violations = detail.field_violations
            param = violations[0].field if violations else None
    kind = _HTTP.get(err.code, INTERNAL)[1]
    return {"error": {"message": err.message, "type": kind, "param": param, "code": code}}


def error_headers(err: GatewayError) -> dict[str, str]:
    """`Retry-After` when the refusal says how long to wait."""
    for detail in err.details:
        if isinstance(detail, error_details_pb2.RetryInfo):
            seconds = detail.retry_delay.ToNanoseconds() / 1e9
            return {"Retry-After": str(max(1, math.ceil(seconds)))}
    return {}


def internal_body(request_id: str) -> dict[str, Any]:
    """The body of an unexpected failure: the request id, never the exception's text."""
    return {
        "error": {
            "message": f"internal error (request id {request_id}); report the id to the operators",
            "type": INTERNAL[1],
            "param": None,
            "code": None,
        }
    }
