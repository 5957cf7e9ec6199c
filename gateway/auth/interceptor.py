"""The authentication interceptor: every protected call runs with a verified `Principal`."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import grpc
from prometheus_client import Counter

from gateway.auth.principal import CURRENT_PRINCIPAL, Principal
from gateway.auth.settings import MtlsSettings
from gateway.auth.verifier import TokenRejected, TokenVerifier
from gateway.request.errors import GatewayError, PermissionDenied
from gateway.request.ratelog import RateLimitedLog

log = logging.getLogger(__name__)
_REFUSALS_LOG = RateLimitedLog(log)

AUTH_DENIALS = Counter(
    "llmgw_auth_denials_total", "Calls refused by authentication, by reason", ["reason"]
)

# Open without a token: load balancers and tooling must reach these before they hold a token.
OPEN_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
)

# grpc.RpcMethodHandler is generic only in the type stubs.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call except health and reflection.

    Protected handlers are wrapped: the wrapped behaviour verifies the `authorization: Bearer`
    token, checks the client certificate binding when mTLS `subject_claim` is set, and runs
    the original behaviour with `CURRENT_PRINCIPAL` set. Failures are raised as
    `Unauthenticated` / `PermissionDenied` for the outer error interceptor to map to a status;
    each is counted in `llmgw_auth_denials_total` by reason. Unknown services are protected too
    (deny by default).
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        mtls: MtlsSettings | None = None,
        open_prefixes: Sequence[str] = OPEN_PREFIXES,
    ) -> None:
        self._verifier = verifier
        self._subject_claim = mtls.subject_claim if mtls else None
        self._open = tuple(open_prefixes)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(self._open):
            return handler
        metadata = handler_call_details.invocation_metadata or ()
        return _wrap(handler, lambda context: self._authenticate(metadata, context))

    def _authenticate(self, metadata: Sequence[tuple[str, Any]], context: Any) -> Principal:
        try:
            principal = self._verifier.verify(_bearer_token(metadata))
            if self._subject_claim is not None:
                _check_certificate(principal, context, self._subject_claim)
        except GatewayError as err:
            reason = err.reason if isinstance(err, TokenRejected) else "other"
            AUTH_DENIALS.labels(reason).inc()
            # Anyone can send junk tokens: one line per reason and minute, not one per call.
            _REFUSALS_LOG.log(logging.INFO, reason, "call refused: %s (%s)", reason, err.message)
            raise
        return principal


def _bearer_token(metadata: Sequence[tuple[str, Any]]) -> str:
    values = [value for key, value in metadata if key == "authorization"]
    if not values:
        raise TokenRejected(
            "missing", "no credentials: send metadata 'authorization: Bearer <token>'"
        )
    if len(values) > 1:
        raise TokenRejected("malformed", "send exactly one 'authorization' metadata entry")
    value = values[0]
    scheme, _, token = value.partition(" ") if isinstance(value, str) else ("", "", "")
    # RFC 7235: the scheme name is case-insensitive.
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenRejected("malformed", "the 'authorization' metadata must be 'Bearer <token>'")
    return token.strip()


def _check_certificate(principal: Principal, context: Any, claim: str) -> None:
    auth = context.auth_context()
    names = [n.decode("utf-8", "replace") for n in auth.get("x509_common_name", ())]
    if not names:
        raise PermissionDenied(
            "this gateway binds tokens to client certificates: connect with the client "
            f"certificate whose subject CN equals your token's '{claim}' claim"
        )
    if principal.certificate_subject not in names:
        raise PermissionDenied(
            f"the client certificate's subject does not match the token's '{claim}' claim: "
            "use the certificate issued to this caller"
        )


def _wrap(handler: Handler, authenticate: Callable[[Any], Principal]) -> Handler:
    """`handler` with each behaviour run under the authenticated principal."""
    if handler.unary_unary is not None:
        inner_uu: Any = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            token = CURRENT_PRINCIPAL.set(authenticate(context))
            try:
                return await inner_uu(request, context)
            finally:
                CURRENT_PRINCIPAL.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream is not None:
        inner_us: Any = handler.unary_stream
        return grpc.unary_stream_rpc_method_handler(
            _streaming(inner_us, authenticate),
            handler.request_deserializer,
            handler.response_serializer,
        )
    if handler.stream_unary is not None:
        inner_su: Any = handler.stream_unary

        async def stream_unary(requests: Any, context: Any) -> Any:
            token = CURRENT_PRINCIPAL.set(authenticate(context))
            try:
                return await inner_su(requests, context)
            finally:
                CURRENT_PRINCIPAL.reset(token)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary, handler.request_deserializer, handler.response_serializer
        )
    inner_ss: Any = handler.stream_stream
    return grpc.stream_stream_rpc_method_handler(
        _streaming(inner_ss, authenticate),
        handler.request_deserializer,
        handler.response_serializer,
    )


def _streaming(
    inner: Callable[[Any, Any], Any], authenticate: Callable[[Any], Principal]
) -> Callable[[Any, Any], AsyncIterator[Any]]:
    """A response-streaming behaviour; `inner` may be an async generator or use context.write."""

    async def behaviour(request: Any, context: Any) -> AsyncIterator[Any]:
        # grpc.aio runs each call in its own task, so the principal set here is seen by
        # everything the behaviour awaits and by nothing else.
        CURRENT_PRINCIPAL.set(authenticate(context))
        result = inner(request, context)
        if inspect.isasyncgen(result):
            async for response in result:
                yield response
        else:
            await result

    return behaviour
