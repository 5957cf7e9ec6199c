"""A test double of `tensorrt_llm` 1.2: exactly the LLM API surface `workers.trtllm` uses.

Loaded by the tests under the name `tensorrt_llm` (never installed, never importable by the
product). Token model: the prompt is tokenized as one token per whitespace-separated word plus a
BOS token when `add_special_tokens`; output token i has id 1000 + i and text " w{i}". One output
token per step, `behaviour.token_delay_s` apart; at most `max_batch_size` requests generate at
once, the rest wait in a queue. Everything the engine passes is recorded for assertions.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

__version__ = "1.2.0"

_LLM_ARGS = {"kv_cache_config", "max_batch_size", "enable_iter_perf_stats"}
TOKENS_PER_BLOCK = 4
MAX_BLOCKS = 64


@dataclass
class Behaviour:
    """Knobs the tests turn; module-level so that the engine's own `LLM(...)` call picks them up."""

    token_delay_s: float = 0.005
    eos_after: int | None = None
    chat_template: str | None = "default"
    fail_after: int | None = None


behaviour = Behaviour()
instances: list[LLM] = []


@dataclass(kw_only=True)
class SamplingParams:
    """`tensorrt_llm.sampling_params.SamplingParams` (kw-only dataclass: unknown names raise)."""

    end_id: int | None = None
    max_tokens: int = 32
    stop: str | list[str] | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    temperature: float | None = None
    add_special_tokens: bool = True

    def __post_init__(self) -> None:
        if self.top_p is not None and not 0 <= self.top_p <= 1:
            raise ValueError(f"require 0 <= top_p <= 1, got top_p={self.top_p}")
        if self.temperature is not None and self.temperature < 0:
            raise ValueError(f"require temperature >= 0, got temperature={self.temperature}")


@dataclass(kw_only=True)
class KvCacheConfig:
    """`tensorrt_llm.llmapi.KvCacheConfig` (strict: unknown names raise)."""

    enable_block_reuse: bool = True
    free_gpu_memory_fraction: float | None = None


@dataclass
class CompletionOutput:
    """`tensorrt_llm.executor.result.CompletionOutput` with its diff views."""

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: str | None = None
    _last_text_len: int = 0
    _last_token_ids_len: int = 0

    @property
    def text_diff(self) -> str:
        return self.text[self._last_text_len :]

    @property
    def token_ids_diff(self) -> list[int]:
        return self.token_ids[self._last_token_ids_len :]


class RequestOutput:
    """`tensorrt_llm.llmapi.RequestOutput`: updated in place by each `__anext__` step."""

    def __init__(
        self, llm: LLM, request_id: int, prompt: str, prompt_token_ids: list[int], stops: list[str]
    ) -> None:
        self._llm = llm
        self._stops = stops
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.outputs = [CompletionOutput(0)]
        self._done = False
        self._aborted = False
        # Steps: (token id or None, finish reason or None); None token means "no new token".
        self._steps: asyncio.Queue[tuple[int | None, str | None] | BaseException] = asyncio.Queue()

    @property
    def finished(self) -> bool:
        return self._done

    def abort(self) -> None:
        self._llm.aborted_ids.append(self.request_id)
        self._aborted = True
        self._llm._cancel(self)

    def aborted(self) -> bool:
        return self._aborted

    def __aiter__(self) -> RequestOutput:
        return self

    async def __anext__(self) -> RequestOutput:
        if self._done:
            raise StopAsyncIteration
        step = await self._steps.get()
        if isinstance(step, BaseException):
            raise step
        token, reason = step
        out = self.outputs[0]
        out._last_text_len = len(out.text)
        out._last_token_ids_len = len(out.token_ids)
        if token is not None:
            out.token_ids.append(token)
            out.text += f" w{token - 1000}"
        if reason == "stop":
            # Like DetokenizedGenerationResultBase: the stop string is cut from the text.
            for stop in self._stops:
                if stop in out.text:
                    out.text = out.text[: out.text.find(stop)]
                    out.stop_reason = stop
        if reason is not None:
            out.finish_reason = reason
            self._done = True
        return self


class Tokenizer:
    """The `TransformersTokenizer` wrapper: only `apply_chat_template`, recording its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[dict[str, str]], dict[str, Any]]] = []

    def apply_chat_template(
        self, conversation: list[dict[str, str]], *args: Any, **kwargs: Any
    ) -> str | list[int]:
        self.calls.append((conversation, dict(kwargs)))
        if behaviour.chat_template is None:
            raise ValueError(
                "Cannot use chat template functions because tokenizer.chat_template "
                "is not set and no template argument was passed!"
            )
        rendered = "<s>" + "".join(f"<|{m['role']}|> {m['content']} " for m in conversation)
        if kwargs.get("add_generation_prompt", False):
            rendered += "<|assistant|>"
        if kwargs.get("tokenize", True):
            return list(range(len(rendered.split())))
        return rendered


class IterationResult:
    """`tensorrt_llm.executor.result.IterationResult`: JSON records, ends after `timeout` idle."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self._timeout = 2.0
        self._done = False

    def set_timeout(self, timeout: float) -> None:
        self._timeout = timeout

    def mark_undone(self) -> None:
        self._done = False

    def __aiter__(self) -> IterationResult:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._done:
            raise StopAsyncIteration
        try:
            async with asyncio.timeout(self._timeout):
                data = await self.queue.get()
        except TimeoutError:
            self._done = True
            raise StopAsyncIteration from None
        parsed: dict[str, Any] = json.loads(data)
        return parsed


async def _empty() -> AsyncIterator[dict[str, Any]]:
    return
    yield  # pragma: no cover


class LLM:
    """`tensorrt_llm.LLM`: in-flight batching over `max_batch_size` slots, streaming, abort."""

    def __init__(
        self,
        model: str,
        tokenizer: object | None = None,
        tokenizer_mode: str = "auto",
        skip_tokenizer_init: bool = False,
        trust_remote_code: bool = False,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        **kwargs: Any,
    ) -> None:
        for key in kwargs:
            if key not in _LLM_ARGS:
                raise ValueError(f"LLM got invalid argument: {key}")
        self.model = model
        self.tensor_parallel_size = tensor_parallel_size
        self.kwargs = kwargs
        self.max_batch_size: int = kwargs.get("max_batch_size") or 2048
        self._tokenizer = None if skip_tokenizer_init else Tokenizer()
        self._shutdown = False
        self._next_id = 0
        self.submitted: list[dict[str, Any]] = []
        self.aborted_ids: list[int] = []
        self.stats_timeouts: list[float] = []
        self.shutdown_calls = 0
        self._active: dict[int, RequestOutput] = {}
        self._queued: list[RequestOutput] = []
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._slot_free = asyncio.Condition()
        self._stats: IterationResult | None = None
        # The real LLM is built on the event loop's thread; shutdown() may come from another.
        self._loop = asyncio.get_running_loop()
        instances.append(self)

    @property
    def tokenizer(self) -> Tokenizer | None:
        return self._tokenizer

    def generate_async(
        self,
        inputs: str,
        sampling_params: SamplingParams | None = None,
        lora_request: object | None = None,
        prompt_adapter_request: object | None = None,
        streaming: bool = False,
        kv_cache_retention_config: object | None = None,
        disaggregated_params: object | None = None,
        _postproc_params: object | None = None,
        scheduling_params: object | None = None,
        cache_salt: str | None = None,
    ) -> RequestOutput:
        if self._shutdown:
            raise RuntimeError("LLM is shutting down")
        params = sampling_params or SamplingParams()
        words = inputs.split()
        prompt_ids = ([1] if params.add_special_tokens else []) + [
            10 + i for i in range(len(words))
        ]
        self.submitted.append(
            {"prompt": inputs, "params": params, "streaming": streaming, "cache_salt": cache_salt}
        )
        self._next_id += 1
        stops = [params.stop] if isinstance(params.stop, str) else list(params.stop or [])
        output = RequestOutput(self, self._next_id, inputs, prompt_ids, stops)
        self._queued.append(output)
        if self._stats is None:
            self._stats = IterationResult()
        self._stats.mark_undone()
        self._tasks[output.request_id] = self._loop.create_task(self._run(output, params))
        return output

    async def _run(self, output: RequestOutput, params: SamplingParams) -> None:
        async with self._slot_free:
            await self._slot_free.wait_for(
                lambda: len(self._active) < self.max_batch_size and self._queued[0] is output
            )
            self._queued.remove(output)
            self._active[output.request_id] = output
            self._slot_free.notify_all()
        text = ""
        stops = output._stops
        for i in range(params.max_tokens):
            await asyncio.sleep(behaviour.token_delay_s)
            if behaviour.fail_after is not None and i >= behaviour.fail_after:
                self._finish(output, RuntimeError("executor failed: CUDA error"))
                return
            text += f" w{i}"
            if any(stop in text for stop in stops):
                self._finish(output, (1000 + i, "stop"))
                return
            if behaviour.eos_after is not None and i + 1 >= behaviour.eos_after:
                self._finish(output, (1000 + i, "stop"))
                return
            last = i + 1 == params.max_tokens
            self._push_stats()
            if last:
                self._finish(output, (1000 + i, "length"))
                return
            output._steps.put_nowait((1000 + i, None))

    def _finish(
        self, output: RequestOutput, step: tuple[int | None, str | None] | BaseException
    ) -> None:
        self._release(output)
        output._steps.put_nowait(step)

    def _release(self, output: RequestOutput) -> None:
        self._active.pop(output.request_id, None)
        if output in self._queued:
            self._queued.remove(output)
        self._tasks.pop(output.request_id, None)
        self._push_stats()

        async def notify() -> None:
            async with self._slot_free:
                self._slot_free.notify_all()

        self._loop.create_task(notify())

    def _cancel(self, output: RequestOutput) -> None:
        task = self._tasks.get(output.request_id)
        if task is None:
            return
        task.cancel()
        self._release(output)
        output._steps.put_nowait((None, "cancelled"))

    def _push_stats(self) -> None:
        if self._stats is None or not self.kwargs.get("enable_iter_perf_stats"):
            return
        used = sum(
            -(-(len(o.prompt_token_ids) + len(o.outputs[0].token_ids)) // TOKENS_PER_BLOCK)
            for o in self._active.values()
        )
        record = {
            "numActiveRequests": len(self._active),
            "numQueuedRequests": len(self._queued),
            "maxNumActiveRequests": self.max_batch_size,
            "kvCacheStats": {
                "maxNumBlocks": MAX_BLOCKS,
                "freeNumBlocks": MAX_BLOCKS - used,
                "usedNumBlocks": used,
                "tokensPerBlock": TOKENS_PER_BLOCK,
            },
        }
        self._stats.queue.put_nowait(json.dumps(record))

    def get_stats_async(self, timeout: float = 2) -> AsyncIterator[dict[str, Any]]:
        self.stats_timeouts.append(timeout)
        if self._stats is None:
            return _empty()
        self._stats.set_timeout(timeout)
        return self._stats

    @property
    def active_ids(self) -> set[int]:
        """Requests holding a batch slot now."""
        return set(self._active)

    def shutdown(self) -> None:
        self._shutdown = True
        self.shutdown_calls += 1
        self._loop.call_soon_threadsafe(self._cancel_all)

    def _cancel_all(self) -> None:
        for output in list(self._active.values()) + list(self._queued):
            self._cancel(output)
