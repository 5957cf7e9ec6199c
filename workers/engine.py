"""The port every inference engine implements (TensorRT-LLM on a GPU, or the simulator)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from common.types import ChatTurn, FinishReason


@dataclass(frozen=True, slots=True)
class EngineRequest:
    """One generation as the engine sees it. Exactly one of `prompt` and `messages` is set."""

    request_id: str
    model: str
    max_tokens: int
    prompt: str | None = None
    messages: tuple[ChatTurn, ...] = ()
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    cache_salt: str | None = None
    priority: int = 0


@dataclass(frozen=True, slots=True)
class EngineChunk:
    """New output since the previous chunk.

    `prompt_tokens` is the input length once known; `finish_reason` is set on the last chunk only
    and `completion_tokens` then holds the total generated, which equals the sum of every chunk's
    `token_count`. `max_tokens` is set on the last chunk when the engine lowered the requested
    limit to fit the model's context.
    """

    text: str
    token_count: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: FinishReason | None = None
    max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """A load report: what the router balances on."""

    active: int
    queued: int
    free_slots: int
    max_slots: int
    kv_cache_utilization: float = 0.0


class EngineError(Exception):
    """Base class of errors an engine reports; the worker maps each to one gRPC status."""


class EngineOverloaded(EngineError):
    """The engine's waiting queue is full: try another worker (RESOURCE_EXHAUSTED)."""


class EngineUnavailable(EngineError):
    """The engine cannot run requests now, e.g. it is shutting down (UNAVAILABLE)."""


class UnsupportedModel(EngineError):
    """The engine does not serve the requested model (NOT_FOUND)."""


class InvalidEngineRequest(EngineError):
    """The request cannot run on this engine, e.g. too long for its context (INVALID_ARGUMENT).

    `reason` is one of the `REASON_*` names the worker API documents; `metadata` holds the numbers
    behind it (limits, lengths) as decimal strings. The gateway writes its own message to the
    client from these two, so the exception's text only ever reaches logs.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str = "engine.request_rejected",
        metadata: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.metadata = {key: str(value) for key, value in (metadata or {}).items()}


class EngineFailed(EngineError):
    """The engine failed fatally and serves nothing more: the worker must exit to be restarted."""


# Reasons of an InvalidEngineRequest (google.rpc.ErrorInfo reasons in the worker API).
REASON_MAX_SEQ_LEN = "engine.max_seq_len"
REASON_MAX_NUM_TOKENS = "engine.max_num_tokens"
REASON_MAX_TOKENS = "engine.max_tokens"
REASON_SEED_UNSUPPORTED = "engine.seed_unsupported"
REASON_SAMPLING = "engine.sampling"
REASON_CHAT_TEMPLATE = "engine.chat_template"
REASON_REJECTED = "engine.request_rejected"


class Engine(Protocol):
    """A model runtime with in-flight batching.

    `generate` returns an async iterator of chunks. Leaving the iteration early (the consumer is
    cancelled or calls `aclose()`) must abort the request in the engine and free its batch slot
    at once: a worker never spends GPU time on a caller who has gone away.
    """

    kind: str
    models: tuple[str, ...]

    async def start(self) -> None:
        """Load the model and start background tasks."""

    async def close(self) -> None:
        """Abort running requests and release the model."""

    def generate(self, request: EngineRequest) -> AsyncIterator[EngineChunk]:
        """Run one generation, yielding chunks as tokens are produced."""
        ...

    def load(self) -> EngineLoad:
        """The current load, cheap enough to call on every report."""
        ...
