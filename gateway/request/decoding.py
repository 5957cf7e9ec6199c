"""Request decoding that a malformed body cannot turn into UNKNOWN: it becomes INVALID_ARGUMENT.

grpcio calls a method's request deserializer before any interceptor's behaviour runs; if the
deserializer raises, grpcio answers UNKNOWN naming the exception class and logs a traceback
per call, for any caller (health and reflection need no token). Here every registered method's
deserializer is wrapped so that it never raises: a body that is not a valid message (including
invalid UTF-8 in a string field) becomes an `Undecodable` marker, and the method's behaviour
refuses it with INVALID_ARGUMENT, logged once per message type and minute.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError

from gateway.request.errors import InvalidArgument, bad_request
from gateway.request.ratelog import RateLimitedLog

log = logging.getLogger(__name__)
_LOG = RateLimitedLog(log)
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
AddServicer: TypeAlias = Callable[[Any, Any], None]


class Undecodable:
    """Stands for a request body that is not a valid `message_name`."""

    __slots__ = ("message_name",)

    def __init__(self, message_name: str) -> None:
        self.message_name = message_name


def safe_deserializer(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """`deserialize` (a message's `FromString`) returning `Undecodable` instead of raising."""
    message = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
    name = message.full_name if message is not None else "request message"

    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except (DecodeError, ValueError, RecursionError):
            _LOG.log(logging.WARNING, name, "refused a request body that is not a valid %s", name)
            return Undecodable(name)

    return decode


def refusal(request: Undecodable) -> InvalidArgument:
    """The INVALID_ARGUMENT answer to a body that did not decode."""
    message = (
        f"the request body is not a valid {request.message_name} (protobuf encoding or "
        "UTF-8 in a string field): send a message built from the published .proto"
    )
    return InvalidArgument(message, details=[bad_request("body", message)])


def guard(handler: Handler, *, raise_error: bool = False) -> Handler:
    """`handler` with a safe deserializer, its behaviour refusing an `Undecodable` request.

    With `raise_error` the refusal is raised as `InvalidArgument` (for the error interceptor,
    which maps and audits it); otherwise the call is aborted here with INVALID_ARGUMENT.
    """
    if handler.request_deserializer is None:
        return handler

    async def refuse(request: Undecodable, context: Any) -> None:
        error = refusal(request)
        if raise_error:
            raise error
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.message)

    async def checked(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Undecodable):
                await refuse(request, context)
            yield request

    def unary(inner: Callable[..., Any]) -> Callable[..., Any]:
        async def behaviour(request: Any, context: Any) -> Any:
            if isinstance(request, Undecodable):
                await refuse(request, context)
            return await inner(request, context)

        return behaviour

    def unary_stream(inner: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
        async def behaviour(request: Any, context: Any) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await refuse(request, context)
            async for response in inner(request, context):
                yield response

        return behaviour

    def stream_stream(inner: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
        async def behaviour(requests: Any, context: Any) -> AsyncIterator[Any]:
            async for response in inner(checked(requests, context), context):
                yield response

        return behaviour

    def stream_unary(inner: Callable[..., Any]) -> Callable[..., Any]:
        async def behaviour(requests: Any, context: Any) -> Any:
            return await inner(checked(requests, context), context)

        return behaviour

    replaced: dict[str, Any] = {
        "request_deserializer": safe_deserializer(handler.request_deserializer)
    }
    if handler.unary_unary is not None:
        replaced["unary_unary"] = unary(handler.unary_unary)
    elif handler.unary_stream is not None:
        replaced["unary_stream"] = unary_stream(handler.unary_stream)
    elif handler.stream_unary is not None:
        replaced["stream_unary"] = stream_unary(handler.stream_unary)
    elif handler.stream_stream is not None:
        replaced["stream_stream"] = stream_stream(handler.stream_stream)
    # grpc's method handlers are namedtuples: _replace keeps the serializer and flags.
    guarded: Handler = handler._replace(**replaced)  # type: ignore[attr-defined]
    return guarded


class _GuardedGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, raise_error: bool) -> None:
        self._inner = inner
        self._raise_error = raise_error

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        handler = self._inner.service(handler_call_details)
        return None if handler is None else guard(handler, raise_error=self._raise_error)


class _GuardingServer:
    """What a generated `add_XServicer_to_server` calls on a server, guarding each handler."""

    def __init__(self, server: grpc.aio.Server, raise_error: bool) -> None:
        self._server = server
        self._raise_error = raise_error

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_GuardedGeneric(h, self._raise_error) for h in handlers)
        )

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]) -> None:
        self._server.add_registered_method_handlers(
            service, {m: guard(h, raise_error=self._raise_error) for m, h in handlers.items()}
        )


def add_guarded(
    add: AddServicer, servicer: Any, server: grpc.aio.Server, *, raise_error: bool = False
) -> None:
    """Register `servicer` with a generated `add_XServicer_to_server`, every method guarded."""
    add(servicer, _GuardingServer(server, raise_error))
