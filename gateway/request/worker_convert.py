"""Conversion between the worker protocol and the gateway's domain objects, in one place."""

from __future__ import annotations

from llmgateway.worker.v1 import worker_pb2 as wpb

from common.types import FinishReason
from common.worker_wire import FINISH_FROM_PROTO, ROLE_VALUES
from gateway.request.admission import Admitted


def finish_reason(value: wpb.FinishReason.ValueType) -> FinishReason:
    """The domain finish reason of a worker's final message."""
    return FINISH_FROM_PROTO[value]


def worker_request(request_id: str, model: str, admitted: Admitted) -> wpb.GenerateRequest:
    """The worker's GenerateRequest for an admitted request: redacted texts, effective caps."""
    request = admitted.request
    sampling = wpb.SamplingParams(
        max_tokens=admitted.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        top_k=request.top_k,
        stop=request.stop,
        seed=request.seed,
    )
    message = wpb.GenerateRequest(
        request_id=request_id,
        model=model,
        sampling=sampling,
        cache_salt=admitted.cache_salt,
        priority=admitted.priority,
    )
    if request.prompt is not None:
        message.prompt = admitted.texts[0]
    else:
        message.chat.messages.extend(
            wpb.ChatMessage(role=ROLE_VALUES[m.role], content=text)
            for m, text in zip(request.messages, admitted.texts, strict=True)
        )
    return message
