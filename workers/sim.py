"""A simulator of a batched GPU engine, for development, tests and load tests without a GPU.

It models what routing and scheduling depend on (in the spirit of llm-d's inference simulator):
a fixed number of batch slots (`max_num_seqs`), a bounded waiting queue
(`max_waiting_queue_length`), time to first token growing with the prompt (prefill), and an
inter-token latency that grows with the number of sequences in the batch (decode is memory bound,
so each extra sequence slows every step a little). Text is deterministic for a given seed (or
prompt, when no seed is set), counted with `common.tokenizer`, honours max_tokens and stop
sequences, and a cancelled generation frees its slot at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from common.settings import positive, setting
from common.tokenizer import count_tokens
from common.types import ChatTurn, FinishReason
from workers.engine import (
    EngineChunk,
    EngineLoad,
    EngineOverloaded,
    EngineRequest,
    InvalidEngineRequest,
    UnsupportedModel,
)

# Each entry is exactly one token under common.tokenizer's rule (a leading space, <= 4 letters).
_VOCABULARY = (
    " the", " a", " of", " to", " and", " in", " is", " for", " that", " with", " on", " as",
    " data", " care", " ward", " dose", " test", " plan", " risk", " note", " team", " unit",
    " bed", " case", " time", " rate", " form", " goal", " step", " list", " safe", " next",
    ",", ".",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Latency model and capacity of the simulated engine. Times in milliseconds."""

    models: tuple[str, ...] = setting(
        ("llama-3.1-8b-instruct", "qwen2.5-7b-instruct"), doc="model names served"
    )
    time_to_first_token_ms: float = setting(40.0, doc="latency before the first token")
    prefill_ms_per_token: float = setting(0.02, doc="extra first-token latency per prompt token")
    inter_token_latency_ms: float = setting(8.0, doc="latency between tokens")
    slowdown_per_sequence: float = setting(
        0.03, doc="each running sequence slows the others by this fraction"
    )
    max_num_seqs: int = setting(16, doc="batch slots", check=positive)
    max_waiting_queue_length: int = setting(64, doc="generations that may wait for a slot")
    context_length: int = setting(8192, doc="longest prompt + output in tokens", check=positive)
    eos_probability: float = setting(0.0, doc="chance per token of ending the answer early")


def answer_parameters(config: SimConfig) -> dict[str, object]:
    """What shapes the simulated answers, not their timing: what the simulator's digest covers."""
    return {
        "vocabulary": list(_VOCABULARY),
        "eos_probability": config.eos_probability,
        "context_length": config.context_length,
    }


def render_chat(messages: tuple[ChatTurn, ...]) -> str:
    """A plain chat template: one `<|role|>` header per message, then the assistant's header."""
    parts = [f"<|{m.role}|>\n{m.content}\n" for m in messages]
    return "".join(parts) + "<|assistant|>\n"


class SimEngine:
    """A deterministic batched-GPU simulator implementing `workers.engine.Engine`."""

    kind = "sim"

    def __init__(self, config: SimConfig | None = None, *, record_requests: int = 0) -> None:
        self.config = config or SimConfig()
        self.models = self.config.models
        self._active = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        # Requests as the engine received them (after any redaction by the gateway); kept only
        # when asked, for tests that must prove what reached the worker.
        self.received: deque[EngineRequest] = deque(maxlen=record_requests or None)
        self._record = record_requests > 0
        self.cancelled = 0

    async def start(self) -> None:
        """Nothing to load."""

    async def close(self) -> None:
        """Wake every waiter; their generations end as unavailable."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.cancel()

    def load(self) -> EngineLoad:
        cfg = self.config
        return EngineLoad(
            active=self._active,
            queued=len(self._waiting),
            free_slots=max(0, cfg.max_num_seqs - self._active),
            max_slots=cfg.max_num_seqs,
            kv_cache_utilization=self._active / cfg.max_num_seqs,
        )

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineChunk]:
        cfg = self.config
        if request.model not in self.models:
            raise UnsupportedModel(f"model {request.model!r} is not served by this worker")
        prompt = request.prompt if request.prompt is not None else render_chat(request.messages)
        prompt_tokens = count_tokens(prompt)
        if prompt_tokens + request.max_tokens > cfg.context_length:
            raise InvalidEngineRequest(
                f"prompt ({prompt_tokens} tokens) plus max_tokens ({request.max_tokens}) exceeds "
                f"the context length of {cfg.context_length} tokens"
            )
        await self._acquire_slot()
        try:
            if self._record:
                self.received.append(request)
            await asyncio.sleep(
                (cfg.time_to_first_token_ms + cfg.prefill_ms_per_token * prompt_tokens) / 1000
            )
            async for chunk in self._decode(request, prompt, prompt_tokens):
                yield chunk
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self._release_slot()

    async def _decode(
        self, request: EngineRequest, prompt: str, prompt_tokens: int
    ) -> AsyncIterator[EngineChunk]:
        cfg = self.config
        rng = random.Random(_seed_for(request, prompt))
        text = ""
        produced = 0
        finish = FinishReason.LENGTH
        while produced < request.max_tokens:
            if produced:
                slowdown = 1 + cfg.slowdown_per_sequence * max(0, self._active - 1)
                await asyncio.sleep(cfg.inter_token_latency_ms * slowdown / 1000)
            piece = rng.choice(_VOCABULARY)
            stop_at = _first_stop(text + piece, request.stop, len(text))
            if stop_at is not None:
                tail = (text + piece)[len(text) : stop_at]
                produced += 1
                if tail:
                    yield EngineChunk(tail, 1, prompt_tokens if produced == 1 else 0)
                finish = FinishReason.STOP
                break
            text += piece
            produced += 1
            yield EngineChunk(piece, 1, prompt_tokens if produced == 1 else 0)
            if cfg.eos_probability and rng.random() < cfg.eos_probability:
                finish = FinishReason.STOP
                break
        yield EngineChunk("", 0, prompt_tokens, produced, finish)

    async def _acquire_slot(self) -> None:
        if self._active < self.config.max_num_seqs and not self._waiting:
            self._active += 1
            return
        if len(self._waiting) >= self.config.max_waiting_queue_length:
            raise EngineOverloaded(
                f"all {self.config.max_num_seqs} batch slots are busy and the waiting queue "
                f"({self.config.max_waiting_queue_length}) is full"
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter  # _release_slot hands its slot over: _active is already counted
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release_slot()  # the slot arrived together with the cancellation
            elif waiter in self._waiting:
                self._waiting.remove(waiter)
            raise

    def _release_slot(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._active -= 1


def _seed_for(request: EngineRequest, prompt: str) -> int:
    if request.seed is not None and (request.temperature is None or request.temperature > 0):
        return request.seed
    return int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")


def _first_stop(text: str, stops: tuple[str, ...], searched_upto: int) -> int | None:
    """Index where the earliest stop sequence starts in `text`, looking only at new matches."""
    best: int | None = None
    for stop in stops:
        index = text.find(stop, max(0, searched_upto - len(stop) + 1))
        if index != -1 and (best is None or index < best):
            best = index
    return best
