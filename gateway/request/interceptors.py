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

from gateway.request.errors import GatewayError

log = logging.getLogger(__name__)

PUBLIC_SERVICE_PREFIX = "/llmgateway.v1."
CURRENT_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar(
    "llmgateway_request_id", default=""
)
# Set by the pipeline once a request's audit record is written, so that a refusal raised
# afterwards is not audited twice.
AUDITED: contextvars.ContextVar[bool] = contextvars.ContextVar("llmgateway_audited", default=False)
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


RefusalRecorder = Callable[[str, GatewayError], Awaitable[None]]


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Assigns the request id and maps every exception to a status, unary and streaming alike.

    `on_refused` is called for errors raised before the request reached the pipeline (an
    authentication failure), so that those refusals are audited too.
    """

    def __init__(self, on_refused: RefusalRecorder | None = None) -> None:
        self._on_refused = on_refused

    async def intercept_service(
        self, continuation: _Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> _Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(PUBLIC_SERVICE_PREFIX):
            return handler
        if handler.unary_unary is not None:
            wrapped = _wrap_unary(handler.unary_unary, self._on_refused)
            return _replace(handler, unary_unary=wrapped)
        if handler.unary_stream is not None:
            stream = _wrap_stream(handler.unary_stream, self._on_refused)  # type: ignore[arg-type]
            return _replace(handler, unary_stream=stream)
        return handler


def _replace(handler: _Handler, **behaviour: Any) -> _Handler:
    # grpc's method handlers are namedtuples; _replace keeps (de)serializers and flags.
    replaced: _Handler = handler._replace(**behaviour)  # type: ignore[attr-defined]
    return replaced


async def _refused(on_refused: RefusalRecorder | None, request_id: str, err: GatewayError) -> None:
    if on_refused is not None and not AUDITED.get():
        try:
            await on_refused(request_id, err)
        except Exception:
            log.exception("could not audit refused request %s", request_id)


def _wrap_unary(
    behaviour: Callable[..., Awaitable[Any]], on_refused: RefusalRecorder | None
) -> Callable[..., Awaitable[Any]]:
    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        request_id = new_request_id()
        CURRENT_REQUEST_ID.set(request_id)
        try:
            return await behaviour(request, context)
        except GatewayError as err:
            await _refused(on_refused, request_id, err)
            await abort(context, err)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception:
            await _abort_internal(context, request_id)

    return unary


def _wrap_stream(
    behaviour: Callable[..., AsyncIterator[Any]], on_refused: RefusalRecorder | None
) -> Callable[..., AsyncIterator[Any]]:
    async def stream(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        request_id = new_request_id()
        CURRENT_REQUEST_ID.set(request_id)
        try:
            async for response in behaviour(request, context):
                yield response
        except GatewayError as err:
            await _refused(on_refused, request_id, err)
            await abort(context, err)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception:
            await _abort_internal(context, request_id)

    return stream


def build_interceptors(
    *, authentication: grpc.aio.ServerInterceptor, on_refused: RefusalRecorder | None = None
) -> Sequence[grpc.aio.ServerInterceptor]:
    """The whole server interceptor stack, outermost first."""
    return [ErrorInterceptor(on_refused), authentication]
