"""One generation through the gateway: admit (policy, limits), route, stream, account, audit.

An `Exchange` holds the state of one request. The servicer opens it with `async with`, so that
whatever happens (success, denial, client cancellation, deadline, worker failure) the exit runs
exactly once: token accounting is reconciled and the outcome recorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
from llmgateway.worker.v1 import worker_pb2 as wpb

from gateway.domain import FinishReason, GenerationRequest, GenerationResult, StreamChunk
from gateway.errors import DeadlineExceeded, GatewayError, InvalidArgument, bad_request
from gateway.routing.router import RouteOutcome, Router, WorkerCall
from gateway.settings import GatewaySettings
from workers.convert import ROLE_NAMES
from workers.tokenizer import count_chat_tokens, count_tokens

log = logging.getLogger(__name__)

_ROLE_VALUES = {name: value for value, name in ROLE_NAMES.items()}
_FINISH_FROM_WORKER = {
    wpb.FINISH_REASON_STOP: FinishReason.STOP,
    wpb.FINISH_REASON_LENGTH: FinishReason.LENGTH,
    wpb.FINISH_REASON_CANCELLED: FinishReason.CANCELLED,
    wpb.FINISH_REASON_TIMEOUT: FinishReason.TIMEOUT,
}
# Time kept back from the caller's deadline so that the worker's answer can still reach them.
DEADLINE_MARGIN_S = 0.005


@dataclass(slots=True)
class Admitted:
    """What admission decided: the limits the generation runs under."""

    request: GenerationRequest
    prompt_tokens: int
    max_tokens: int
    allowed_pools: tuple[str, ...] | None = None
    priority: int = 0
    cache_salt: str = ""
    department: str = ""


class Pipeline:
    """The request path's collaborators, shared by every exchange."""

    def __init__(self, settings: GatewaySettings, router: Router) -> None:
        self.settings = settings
        self.router = router

    def exchange(self, request_id: str, context: grpc.aio.ServicerContext[Any, Any]) -> Exchange:
        return Exchange(self, request_id, context)


class Exchange:
    """The state of one request from arrival to its audit record."""

    def __init__(
        self, pipeline: Pipeline, request_id: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        self._pipeline = pipeline
        self._context = context
        self._started = time.monotonic()
        self.admitted: Admitted | None = None
        self.route = RouteOutcome()
        self.result = GenerationResult(request_id=request_id, model="")

    async def __aenter__(self) -> Exchange:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.result.total_ms = (time.monotonic() - self._started) * 1000
        self.result.worker = self.route.worker_id
        self.result.retries = self.route.retries
        self.result.queue_ms = self.route.queue_ms
        if exc_type is asyncio.CancelledError and self.result.finish_reason is None:
            self.result.finish_reason = FinishReason.CANCELLED

    def admit(self, request: GenerationRequest) -> Admitted:
        """Decide whether and how the request may run (model, token caps)."""
        settings = self._pipeline.settings.server
        self.result.model = request.model
        models = self._pipeline.router.models()
        if request.model not in models:
            known = ", ".join(models) or "none yet"
            raise InvalidArgument(
                f"model: unknown model {request.model!r}; available: {known}",
                details=[bad_request("model", "unknown model; call ListModels")],
            )
        if request.prompt is not None:
            prompt_tokens = count_tokens(request.prompt)
        else:
            prompt_tokens = count_chat_tokens(request.texts)
        if prompt_tokens > settings.max_prompt_tokens:
            raise InvalidArgument(
                f"the input is about {prompt_tokens} tokens; the limit is "
                f"{settings.max_prompt_tokens}: shorten it",
                details=[bad_request("prompt", "too many tokens")],
            )
        max_tokens = request.max_tokens or settings.default_max_tokens
        self.admitted = Admitted(request, prompt_tokens, max_tokens)
        return self.admitted

    async def generate(self) -> AsyncIterator[StreamChunk]:
        """Route to a worker and relay its tokens as they come."""
        admitted = self.admitted
        assert admitted is not None, "admit() first"
        call = WorkerCall(
            message=_worker_message(self.result.request_id, admitted),
            allowed_pools=admitted.allowed_pools,
            deadline=self._deadline(),
            priority=admitted.priority,
            affinity_key=admitted.request.affinity_key,
            department=admitted.department,
        )
        result = self.result
        async for message in self._pipeline.router.generate(call, self.route):
            if message.prompt_tokens:
                result.prompt_tokens = message.prompt_tokens
            if message.token_count:
                if not result.completion_tokens:
                    result.time_to_first_token_ms = (time.monotonic() - self._started) * 1000
                result.completion_tokens += message.token_count
                yield StreamChunk(message.text, message.token_count)
            if message.finish_reason:
                result.finish_reason = _FINISH_FROM_WORKER[message.finish_reason]
                result.completion_tokens = message.completion_tokens or result.completion_tokens

    def _deadline(self) -> float | None:
        remaining = self._context.time_remaining()
        if remaining is None:
            return None
        if remaining <= DEADLINE_MARGIN_S:
            raise DeadlineExceeded("the deadline passed before a worker could be called")
        return time.monotonic() + remaining - DEADLINE_MARGIN_S


def _worker_message(request_id: str, admitted: Admitted) -> wpb.GenerateRequest:
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
        model=request.model,
        sampling=sampling,
        cache_salt=admitted.cache_salt,
        priority=admitted.priority,
    )
    if request.prompt is not None:
        message.prompt = request.prompt
    else:
        message.chat.messages.extend(
            wpb.ChatMessage(role=_ROLE_VALUES[m.role], content=m.content) for m in request.messages
        )
    return message


__all__ = ["Admitted", "Exchange", "GatewayError", "Pipeline"]
