"""Conversion between the public protobuf API and the pipeline's domain objects, with validation.

Validation errors are INVALID_ARGUMENT with a google.rpc.BadRequest naming the field, and a
message that says what is allowed.
"""

from __future__ import annotations

import re

from llmgateway.v1 import gateway_pb2 as pb

from gateway.request.decoding import Undecodable, refusal
from gateway.request.domain import (
    ChatTurn,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    StreamChunk,
)
from gateway.request.errors import InvalidArgument, bad_request
from gateway.settings import ServerSettings

_ROLES = {pb.ROLE_SYSTEM: "system", pb.ROLE_USER: "user", pb.ROLE_ASSISTANT: "assistant"}
_FINISH = {
    FinishReason.STOP: pb.FINISH_REASON_STOP,
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.CANCELLED: pb.FINISH_REASON_CANCELLED,
    FinishReason.TIMEOUT: pb.FINISH_REASON_TIMEOUT,
}
# Every client-controlled field has a limit (README, "Limits on what a client sends"); the whole
# body is also bounded by server.max_request_bytes, which gRPC enforces before decoding.
MAX_STOP_SEQUENCES = 8
MAX_STOP_CHARS = 64
MAX_ID_CHARS = 128  # model, client_request_id
MAX_AFFINITY_CHARS = 256
MAX_MESSAGES = 512
MAX_CLASSIFICATION_CHARS = 64
MAX_PURPOSE_CHARS = 128
# Labels that reach the ledger and logs: no line breaks or other control characters.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _invalid(field: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {message}", details=[bad_request(field, message)])


def generation_request(
    request: pb.GenerateRequest | pb.GenerateStreamRequest | Undecodable, limits: ServerSettings
) -> GenerationRequest:
    """Validate a public request and convert it; raises InvalidArgument naming the field."""
    if isinstance(request, Undecodable):
        raise refusal(request)
    model = request.model.strip()
    if not model:
        raise _invalid("model", "is required; call ListModels to see the models you may use")
    _label("model", model, MAX_ID_CHARS)
    prompt: str | None = None
    messages: tuple[ChatTurn, ...] = ()
    which = request.WhichOneof("input")
    if which == "prompt":
        if not request.prompt.strip():
            raise _invalid("prompt", "is empty; send the text to continue")
        prompt = request.prompt
    elif which == "chat":
        messages = _chat(request.chat)
    else:
        raise _invalid("input", "set exactly one of `prompt` or `chat`")
    s = request.sampling
    max_tokens: int | None = None
    if s.HasField("max_tokens"):
        if not 1 <= s.max_tokens <= limits.max_output_tokens:
            raise _invalid(
                "sampling.max_tokens", f"must be between 1 and {limits.max_output_tokens}"
            )
        max_tokens = s.max_tokens
    if s.HasField("temperature") and not 0.0 <= s.temperature <= 2.0:
        raise _invalid("sampling.temperature", "must be between 0 and 2")
    if s.HasField("top_p") and not 0.0 < s.top_p <= 1.0:
        raise _invalid("sampling.top_p", "must be greater than 0 and at most 1")
    if s.HasField("top_k") and s.top_k < 1:
        raise _invalid("sampling.top_k", "must be at least 1 (or unset for no top-k filtering)")
    if len(s.stop) > MAX_STOP_SEQUENCES:
        raise _invalid("sampling.stop", f"at most {MAX_STOP_SEQUENCES} stop sequences")
    for stop in s.stop:
        if not stop or len(stop) > MAX_STOP_CHARS:
            raise _invalid(
                "sampling.stop", f"each stop sequence must be 1 to {MAX_STOP_CHARS} characters"
            )
    _label("client_request_id", request.client_request_id, MAX_ID_CHARS)
    _label("affinity_key", request.affinity_key, MAX_AFFINITY_CHARS)
    _label("classification", request.classification, MAX_CLASSIFICATION_CHARS)
    _label("purpose", request.purpose, MAX_PURPOSE_CHARS)
    return GenerationRequest(
        model=model,
        prompt=prompt,
        messages=messages,
        max_tokens=max_tokens,
        temperature=s.temperature if s.HasField("temperature") else None,
        top_p=s.top_p if s.HasField("top_p") else None,
        top_k=s.top_k if s.HasField("top_k") else None,
        stop=tuple(s.stop),
        seed=s.seed if s.HasField("seed") else None,
        client_request_id=request.client_request_id,
        affinity_key=request.affinity_key,
        classification=request.classification.strip() or None,
        purpose=request.purpose.strip() or None,
    )


def _label(field: str, value: str, limit: int) -> None:
    """A short free-text label: at most `limit` characters, no control characters."""
    if len(value) > limit:
        raise _invalid(field, f"is longer than {limit} characters")
    if _CONTROL.search(value):
        raise _invalid(field, "contains control characters (line breaks, tabs, ...); remove them")


def _chat(chat: pb.ChatInput) -> tuple[ChatTurn, ...]:
    if not chat.messages:
        raise _invalid("chat.messages", "is empty; send at least one message")
    if len(chat.messages) > MAX_MESSAGES:
        raise _invalid("chat.messages", f"at most {MAX_MESSAGES} messages")
    turns = []
    for i, message in enumerate(chat.messages):
        role = _ROLES.get(message.role)
        if role is None:
            raise _invalid(
                f"chat.messages[{i}].role", "set ROLE_SYSTEM, ROLE_USER or ROLE_ASSISTANT"
            )
        turns.append(ChatTurn(role, message.content))
    if not any(t.content.strip() for t in turns):
        raise _invalid("chat.messages", "every message is empty; send some text")
    return tuple(turns)


def finish_reason(reason: FinishReason | None) -> pb.FinishReason.ValueType:
    """The public enum value for a finish reason."""
    return _FINISH[reason] if reason is not None else pb.FINISH_REASON_UNSPECIFIED


def usage(result: GenerationResult) -> pb.Usage:
    return pb.Usage(
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        total_tokens=result.prompt_tokens + result.completion_tokens,
    )


def timings(result: GenerationResult) -> pb.Timings:
    return pb.Timings(
        queue_ms=result.queue_ms,
        time_to_first_token_ms=result.time_to_first_token_ms,
        total_ms=result.total_ms,
    )


def generate_response(result: GenerationResult) -> pb.GenerateResponse:
    """The unary response for a finished generation."""
    return pb.GenerateResponse(
        request_id=result.request_id,
        model=result.model,
        text=result.answer.text,
        usage=usage(result),
        finish_reason=finish_reason(result.finish_reason),
        timings=timings(result),
    )


def stream_chunk(result: GenerationResult, chunk: StreamChunk) -> pb.GenerateStreamResponse:
    """A streamed chunk of text."""
    return pb.GenerateStreamResponse(
        request_id=result.request_id,
        model=result.model,
        text=chunk.text,
        token_count=chunk.token_count,
    )


def stream_end(result: GenerationResult) -> pb.GenerateStreamResponse:
    """The final streamed message: no text, with finish reason, usage and timings."""
    return pb.GenerateStreamResponse(
        request_id=result.request_id,
        model=result.model,
        finish_reason=finish_reason(result.finish_reason),
        usage=usage(result),
        timings=timings(result),
    )
