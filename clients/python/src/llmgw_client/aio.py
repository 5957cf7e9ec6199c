"""The asyncio client: the same calls as `Client`, as coroutines and async iterators."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any, Self, Unpack

import grpc
import grpc.aio

from llmgw_client import _requests as rq
from llmgw_client._proto.llmgateway.v1 import gateway_pb2 as pb
from llmgw_client.client import DEFAULT_STREAM_TIMEOUT_S, DEFAULT_TIMEOUT_S, ChatMessages
from llmgw_client.errors import GatewayError, error_from_rpc
from llmgw_client.retry import NO_RETRY, RetryPolicy
from llmgw_client.tokens import TokenSource, as_provider


class AsyncClient:
    """A connection to one gateway for asyncio code; arguments as for `Client`.

    Create it inside the running event loop and `await client.close()` (or use `async with`).
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
            self._channel = grpc.aio.insecure_channel(target, options=list(options))
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=list(options))
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

    async def list_models(self, *, timeout: float | None = None) -> list[pb.ModelInfo]:
        """The models the caller's department may use, sorted by name."""
        response: pb.ListModelsResponse = await self._unary(
            self._list_models, pb.ListModelsRequest(), timeout
        )
        return list(response.models)

    async def generate(
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
        response: pb.GenerateResponse = await self._unary(self._generate, request, timeout)
        return response

    async def generate_stream(
        self,
        model: str,
        prompt: str | None = None,
        *,
        messages: ChatMessages | None = None,
        timeout: float | None = None,
        **options: Unpack[rq.RequestOptions],
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        """The answer as it is produced: chunks with text, then a final message with usage.

        Leaving the loop early (or cancelling the task) cancels the generation on the gateway.
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
                async for message in call:
                    delivered = True
                    yield message
                return
            except grpc.aio.AioRpcError as rpc_error:
                error = error_from_rpc(rpc_error)
            finally:
                call.cancel()
            wait = None if delivered else self._retry.delay(error, attempt, _left(deadline))
            if wait is None:
                raise error
            await asyncio.sleep(wait)

    async def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        attempt = 0
        while True:
            attempt += 1
            try:
                metadata = rq.metadata(self._tokens)
                return await method(request, timeout=_left(deadline), metadata=metadata)
            except grpc.aio.AioRpcError as rpc_error:
                error: GatewayError = error_from_rpc(rpc_error)
            wait = self._retry.delay(error, attempt, _left(deadline))
            if wait is None:
                raise error
            await asyncio.sleep(wait)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)
