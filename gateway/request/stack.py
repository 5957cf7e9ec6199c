"""What wraps a public gRPC call, built in one function, and the one error-to-status mapping.

`build_call_stack` is the only place that decides the layers, outermost first:
1. the call context (`gateway.request.call`): request id, deadline, peer, and the verified
   principal or why authentication failed;
2. errors: a `GatewayError` becomes its status with `google.rpc` details in
   `grpc-status-details-bin`; anything else becomes INTERNAL "internal error (request id ...)"
   and its traceback goes to the log, never to the caller;
3. the servicer's method, which reads as the request pipeline. A body that does not decode
   reaches it as `Undecodable` (`gateway.request.decoding`) and is refused as INVALID_ARGUMENT
   after authentication, inside the exchange, so that it is audited like any refusal.
The handlers are built once at start, not per call. Health and reflection are registered
beside them without any of this: they are open to load balancers and tooling.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeAlias, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2
from llmgateway.v1 import gateway_pb2 as pb

from gateway.auth.authenticator import Authenticator
from gateway.request.call import GRPC, CallContext, new_request_id
from gateway.request.decoding import Undecodable, safe_deserializer
from gateway.request.errors import GatewayError

log = logging.getLogger(__name__)

PUBLIC_SERVICE = pb.DESCRIPTOR.services_by_name["InferenceService"].full_name
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Req = TypeVar("Req")
Resp = TypeVar("Resp")


class Servicer(Protocol):
    """The InferenceService's methods as the stack calls them: with the call context."""

    async def Generate(
        self, request: pb.GenerateRequest | Undecodable, call: CallContext, context: Context
    ) -> pb.GenerateResponse: ...

    def GenerateStream(
        self,
        request: pb.GenerateStreamRequest | Undecodable,
        call: CallContext,
        context: Context,
    ) -> AsyncIterator[pb.GenerateStreamResponse]: ...

    async def ListModels(
        self, request: pb.ListModelsRequest | Undecodable, call: CallContext, context: Context
    ) -> pb.ListModelsResponse: ...


def build_call_stack(
    servicer: Servicer, authenticator: Authenticator, *, default_deadline_s: float
) -> grpc.GenericRpcHandler:
    """The InferenceService's method handlers with every layer a call passes through (a call
    without a deadline gets `default_deadline_s`)."""

    def unary(
        method: Callable[[Req, CallContext, Context], Awaitable[Resp]],
    ) -> Callable[[Req, Context], Awaitable[Resp | None]]:
        async def behaviour(request: Req, context: Context) -> Resp | None:
            call = open_call(context, authenticator, default_deadline_s)
            try:
                return await method(request, call, context)
            except GatewayError as err:
                await abort(context, err)
            except (grpc.aio.AbortError, grpc.aio.UsageError):
                raise
            except Exception:
                await _abort_internal(context, call.request_id)
            return None

        return behaviour

    def streaming(
        method: Callable[[Req, CallContext, Context], AsyncIterator[Resp]],
    ) -> Callable[[Req, Context], AsyncIterator[Resp]]:
        async def behaviour(request: Req, context: Context) -> AsyncIterator[Resp]:
            call = open_call(context, authenticator, default_deadline_s)
            try:
                async for response in method(request, call, context):
                    yield response
            except GatewayError as err:
                await abort(context, err)
            except (grpc.aio.AbortError, grpc.aio.UsageError):
                raise
            except Exception:
                await _abort_internal(context, call.request_id)

        return behaviour

    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Generate": grpc.unary_unary_rpc_method_handler(
            unary(servicer.Generate),
            request_deserializer=safe_deserializer(pb.GenerateRequest.FromString),
            response_serializer=pb.GenerateResponse.SerializeToString,
        ),
        "GenerateStream": grpc.unary_stream_rpc_method_handler(
            streaming(servicer.GenerateStream),
            request_deserializer=safe_deserializer(pb.GenerateStreamRequest.FromString),
            response_serializer=pb.GenerateStreamResponse.SerializeToString,
        ),
        "ListModels": grpc.unary_unary_rpc_method_handler(
            unary(servicer.ListModels),
            request_deserializer=safe_deserializer(pb.ListModelsRequest.FromString),
            response_serializer=pb.ListModelsResponse.SerializeToString,
        ),
    }
    return grpc.method_handlers_generic_handler(PUBLIC_SERVICE, handlers)


def open_call(
    context: Context, authenticator: Authenticator, default_deadline_s: float
) -> CallContext:
    """The call context of a gRPC call: authentication runs here, its failure is kept; a call
    without a deadline gets `default_deadline_s`."""
    metadata = tuple(context.invocation_metadata() or ())
    remaining = context.time_remaining()
    authorization = [value for key, value in metadata if key == "authorization"]
    names: list[str] = []
    if authenticator.binds_certificates:
        names = [
            n.decode("utf-8", "replace") for n in context.auth_context().get("x509_common_name", ())
        ]
    principal, refusal = None, None
    try:
        principal = authenticator.authenticate(authorization, names)
    except GatewayError as err:
        refusal = err
    return CallContext(
        request_id=new_request_id(),
        interface=GRPC,
        principal=principal,
        refusal=refusal,
        deadline=time.monotonic() + (default_deadline_s if remaining is None else remaining),
        peer=context.peer() or "",
        metadata=metadata,
    )


def status_trailer(err: GatewayError) -> tuple[tuple[str, bytes], ...]:
    """The `grpc-status-details-bin` trailer carrying `err`'s google.rpc details."""
    details = []
    for message in err.details:
        packed = any_pb2.Any()
        packed.Pack(message)
        details.append(packed)
    status = status_pb2.Status(code=err.code.value[0], message=err.message, details=details)
    return (("grpc-status-details-bin", status.SerializeToString()),)


async def abort(context: Context, err: GatewayError) -> None:
    """End the call with `err`'s status, message and details."""
    await context.abort(err.code, err.message, trailing_metadata=status_trailer(err))


async def _abort_internal(context: Context, request_id: str) -> None:
    log.exception("internal error in request %s", request_id)
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal error (request id {request_id}); report the id to the operators",
    )
