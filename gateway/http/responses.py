"""OpenAI response objects (completions, chunks, models) and their server-sent-event framing."""

from __future__ import annotations

import json
import time
from typing import Any

from gateway.request.domain import FinishReason, GenerationResult
from gateway.routing.router import ModelStatus

# The engine's finish reasons in OpenAI's words: a cancelled or timed-out generation stopped
# short of its end like one that hit its length.
_FINISH = {
    FinishReason.STOP: "stop",
    FinishReason.LENGTH: "length",
    FinishReason.CANCELLED: "length",
    FinishReason.TIMEOUT: "length",
}
DONE = b"data: [DONE]\n\n"
OWNER = "llmgateway"


def finish_reason(reason: FinishReason | None) -> str | None:
    return _FINISH.get(reason) if reason is not None else None


def usage(result: GenerationResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


class Shapes:
    """The objects of one answer: chat (`chat.completion`) or legacy (`text_completion`)."""

    def __init__(self, result: GenerationResult, *, chat: bool) -> None:
        self._result = result
        self._chat = chat
        self._created = int(time.time())
        prefix = "chatcmpl-" if chat else "cmpl-"
        self.id = prefix + result.request_id

    def _head(self, kind: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": self._created,
            "model": self._result.model,
        }

    def complete(self) -> dict[str, Any]:
        """The whole answer of a non-streaming call."""
        result = self._result
        reason = finish_reason(result.finish_reason)
        if self._chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": result.answer.text},
                "logprobs": None,
                "finish_reason": reason,
            }
            head = self._head("chat.completion")
        else:
            choice = {"index": 0, "text": result.answer.text, "logprobs": None,
                      "finish_reason": reason}  # fmt: skip
            head = self._head("text_completion")
        return {**head, "choices": [choice], "usage": usage(result)}

    def chunk(
        self, text: str, *, first: bool = False, finish: str | None = None, with_usage: bool
    ) -> dict[str, Any]:
        """One streamed event: text, or (with `finish`) the last choice event."""
        if self._chat:
            delta: dict[str, Any] = {"role": "assistant", "content": text} if first else {}
            if text and not first:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None,
                                      "finish_reason": finish}  # fmt: skip
            out = {**self._head("chat.completion.chunk"), "choices": [choice]}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            out = {**self._head("text_completion"), "choices": [choice]}
        if with_usage:  # OpenAI sends `usage: null` on every event before the usage event
            out["usage"] = None
        return out

    def usage_chunk(self) -> dict[str, Any]:
        """The event after the last choice when `stream_options.include_usage` is set."""
        kind = "chat.completion.chunk" if self._chat else "text_completion"
        return {**self._head(kind), "choices": [], "usage": usage(self._result)}


def model_list(models: list[ModelStatus]) -> dict[str, Any]:
    """`GET /v1/models`: the caller's models in OpenAI's list shape."""
    return {
        "object": "list",
        "data": [
            {"id": m.name, "object": "model", "created": 0, "owned_by": OWNER} for m in models
        ],
    }


def event(data: dict[str, Any]) -> bytes:
    """One server-sent event carrying `data` as compact JSON."""
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
