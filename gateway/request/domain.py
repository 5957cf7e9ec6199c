"""Domain objects of one generation as the gateway's pipeline sees it (no protobuf here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from common.types import ChatTurn, FinishReason

__all__ = [
    "Answer",
    "ChatTurn",
    "FinishReason",
    "GenerationRequest",
    "GenerationResult",
    "StreamChunk",
]


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A validated generation request. Exactly one of `prompt` and `messages` is set."""

    model: str
    prompt: str | None
    messages: tuple[ChatTurn, ...]
    max_tokens: int | None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    client_request_id: str = ""
    affinity_key: str = ""
    classification: str | None = None
    purpose: str | None = None

    @property
    def texts(self) -> tuple[str, ...]:
        """The caller's input texts in order: the prompt, or each message's content."""
        if self.prompt is not None:
            return (self.prompt,)
        return tuple(m.content for m in self.messages)


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """New text from the worker (possibly several tokens coalesced)."""

    text: str
    token_count: int


class Hasher(Protocol):
    """An incremental hash (`hmac.HMAC`, `hashlib` objects)."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


@dataclass(slots=True)
class Answer:
    """The generated text, kept only as far as it is needed after the last token.

    Every part feeds `hasher` (the audit record's keyed hash of the answer) as it arrives; the
    text itself is kept only when `keep_text`: for a unary reply, an audit record with full
    content or content on the span. A stream that needs only the hash keeps no text, so its
    memory does not grow with its length.
    """

    keep_text: bool = True
    hasher: Hasher | None = None
    parts: list[str] = field(default_factory=list)
    produced: bool = False

    def add(self, text: str) -> None:
        if text:
            self.produced = True
        if self.keep_text:
            self.parts.append(text)
        if self.hasher is not None:
            self.hasher.update(text.encode())

    @property
    def text(self) -> str:
        """The text kept ("" when `keep_text` is off)."""
        return "".join(self.parts)


@dataclass(slots=True)
class GenerationResult:
    """How a generation ended, filled in as it runs."""

    request_id: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: FinishReason | None = None
    queue_ms: float = 0.0
    time_to_first_token_ms: float = 0.0
    total_ms: float = 0.0
    worker: str = ""
    model_digest: str = ""
    retries: int = 0
    answer: Answer = field(default_factory=Answer)
