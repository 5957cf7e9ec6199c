"""The synchronous client: unary and streaming generation, model listing, typed refusals."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

import grpc

from llmgw_client import _requests as rq
from llmgw_client._proto.llmgateway.v1 import gateway_pb2 as pb
from llmgw_client.errors import GatewayError, error_from_rpc
from llmgw_client.retry import NO_RETRY, RetryPolicy
from llmgw_client.tokens import TokenSource, as_provider

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_STREAM_TIMEOUT_S = 300.0
ChatMessages = Sequence[tuple[str, str] | pb.ChatMessage]


class Client:
    """A connection to one gateway. Thread-safe; close it (or use `with`) when done.

    `token` is a bearer token string, a TokenProvider (StaticToken, TokenFile, CallableToken) or
    a function returning the token; it is read before every attempt. `credentials` makes the
    channel TLS (for mTLS, `grpc.ssl_channel_credentials(root, key, chain)`); without it the channel
    is plaintext, for loopback only. `timeout` and `stream_timeout` are the default deadlines in
    seconds, covering every attempt of a call; `retry` retries refusals that say when to retry.
    """

    def __init__(
        self,
        target: str,
        *,
        token: TokenSource = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        stream_timeout: float = DEFAULT_STREAM_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=list(options))
        else:
            self._channel = grpc.secure_channel(target, credentials, options=list(options))
        self._tokens = as_provider(token)
        self._timeout = timeout
        self._stream_timeout = stream_timeout
        self._retry = retry or NO_RETRY
        self._generate = self._channel.unary_unary(
            rq.GENERATE,
            request_serializer=pb.GenerateRequest.SerializeToString,
            response_deserializer=pb.GenerateResponse.FromString,
        )
        self._generate_stream = self._channel.unary_stream(
            rq.GENERATE_STREAM,
            request_serializer=pb.GenerateStreamRequest.SerializeToString,
            response_deserializer=pb.GenerateStreamResponse.FromString,
        )
        self._list_models = self._channel.unary_unary(
            rq.LIST_MODELS,
            request_serializer=pb.ListModelsRequest.SerializeToString,
            response_deserializer=pb.ListModelsResponse.FromString,
        )

    def list_models(self, *, timeout: float | None = None) -> list[pb.ModelInfo]:
        """The models the caller's department may use, sorted by name."""
        response: pb.ListModelsResponse = self._unary(
            self._list_models, pb.ListModelsRequest(), timeout
        )
        return list(response.models)

    def generate(
        self,
        model: str,
        prompt: str | None = None,
        *,
        messages: ChatMessages | None = None,
        timeout: float | None = None,
        **options: Unpack[rq.RequestOptions],
    ) -> pb.GenerateResponse:
        """One complete answer to `prompt` or to the chat `messages` ((role, content) pairs)."""
        request = rq.generate_request(model, prompt, messages, options)
        response: pb.GenerateResponse = self._unary(self._generate, request, timeout)
        return response

    def generate_stream(
        self,
        model: str,
        prompt: str | None = None,
        *,
        messages: ChatMessages | None = None,
        timeout: float | None = None,
        **options: Unpack[rq.RequestOptions],
    ) -> Iterator[pb.GenerateStreamResponse]:
        """The answer as it is produced: chunks with text, then a final message with usage.

        Leaving the loop early cancels the generation on the gateway and its worker.
        """
        request = rq.stream_request(model, prompt, messages, options)
        deadline = time.monotonic() + (self._stream_timeout if timeout is None else timeout)
        attempt = 0
        while True:
            attempt += 1
            call = self._generate_stream(
                request, timeout=_left(deadline), metadata=rq.metadata(self._tokens)
            )
            delivered = False
            try:
                for message in call:
                    delivered = True
                    yield message
                return
            except grpc.RpcError as rpc_error:
                error = error_from_rpc(rpc_error)
            finally:
                call.cancel()
            wait = None if delivered else self._retry.delay(error, attempt, _left(deadline))
            if wait is None:
                raise error
            time.sleep(wait)

    def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        attempt = 0
        while True:
            attempt += 1
            try:
                return method(request, timeout=_left(deadline), metadata=rq.metadata(self._tokens))
            except grpc.RpcError as rpc_error:
                error: GatewayError = error_from_rpc(rpc_error)
            wait = self._retry.delay(error, attempt, _left(deadline))
            if wait is None:
                raise error
            time.sleep(wait)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)
