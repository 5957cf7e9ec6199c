"""The server interceptor stack, built in exactly one place, and the one error-to-status mapping.

Order (outermost first): errors (request id, GatewayError -> status, anything else -> INTERNAL),
then authentication (sets the verified principal). Health and reflection pass through untouched.
"""

from __future__ import annotations

import contextvars
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2

from gateway.errors import GatewayError

log = logging.getLogger(__name__)

PUBLIC_SERVICE_PREFIX = "/llmgateway.v1."
CURRENT_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar(
    "llmgateway_request_id", default=""
)
_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
_Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[_Handler | None]]"


def new_request_id() -> str:
    """A time-ordered, unique request id: 12 hex digits of milliseconds, 16 random."""
    return f"{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


def status_trailer(err: GatewayError) -> tuple[tuple[str, bytes], ...]:
    """The `grpc-status-details-bin` trailer carrying `err`'s google.rpc details."""
    details = []
    for message in err.details:
        packed = any_pb2.Any()
        packed.Pack(message)
        details.append(packed)
    status = status_pb2.Status(code=err.code.value[0], message=err.message, details=details)
    return (("grpc-status-details-bin", status.SerializeToString()),)


async def abort(context: grpc.aio.ServicerContext[Any, Any], err: GatewayError) -> None:
    """End the call with `err`'s status, message and details."""
    await context.abort(err.code, err.message, trailing_metadata=status_trailer(err))


async def _abort_internal(context: grpc.aio.ServicerContext[Any, Any], request_id: str) -> None:
    log.exception("internal error in request %s", request_id)
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal error (request id {request_id}); report the id to the operators",
    )


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Assigns the request id and maps every exception to a status, unary and streaming alike."""

    async def intercept_service(
        self, continuation: _Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> _Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(PUBLIC_SERVICE_PREFIX):
            return handler
        if handler.unary_unary is not None:
            return _replace(handler, unary_unary=_wrap_unary(handler.unary_unary))
        if handler.unary_stream is not None:
            return _replace(handler, unary_stream=_wrap_stream(handler.unary_stream))  # type: ignore[arg-type]
        return handler


def _replace(handler: _Handler, **behaviour: Any) -> _Handler:
    # grpc's method handlers are namedtuples; _replace keeps (de)serializers and flags.
    replaced: _Handler = handler._replace(**behaviour)  # type: ignore[attr-defined]
    return replaced


def _wrap_unary(behaviour: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        request_id = new_request_id()
        CURRENT_REQUEST_ID.set(request_id)
        try:
            return await behaviour(request, context)
        except GatewayError as err:
            await abort(context, err)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception:
            await _abort_internal(context, request_id)

    return unary


def _wrap_stream(behaviour: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def stream(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        request_id = new_request_id()
        CURRENT_REQUEST_ID.set(request_id)
        try:
            async for response in behaviour(request, context):
                yield response
        except GatewayError as err:
            await abort(context, err)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception:
            await _abort_internal(context, request_id)

    return stream


def build_interceptors(
    *, authentication: grpc.aio.ServerInterceptor | None = None
) -> Sequence[grpc.aio.ServerInterceptor]:
    """The whole server interceptor stack, outermost first."""
    stack: list[grpc.aio.ServerInterceptor] = [ErrorInterceptor()]
    if authentication is not None:
        stack.append(authentication)
    return stack
