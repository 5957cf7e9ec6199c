"""A test double of `tensorrt_llm` 1.2: exactly the LLM API surface `workers.trtllm` uses.

Loaded by the tests under the name `tensorrt_llm` (never installed, never importable by the
product). Token model: the prompt is one token per whitespace-separated word plus a BOS token when
`add_special_tokens`; output token id 1000 + n has the text " w{n}" (greedy decoding yields n = 0,
1, 2, ...). One output token per step, `behaviour.token_delay_s` apart; at most `max_batch_size`
requests generate at once, the rest wait. Each behaviour follows the upstream function named in
its comment (NVIDIA/TensorRT-LLM, v1.2.0). Everything the engine passes is recorded.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from tensorrt_llm.executor.utils import RequestError

__version__ = "1.2.0"

_TORCH_ARGS = {
    "kv_cache_config",
    "max_batch_size",
    "max_num_tokens",
    "max_seq_len",
    "enable_iter_perf_stats",
    "sampler_type",
}
# TrtLlmArgs (llm_args.py) has neither enable_iter_perf_stats nor sampler_type (PyTorch only).
_TRT_ARGS = {"kv_cache_config", "max_batch_size", "max_num_tokens", "max_seq_len"}
TOKENS_PER_BLOCK = 4
MAX_BLOCKS = 64
# BaseLlmArgs.max_num_tokens defaults to 8192 (llm_args.py).
DEFAULT_MAX_NUM_TOKENS = 8192


@dataclass
class Behaviour:
    """Knobs the tests turn; module-level so that the engine's own `LLM(...)` call picks them up.

    `fail_after` makes the executor fail fatally at that step with `fail_with()` (any type, as
    `GenerationExecutor._handle_background_error` re-raises whatever the worker raised);
    `model_max_seq_len` is the checkpoint's context length, used when `max_seq_len` is not passed.
    """

    token_delay_s: float = 0.005
    eos_after: int | None = None
    chat_template: str | None = "default"
    fail_after: int | None = None
    fail_with: Callable[[], BaseException] = lambda: KeyError("cuda stream 7")
    model_max_seq_len: int = 2048


behaviour = Behaviour()
instances: list[LLM] = []


def _detokenize(token_ids: list[int]) -> str:
    return "".join(f" w{token - 1000}" for token in token_ids)


def _stop_word_ids(stop: str) -> list[int] | None:
    """The ids of `stop` in the output vocabulary; None when it has a word outside it."""
    ids = []
    for word in stop.split():
        if not (word.startswith("w") and word[1:].isdigit()):
            return None
        ids.append(1000 + int(word[1:]))
    return ids or None


@dataclass(kw_only=True)
class SamplingParams:
    """`tensorrt_llm.sampling_params.SamplingParams` (kw-only dataclass: unknown names raise)."""

    end_id: int | None = None
    max_tokens: int = 32
    stop: str | list[str] | None = None
    include_stop_str_in_output: bool = False
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

    def stop_words(self) -> list[tuple[str, list[int]]]:
        """`SamplingParams._get_stop_reasons_and_words`: each stop string with its token ids."""
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [(s, ids) for s in stops if (ids := _stop_word_ids(s)) is not None]


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


Step = tuple[int | None, str | None] | BaseException


class RequestOutput:
    """`tensorrt_llm.llmapi.RequestOutput`: updated in place by each `__anext__` step."""

    def __init__(
        self, llm: LLM, request_id: int, prompt: str, ids: list[int], params: SamplingParams
    ) -> None:
        self._llm = llm
        self._params = params
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = ids
        self.outputs = [CompletionOutput(0)]
        self._done = False
        self._aborted = False
        self.fetched = False  # seen by an executor iteration (left the incoming queue)
        self._steps: asyncio.Queue[Step] = asyncio.Queue()

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
        if reason == "stop" and not self._params.include_stop_str_in_output:
            # GenerationResultBase._handle_sequence (executor/result.py): a stop word's tokens
            # are cut from token_ids; the text is detokenized from what remains, so text and
            # token diffs of this last step can be empty although the step added a token.
            for stop, ids in self._params.stop_words():
                if out.token_ids[-len(ids) :] == ids:
                    out.stop_reason = stop
                    out.token_ids = out.token_ids[: -len(ids)]
                    break
        out.text = _detokenize(out.token_ids)
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


@dataclass
class Args:
    """`BaseLLM.args` (the resolved `TorchLlmArgs` / `TrtLlmArgs`): what the engine reads."""

    max_seq_len: int
    max_num_tokens: int


class LLM:
    """`tensorrt_llm.LLM` (PyTorch backend): in-flight batching, streaming, abort, stats."""

    backend = "pytorch"
    _known_args = _TORCH_ARGS

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
            if key not in self._known_args:
                raise ValueError(f"LLM got invalid argument: {key}")
        self.model = model
        self.trust_remote_code = trust_remote_code
        self.tensor_parallel_size = tensor_parallel_size
        self.kwargs = kwargs
        self.max_batch_size: int = kwargs.get("max_batch_size") or 2048
        self.args = Args(
            max_seq_len=kwargs.get("max_seq_len") or behaviour.model_max_seq_len,
            max_num_tokens=kwargs.get("max_num_tokens") or DEFAULT_MAX_NUM_TOKENS,
        )
        self.sampler_type = kwargs.get("sampler_type", "auto")
        # TorchLlmArgs.enable_iter_perf_stats defaults to False; the TensorRT executor always
        # keeps iteration statistics (iter_stats_max_iterations).
        self._stats_enabled = self.backend == "tensorrt" or bool(
            kwargs.get("enable_iter_perf_stats")
        )
        # TorchSampler.get_generator (_torch/pyexecutor/sampler.py): one generator, seeded once
        # with a fixed seed, shared by every request; SamplingParams.seed never reaches it.
        self._torch_generator = random.Random(0)
        self._tokenizer = None if skip_tokenizer_init else Tokenizer()
        self._shutdown = False
        self._next_id = 0
        self.submitted: list[dict[str, Any]] = []
        self.aborted_ids: list[int] = []
        self.stats_timeouts: list[float] = []
        self.shutdown_calls = 0
        self._active: dict[int, RequestOutput] = {}
        self._waiting: list[RequestOutput] = []
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._slot_free = asyncio.Condition()
        self._stats: IterationResult | None = None
        # The real LLM is built on the event loop's thread; shutdown() may come from another.
        self._loop = asyncio.get_running_loop()
        instances.append(self)

    @property
    def tokenizer(self) -> Tokenizer | None:
        return self._tokenizer

    def _check_arguments(self, prompt_len: int, params: SamplingParams) -> None:
        """`BaseLLM._check_arguments` (llmapi/llm.py), PyTorch backend without chunked prefill."""
        if prompt_len > self.args.max_num_tokens:
            raise ValueError(
                f"The sum of prompt length ({prompt_len}), query length (0) should not exceed "
                f"max_num_tokens ({self.args.max_num_tokens})"
            )

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
        bos = [1] if params.add_special_tokens else []
        prompt_ids = bos + [10 + i for i in range(len(words))]
        self._check_arguments(len(prompt_ids), params)
        self.submitted.append(
            {"prompt": inputs, "params": params, "streaming": streaming, "cache_salt": cache_salt}
        )
        self._next_id += 1
        output = RequestOutput(self, self._next_id, inputs, prompt_ids, params)
        self._waiting.append(output)
        if self._stats is None:
            self._stats = IterationResult()
        self._stats.mark_undone()
        self._tasks[output.request_id] = self._loop.create_task(self._run(output, params))
        return output

    def _deduce_max_tokens(self, output: RequestOutput, params: SamplingParams) -> int:
        """`BaseWorker._enqueue_request._deduce_max_tokens` (executor/base_worker.py)."""
        default_max_tokens = self.args.max_seq_len - len(output.prompt_token_ids)
        if default_max_tokens <= 0:
            raise ValueError(
                f"`default_max_tokens` ({default_max_tokens}) must be greater than 0, "
                f"`default_max_tokens` ({default_max_tokens}) = max_seq_len "
                f"({self.args.max_seq_len}) - `splited_prompt_len` "
                f"({len(output.prompt_token_ids)}) - `query_token_len` (0)"
            )
        # "User-specified `max_tokens` is greater than deduced `default_max_tokens`, using
        # default_max_tokens instead": lowered with a log warning, never reported.
        return min(params.max_tokens, default_max_tokens)

    def _rng(self, params: SamplingParams) -> random.Random | None:
        """None for greedy decoding; else the generator this backend's sampler uses."""
        if not params.temperature:
            return None
        if self.sampler_type == "TRTLLMSampler":
            return random.Random(params.seed or 0)  # the C++ sampler seeds per request
        return self._torch_generator

    async def _run(self, output: RequestOutput, params: SamplingParams) -> None:
        try:
            max_tokens = self._deduce_max_tokens(output, params)
        except Exception as err:  # _enqueue_request: any failure becomes a RequestError
            self._finish(output, RequestError(str(err)))
            return
        async with self._slot_free:
            await self._slot_free.wait_for(
                lambda: len(self._active) < self.max_batch_size and self._waiting[0] is output
            )
            self._waiting.remove(output)
            self._active[output.request_id] = output
            self._slot_free.notify_all()
        rng = self._rng(params)
        generated: list[int] = []
        stops = params.stop_words()
        for i in range(max_tokens):
            await asyncio.sleep(behaviour.token_delay_s)
            if behaviour.fail_after is not None and i >= behaviour.fail_after:
                self._fatal(output, behaviour.fail_with())
                return
            token = 1000 + (rng.randrange(50) if rng is not None else i)
            generated.append(token)
            # Stop words are matched on token ids by the executor, not on text.
            if any(generated[-len(ids) :] == ids for _, ids in stops):
                self._finish(output, (token, "stop"))
                return
            if behaviour.eos_after is not None and i + 1 >= behaviour.eos_after:
                self._finish(output, (token, "stop"))
                return
            self._push_stats()
            if i + 1 == max_tokens:
                self._finish(output, (token, "length"))
                return
            output._steps.put_nowait((token, None))

    def _fatal(self, output: RequestOutput, error: BaseException) -> None:
        """`GenerationExecutor._handle_background_error` (executor/executor.py): a fatal error
        shuts the executor down and is re-raised, whatever its type, to the caller that
        meets it; every other request then hears nothing more."""
        self._release(output)
        output._steps.put_nowait(error)
        self.shutdown()

    def _finish(self, output: RequestOutput, step: Step) -> None:
        self._release(output)
        output._steps.put_nowait(step)

    def _release(self, output: RequestOutput) -> None:
        self._active.pop(output.request_id, None)
        if output in self._waiting:
            self._waiting.remove(output)
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
        was_active = output.request_id in self._active
        task.cancel()
        self._release(output)
        # PyExecutor._handle_canceled_requests (_torch/pyexecutor/py_executor.py) answers only
        # requests that were already active; one still queued is dropped without a response.
        if was_active and not self._shutdown:
            output._steps.put_nowait((None, "cancelled"))

    def _push_stats(self) -> None:
        """`PyExecutor._update_iter_stats`: numQueuedRequests is the incoming request queue
        (`executor_request_queue.get_request_queue_size()`), which each iteration empties into
        the waiting list; requests waiting there for a batch slot are in neither count."""
        if self._stats is None or not self._stats_enabled:
            return
        incoming = [o for o in self._waiting if not o.fetched]
        for o in incoming:
            o.fetched = True
        used = sum(
            -(-(len(o.prompt_token_ids) + len(o.outputs[0].token_ids)) // TOKENS_PER_BLOCK)
            for o in self._active.values()
        )
        record = {
            "numActiveRequests": len(self._active),
            "numQueuedRequests": len(incoming),
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

    @property
    def waiting_count(self) -> int:
        """Requests submitted and waiting for a batch slot."""
        return len(self._waiting)

    def shutdown(self) -> None:
        """`BaseLLM.shutdown`: the executor stops; running requests get no final response."""
        if not self._shutdown:
            self.shutdown_calls += 1
        self._shutdown = True
        self._loop.call_soon_threadsafe(self._cancel_all)

    def _cancel_all(self) -> None:
        for output in list(self._active.values()) + list(self._waiting):
            self._cancel(output)


class TrtEngineLLM(LLM):
    """`tensorrt_llm._tensorrt_engine.LLM` over a prebuilt engine (TensorRT backend)."""

    backend = "tensorrt"
    _known_args = _TRT_ARGS

    def __init__(self, model: str, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        # _check_arguments reads the engine's own build_config.max_seq_len from config.json.
        with open(f"{model}/config.json", encoding="utf-8") as config:
            self.args.max_seq_len = json.load(config)["build_config"]["max_seq_len"]

    def _check_arguments(self, prompt_len: int, params: SamplingParams) -> None:
        """`BaseLLM._check_arguments`, TensorRT backend: prompt plus max_tokens must fit."""
        if prompt_len + (params.max_tokens or 0) > self.args.max_seq_len:
            raise ValueError(
                f"The sum of prompt length ({prompt_len}) and query length (0) max_tokens "
                f"({params.max_tokens}) should not exceed max_seq_len ({self.args.max_seq_len})"
            )

    def _rng(self, params: SamplingParams) -> random.Random | None:
        # The TensorRT runtime samples in C++ with per-request seeds.
        if not params.temperature:
            return None
        return random.Random(params.seed or 0)
