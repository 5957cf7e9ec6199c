"""The public InferenceService (the gRPC door): each method reads as the request pipeline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from llmgateway.v1 import gateway_pb2 as pb

from gateway.request import convert
from gateway.request.call import CallContext
from gateway.request.decoding import Undecodable, refusal
from gateway.request.pipeline import Pipeline

_Context = grpc.aio.ServicerContext[Any, Any]


class InferenceServicer:
    """Thin: validation and conversion in `convert`, the work in `pipeline`.

    Methods take the call context built by `gateway.request.stack`; the gRPC context is used
    only to send the remaining-quota headers with the first token.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._limits = pipeline.settings.server

    async def Generate(
        self, request: pb.GenerateRequest | Undecodable, call: CallContext, context: _Context
    ) -> pb.GenerateResponse:
        async with self._pipeline.exchange(call, streaming=False) as exchange:
            call.authenticated()  # who is asking comes before what is wrong with the request
            admitted = await exchange.admit(convert.generation_request(request, self._limits))
            async for _ in exchange.generate():
                pass
            if exchange.result.completion_tokens:
                await context.send_initial_metadata(admitted.quota_metadata)
        return convert.generate_response(exchange.result)

    async def GenerateStream(
        self,
        request: pb.GenerateStreamRequest | Undecodable,
        call: CallContext,
        context: _Context,
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        async with self._pipeline.exchange(call, streaming=True) as exchange:
            call.authenticated()  # who is asking comes before what is wrong with the request
            admitted = await exchange.admit(convert.generation_request(request, self._limits))
            first = True
            async for chunk in exchange.generate():
                if first:
                    await context.send_initial_metadata(admitted.quota_metadata)
                    first = False
                yield convert.stream_chunk(exchange.result, chunk)
        # After the exchange: the audit record is durable before the caller sees the end.
        yield convert.stream_end(exchange.result)

    async def ListModels(
        self, request: pb.ListModelsRequest | Undecodable, call: CallContext, context: _Context
    ) -> pb.ListModelsResponse:
        async with self._pipeline.exchange(call, streaming=False, listing=True) as exchange:
            models = exchange.models()
            if isinstance(request, Undecodable):
                raise refusal(request)
        department = call.authenticated().department
        purposes = self._pipeline.policy.current().register.purposes_for
        return pb.ListModelsResponse(
            models=[
                pb.ModelInfo(
                    name=m.name,
                    pools=m.pools,
                    ready_workers=m.ready_workers,
                    purposes=purposes(department, m.name),
                )
                for m in models
            ]
        )
