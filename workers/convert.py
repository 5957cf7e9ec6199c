"""Conversion between the worker protobuf messages and the engine's domain objects."""

from __future__ import annotations

from llmgateway.worker.v1 import worker_pb2 as pb

from common.types import ChatTurn
from common.worker_wire import FINISH_TO_PROTO, ROLE_NAMES
from workers.engine import EngineChunk, EngineLoad, EngineRequest


def engine_request(request: pb.GenerateRequest) -> EngineRequest:
    """The engine request for a worker GenerateRequest (already validated by the gateway)."""
    s = request.sampling
    messages = tuple(
        ChatTurn(ROLE_NAMES.get(m.role, "user"), m.content) for m in request.chat.messages
    )
    return EngineRequest(
        request_id=request.request_id,
        model=request.model,
        max_tokens=s.max_tokens,
        prompt=request.prompt if request.WhichOneof("input") == "prompt" else None,
        messages=messages,
        temperature=s.temperature if s.HasField("temperature") else None,
        top_p=s.top_p if s.HasField("top_p") else None,
        top_k=s.top_k if s.HasField("top_k") else None,
        stop=tuple(s.stop),
        seed=s.seed if s.HasField("seed") else None,
        cache_salt=request.cache_salt or None,
        priority=request.priority,
    )


def merge_chunks(chunks: list[EngineChunk]) -> pb.GenerateResponse:
    """One response message for chunks that piled up while the previous message was sent."""
    last = chunks[-1]
    prompt_tokens = next((c.prompt_tokens for c in chunks if c.prompt_tokens), 0)
    message = pb.GenerateResponse(
        text="".join(c.text for c in chunks),
        token_count=sum(c.token_count for c in chunks),
        finish_reason=(
            FINISH_TO_PROTO[last.finish_reason]
            if last.finish_reason
            else pb.FINISH_REASON_UNSPECIFIED
        ),
        prompt_tokens=prompt_tokens,
        completion_tokens=last.completion_tokens,
    )
    if last.max_tokens is not None:
        message.max_tokens = last.max_tokens
    return message


def load_message(load: EngineLoad, *, draining: bool, failed: bool = False) -> pb.Load:
    """The protobuf load report."""
    return pb.Load(
        active=load.active,
        queued=load.queued,
        free_slots=0 if draining else load.free_slots,
        max_slots=load.max_slots,
        kv_cache_utilization=load.kv_cache_utilization,
        draining=draining or failed,
        failed=failed,
    )
