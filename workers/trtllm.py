"""The `trtllm` engine: TensorRT-LLM's LLM API (in-flight batching, streaming, abort) on a GPU.

Written against tensorrt-llm 1.2 (the `[trtllm]` extra pins 1.2.0), NVIDIA/TensorRT-LLM:
- `tensorrt_llm/llmapi/llm.py`: `class LLM(_TorchLLM)` (PyTorch backend by default);
  `BaseLLM.__init__(model, tokenizer=None, ..., tensor_parallel_size=1, dtype="auto", **kwargs)`
  rejects unknown kwargs with ValueError ("got invalid argument"); `BaseLLM.generate_async(inputs,
  sampling_params=None, ..., streaming=False, ..., scheduling_params=None, cache_salt=None)` raises
  `RuntimeError("LLM is shutting down")` when `self._executor` is gone and ValueError from
  `_check_arguments` (prompt longer than `max_num_tokens`); `BaseLLM.get_stats_async(timeout=2)`
  returns `self._executor.aget_stats(timeout)`; `BaseLLM.tokenizer` (None with
  `skip_tokenizer_init`); `BaseLLM.shutdown()`.
- `tensorrt_llm/executor/result.py`: `CompletionOutput.text_diff` / `token_ids_diff` (what arrived
  since the previous step), `finish_reason` in `stop | length | timeout | cancelled`;
  `GenerationResult.prompt_token_ids`, `.finished`, `.abort()` (`executor.abort_request`; the final
  response then carries `finish_reason == "cancelled"`), `__aiter__` / `__anext__` (one step per
  response, StopAsyncIteration once done); `IterationResult.__anext__` yields `json.loads` of one
  iteration record and stops after `timeout` seconds without one.
- `tensorrt_llm/executor/executor.py`: `GenerationExecutor.aget_stats` returns an empty async
  iterable until the first request has been submitted.
- `tensorrt_llm/_torch/pyexecutor/py_executor.py`: `_update_iter_stats` fills
  `numActiveRequests`, `numQueuedRequests`, `kvCacheStats.{maxNumBlocks,freeNumBlocks,
  usedNumBlocks}`; iteration statistics exist only with `enable_iter_perf_stats=True`
  (`TorchLlmArgs`, `tensorrt_llm/llmapi/llm_args.py`).
- `tensorrt_llm/llmapi/llm_args.py`: `KvCacheConfig(free_gpu_memory_fraction=...,
  enable_block_reuse=True)` (strict pydantic model); `max_batch_size`.
- `tensorrt_llm/sampling_params.py`: `@dataclass(slots=True, kw_only=True) class SamplingParams`
  with `max_tokens` (default 32), `temperature`, `top_p`, `top_k`, `seed`, `stop`,
  `add_special_tokens` (default True); none of temperature/top_p/top_k set means greedy
  (`params_imply_greedy_decoding`); `_validate` raises ValueError for out-of-range values.
- `tensorrt_llm/llmapi/tokenizer.py`: `TransformersTokenizer.apply_chat_template(conversation,
  *args, **kwargs)` forwards to Hugging Face's `apply_chat_template(conversation, ...,
  add_generation_prompt=False, tokenize=True, ...)`. `tensorrt_llm/serve/openai_protocol.py`
  (`ChatCompletionRequest.add_special_tokens`, default False) is why chat prompts are submitted
  with `add_special_tokens=False`: the template already holds the BOS token.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncGenerator
from pathlib import Path
from types import ModuleType
from typing import Any

from prometheus_client import Counter

from common.types import FinishReason
from workers.engine import (
    EngineChunk,
    EngineError,
    EngineLoad,
    EngineRequest,
    EngineUnavailable,
    InvalidEngineRequest,
    UnsupportedModel,
)
from workers.trtllm_api import LLM, RequestOutput
from workers.trtllm_load import LoadTracker, poll_iteration_stats
from workers.trtllm_options import TrtLlmOptions

_log = logging.getLogger(__name__)

SUPPORTED_VERSION_PREFIX = "1.2."
INSTALL_HINT = (
    "the trtllm engine needs TensorRT-LLM, which is not installed: run "
    "`pip install 'llm-gateway[trtllm]'` (tensorrt-llm 1.2.0) on a machine with an NVIDIA GPU "
    "and CUDA, or start the worker with `--engine sim`"
)

ABORTS = Counter(
    "llmgw_trtllm_aborts_total",
    "TensorRT-LLM requests aborted before they finished (the consumer left, or the engine closed).",
)

_FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "timeout": FinishReason.TIMEOUT,
    "cancelled": FinishReason.CANCELLED,
}


class TrtLlmNotInstalled(ImportError):
    """`tensorrt_llm` cannot be imported; the message says how to install it."""


def _import_tensorrt_llm() -> tuple[ModuleType, ModuleType]:
    try:
        trtllm = importlib.import_module("tensorrt_llm")
        llmapi = importlib.import_module("tensorrt_llm.llmapi")
    except ImportError as err:
        raise TrtLlmNotInstalled(INSTALL_HINT) from err
    version = str(getattr(trtllm, "__version__", "unknown"))
    if not version.startswith(SUPPORTED_VERSION_PREFIX):
        # Signatures move between 1.x releases; say so before a call fails far from here.
        _log.warning(
            "tensorrt_llm %s is installed; this engine was written against %sx",
            version,
            SUPPORTED_VERSION_PREFIX,
        )
    return trtllm, llmapi


def _finish_reason(raw: str | None) -> FinishReason:
    reason = _FINISH_REASONS.get(raw or "")
    if reason is None:
        # A finished output without a known reason (e.g. disaggregated `not_finished`) ended
        # normally as far as this worker can tell.
        _log.warning("TensorRT-LLM reported an unknown finish reason %r; reporting stop", raw)
        return FinishReason.STOP
    return reason


def _abort(output: RequestOutput) -> None:
    ABORTS.inc()
    try:
        output.abort()
    except Exception:
        # abort() reaches into the executor, which may be the thing that just failed; the
        # original error (or the consumer's cancellation) is what must propagate.
        _log.warning("aborting a TensorRT-LLM request failed", exc_info=True)


class TrtLlmEngine:
    """The `Engine` over one TensorRT-LLM `LLM`.

    Construction imports `tensorrt_llm` (raising `TrtLlmNotInstalled` when it is missing);
    `start()` loads the model and starts the statistics reader; `generate()` streams one request
    and aborts it in TensorRT-LLM the moment its consumer leaves (cancelled or `aclose()`);
    `load()` reports iteration statistics while they are fresh and the engine's own in-flight
    count otherwise; `close()` aborts what is running and shuts the `LLM` down.
    """

    kind = "trtllm"

    def __init__(self, options: TrtLlmOptions) -> None:
        if not Path(options.model_path).is_dir():
            # A name that is not a local directory would make TensorRT-LLM download it from the
            # Hugging Face Hub: off this country's infrastructure, so refuse.
            raise ValueError(
                f"trtllm.model_path: {options.model_path!r} is not a directory; pass a local "
                "model directory (the worker never downloads models)"
            )
        self._options = options
        self._trtllm, self._llmapi = _import_tensorrt_llm()
        self.models: tuple[str, ...] = (options.model_name,)
        self._llm: LLM | None = None
        self._tracker = LoadTracker(
            options.max_batch_size, stale_after_s=options.stats_stale_after_s
        )
        self._stats_task: asyncio.Task[None] | None = None
        self._stats_stop = asyncio.Event()
        # Keyed by object identity: request ids come from callers and may repeat.
        self._running: dict[int, RequestOutput] = {}

    @classmethod
    def from_options(
        cls,
        model_path: str,
        *,
        served_model_name: str | None,
        max_batch_size: int,
        kv_cache_free_gpu_memory_fraction: float,
        tensor_parallel_size: int,
    ) -> TrtLlmEngine:
        """The engine for `llm-worker serve --engine trtllm --model PATH`."""
        return cls(
            TrtLlmOptions(
                model_path=model_path,
                served_model_name=served_model_name,
                max_batch_size=max_batch_size,
                kv_cache_free_gpu_memory_fraction=kv_cache_free_gpu_memory_fraction,
                tensor_parallel_size=tensor_parallel_size,
            )
        )

    async def start(self) -> None:
        """Load the model (minutes on a GPU) and start reading iteration statistics."""
        if self._llm is not None:
            return
        opts = self._options
        kv_cache_config = self._llmapi.KvCacheConfig(
            free_gpu_memory_fraction=opts.kv_cache_free_gpu_memory_fraction,
            enable_block_reuse=True,
        )
        # Built on the event loop's thread on purpose: the LLM spawns its executor processes
        # and registers process-wide handlers, as TensorRT-LLM's own servers do at start-up,
        # and the worker serves nothing before start() returns.
        llm: LLM = self._trtllm.LLM(
            model=opts.model_path,
            tensor_parallel_size=opts.tensor_parallel_size,
            kv_cache_config=kv_cache_config,
            max_batch_size=opts.max_batch_size,
            enable_iter_perf_stats=True,
        )
        self._llm = llm
        self._stats_stop = asyncio.Event()
        self._stats_task = asyncio.create_task(
            poll_iteration_stats(
                llm,
                self._tracker,
                timeout_s=opts.stats_timeout_s,
                idle_interval_s=opts.stats_idle_interval_s,
                stop=self._stats_stop,
            ),
            name="trtllm-stats",
        )

    async def close(self) -> None:
        """Abort running requests, stop the statistics reader and shut the LLM down."""
        for output in list(self._running.values()):
            _abort(output)
        if self._stats_task is not None:
            self._stats_stop.set()
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
            self._stats_task = None
        llm, self._llm = self._llm, None
        if llm is not None:
            # shutdown() joins the executor's processes: keep the event loop responsive.
            await asyncio.to_thread(llm.shutdown)

    def load(self) -> EngineLoad:
        """The current load; cheap, no call into TensorRT-LLM."""
        return self._tracker.load()

    async def generate(self, request: EngineRequest) -> AsyncGenerator[EngineChunk, None]:
        """Stream one generation; leaving the iteration early aborts it in TensorRT-LLM."""
        llm = self._llm
        if llm is None:
            raise EngineUnavailable(
                "the trtllm engine is not started or already closed: retry on another worker"
            )
        if request.model not in self.models:
            raise UnsupportedModel(
                f"model {request.model!r} is not served by this worker (it serves "
                f"{self.models[0]!r})"
            )
        if request.max_tokens < 1:
            raise InvalidEngineRequest("max_tokens must be at least 1")
        prompt, chat = self._prompt(llm, request)
        params = self._sampling_params(request, chat=chat)
        try:
            output = llm.generate_async(
                prompt, params, streaming=True, cache_salt=request.cache_salt
            )
        except RuntimeError as err:
            raise EngineUnavailable(
                "the TensorRT-LLM engine is shutting down: retry on another worker"
            ) from err
        except ValueError as err:
            # _check_arguments: the prompt does not fit the engine's token limits.
            raise InvalidEngineRequest(
                "the request does not fit this model's limits (prompt plus max_tokens too long "
                "for the engine): shorten the prompt or lower max_tokens"
            ) from err
        # Everything from here runs in this one generator so that the consumer's aclose() or
        # cancellation reaches the finally block at once (a nested generator would be closed
        # only when garbage collected).
        self._tracker.request_started()
        self._running[id(output)] = output
        done = False
        try:
            prompt_tokens = len(output.prompt_token_ids)
            async for step in output:
                completion = step.outputs[0]
                text = completion.text_diff
                count = len(completion.token_ids_diff)
                if step.finished:
                    # Set before the last yield: a consumer closing right after the final
                    # chunk leaves nothing to abort.
                    done = True
                    yield EngineChunk(
                        text=text,
                        token_count=count,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=len(completion.token_ids),
                        finish_reason=_finish_reason(completion.finish_reason),
                    )
                    return
                if text or count:
                    yield EngineChunk(text=text, token_count=count, prompt_tokens=prompt_tokens)
            raise EngineError("TensorRT-LLM ended a stream without a final output")
        except RuntimeError as err:
            # The executor failed under this request (its RequestError is a RuntimeError).
            raise EngineUnavailable(
                "the TensorRT-LLM engine failed during generation: retry on another worker"
            ) from err
        finally:
            self._running.pop(id(output), None)
            self._tracker.request_ended()
            if not done:
                # The consumer left (cancelled, aclose, or an error above): free the batch slot
                # and the KV-cache blocks now instead of generating for nobody.
                _abort(output)

    def _prompt(self, llm: LLM, request: EngineRequest) -> tuple[str, bool]:
        """The prompt text and whether it came from the chat template."""
        if request.prompt is not None:
            return request.prompt, False
        if not request.messages:
            raise InvalidEngineRequest("the request has neither a prompt nor chat messages")
        tokenizer = llm.tokenizer
        if tokenizer is None:
            raise InvalidEngineRequest(
                "this worker's model has no tokenizer, so it cannot render chat messages: "
                "send a plain prompt"
            )
        conversation = [{"role": m.role, "content": m.content} for m in request.messages]
        try:
            rendered = tokenizer.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=True
            )
        except ValueError as err:
            # Hugging Face raises ValueError when the tokenizer has no chat template.
            raise InvalidEngineRequest(
                "this worker's model has no chat template: send a plain prompt"
            ) from err
        if not isinstance(rendered, str):
            raise EngineError("the chat template did not render to text")
        return rendered, True

    def _sampling_params(self, request: EngineRequest, *, chat: bool) -> Any:
        # Only what the caller set is passed: an unset temperature/top_p/top_k must stay None
        # for TensorRT-LLM to decode greedily.
        kwargs: dict[str, object] = {"max_tokens": request.max_tokens}
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.top_p is not None:
            kwargs["top_p"] = request.top_p
        if request.top_k is not None:
            kwargs["top_k"] = request.top_k
        if request.seed is not None:
            kwargs["seed"] = request.seed
        if request.stop:
            kwargs["stop"] = list(request.stop)
        if chat:
            kwargs["add_special_tokens"] = False
        try:
            return self._trtllm.SamplingParams(**kwargs)
        except ValueError as err:
            raise InvalidEngineRequest(
                "a sampling parameter is out of range (temperature >= 0, 0 <= top_p <= 1, "
                "top_k >= 0): correct it and retry"
            ) from err
