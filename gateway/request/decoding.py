"""Request decoding that a malformed body cannot turn into UNKNOWN: it becomes INVALID_ARGUMENT.

grpcio calls a method's request deserializer before any interceptor's behaviour runs; if the
deserializer raises, grpcio answers UNKNOWN naming the exception class and logs a traceback
per call. Here the deserializer never raises: a body that is not a valid message (including
invalid UTF-8 in a string field) becomes an `Undecodable` marker, and the method's behaviour
refuses it with INVALID_ARGUMENT, after authentication like any other invalid request.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError, Message
from llmgateway.v1 import gateway_pb2 as pb

from gateway.request.errors import InvalidArgument, bad_request
from gateway.request.ratelog import RateLimitedLog

log = logging.getLogger(__name__)
_LOG = RateLimitedLog(log)
SERVICE = "llmgateway.v1.InferenceService"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class Undecodable:
    """Stands for a request body that is not a valid `message_name`."""

    __slots__ = ("message_name",)

    def __init__(self, message_name: str) -> None:
        self.message_name = message_name


def deserializer(message: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    """`message.FromString` that returns `Undecodable` instead of raising."""
    name = message.DESCRIPTOR.full_name

    def decode(data: bytes) -> Message | Undecodable:
        try:
            return message.FromString(data)
        except (DecodeError, ValueError, RecursionError):
            _LOG.log(logging.WARNING, name, "refused a request body that is not a valid %s", name)
            return Undecodable(name)

    return decode


def refuse(request: object) -> None:
    """Raise INVALID_ARGUMENT for an undecodable request; nothing for a decoded one."""
    if isinstance(request, Undecodable):
        message = (
            f"the request body is not a valid {request.message_name} (protobuf encoding or "
            "UTF-8 in a string field): send a message built from the published .proto"
        )
        raise InvalidArgument(message, details=[bad_request("body", message)])


def _checked_unary(behaviour: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    async def unary(request: Any, context: Any) -> Any:
        refuse(request)
        return await behaviour(request, context)

    return unary


def _checked_stream(
    behaviour: Callable[[Any, Any], Any],
) -> Callable[[Any, Any], AsyncIterator[Any]]:
    async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
        refuse(request)
        result = behaviour(request, context)
        if inspect.isasyncgen(result):
            async for response in result:
                yield response
        else:
            await result

    return stream


def inference_method_handlers(servicer: Any) -> dict[str, Handler]:
    """The InferenceService's method handlers, decoding with `deserializer` and `refuse`."""
    return {
        "Generate": grpc.unary_unary_rpc_method_handler(
            _checked_unary(servicer.Generate),
            request_deserializer=deserializer(pb.GenerateRequest),
            response_serializer=pb.GenerateResponse.SerializeToString,
        ),
        "GenerateStream": grpc.unary_stream_rpc_method_handler(
            _checked_stream(servicer.GenerateStream),
            request_deserializer=deserializer(pb.GenerateStreamRequest),
            response_serializer=pb.GenerateStreamResponse.SerializeToString,
        ),
        "ListModels": grpc.unary_unary_rpc_method_handler(
            _checked_unary(servicer.ListModels),
            request_deserializer=deserializer(pb.ListModelsRequest),
            response_serializer=pb.ListModelsResponse.SerializeToString,
        ),
    }


def add_inference_service(servicer: Any, server: grpc.aio.Server) -> None:
    """Register `servicer` like the generated `add_InferenceServiceServicer_to_server` does,
    with request decoding that refuses malformed bodies with INVALID_ARGUMENT."""
    handlers = inference_method_handlers(servicer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
