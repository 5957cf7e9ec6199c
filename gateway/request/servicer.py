"""The public InferenceService: each method reads as the request pipeline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc as pb_grpc

from gateway.auth.principal import CURRENT_PRINCIPAL
from gateway.request import convert
from gateway.request.interceptors import CURRENT_REQUEST_ID
from gateway.request.pipeline import Pipeline

_Context = grpc.aio.ServicerContext[Any, Any]


class InferenceServicer(pb_grpc.InferenceServiceServicer):
    """Thin: validation and conversion in `convert`, the work in `pipeline`."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._limits = pipeline.settings.server

    async def Generate(self, request: pb.GenerateRequest, context: _Context) -> pb.GenerateResponse:
        request_id = CURRENT_REQUEST_ID.get()
        async with self._pipeline.exchange(request_id, context, streaming=False) as exchange:
            await exchange.admit(convert.generation_request(request, self._limits))
            async for _ in exchange.generate():
                pass
        return convert.generate_response(exchange.result)

    async def GenerateStream(
        self, request: pb.GenerateStreamRequest, context: _Context
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        request_id = CURRENT_REQUEST_ID.get()
        async with self._pipeline.exchange(request_id, context, streaming=True) as exchange:
            await exchange.admit(convert.generation_request(request, self._limits))
            async for chunk in exchange.generate():
                yield convert.stream_chunk(exchange.result, chunk)
        # After the exchange: the audit record is durable before the caller sees the end.
        yield convert.stream_end(exchange.result)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: _Context
    ) -> pb.ListModelsResponse:
        principal = CURRENT_PRINCIPAL.get()
        policy = self._pipeline.policy.current()
        department = policy.department(principal.department) if principal else None
        allowed = department.models if department else frozenset()
        purposes = policy.register.purposes_for
        dept = department.name if department else ""
        return pb.ListModelsResponse(
            models=[
                pb.ModelInfo(
                    name=m.name,
                    pools=m.pools,
                    ready_workers=m.ready_workers,
                    purposes=purposes(dept, m.name),
                )
                for m in self._pipeline.router.models().values()
                if m.name in allowed
            ]
        )
