"""The `trtllm` engine: TensorRT-LLM's LLM API (in-flight batching, streaming, abort) on a GPU.

Written against tensorrt-llm 1.2 (the `[trtllm]` extra pins 1.2.0), NVIDIA/TensorRT-LLM:
- `tensorrt_llm/llmapi/llm.py`: `class LLM(_TorchLLM)` (PyTorch backend by default);
  `BaseLLM.__init__(model, tokenizer=None, ..., trust_remote_code=False, tensor_parallel_size=1,
  dtype="auto", **kwargs)` rejects unknown kwargs with ValueError ("got invalid argument");
  `BaseLLM.generate_async(inputs, sampling_params=None, ..., streaming=False, ...,
  scheduling_params=None, cache_salt=None)` raises `RuntimeError("LLM is shutting down")` when the
  executor is gone and ValueError from `_check_arguments`; `BaseLLM.get_stats_async(timeout=2)`;
  `BaseLLM.args` (the resolved llm args, with `max_seq_len`); `BaseLLM.tokenizer`;
  `BaseLLM.shutdown()`. `tensorrt_llm/_tensorrt_engine/__init__.py`: `LLM` over a prebuilt engine.
- `tensorrt_llm/executor/result.py`: `CompletionOutput.text`, `token_ids`, `text_diff` /
  `token_ids_diff` (what arrived since the previous step), `finish_reason` in `stop | length |
  timeout | cancelled`; `GenerationResult.prompt_token_ids`, `.finished`, `.abort()`, `__anext__`.
  An aborted request that was still queued, and every request when the executor shuts down, gets
  no final response (`PyExecutor._handle_canceled_requests`, `_torch/pyexecutor/py_executor.py`).
- `tensorrt_llm/executor/executor.py`: `GenerationExecutor._handle_background_error` shuts the
  executor down and re-raises a fatal error of whatever type the worker raised; per-request
  failures are `tensorrt_llm.executor.utils.RequestError` (see `workers/trtllm_errors.py`).
- `tensorrt_llm/_torch/pyexecutor/py_executor.py`: `_update_iter_stats` (see
  `workers/trtllm_load.py`); statistics exist only with `enable_iter_perf_stats=True`.
- `tensorrt_llm/llmapi/llm_args.py`: `KvCacheConfig(free_gpu_memory_fraction=...,
  enable_block_reuse=True)`; `max_batch_size`, `max_num_tokens`, `max_seq_len`;
  `TorchLlmArgs.sampler_type` (`TorchSampler` ignores `SamplingParams.seed`: one generator with a
  fixed seed, `TorchSampler.get_generator` in `_torch/pyexecutor/sampler.py`).
- `tensorrt_llm/sampling_params.py`: `SamplingParams` (kw-only) with `max_tokens`, `temperature`,
  `top_p`, `top_k`, `seed`, `stop`, `add_special_tokens`; none of temperature/top_p/top_k set
  means greedy; `_validate` raises ValueError for out-of-range values.
- `tensorrt_llm/llmapi/tokenizer.py`: `TransformersTokenizer.apply_chat_template` forwards to
  Hugging Face's. `tensorrt_llm/serve/openai_protocol.py` (`ChatCompletionRequest.
  add_special_tokens`, default False) is why chat prompts are submitted with
  `add_special_tokens=False`: the template already holds the BOS token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from common.types import FinishReason
from workers.engine import (
    REASON_CHAT_TEMPLATE,
    REASON_SAMPLING,
    REASON_SEED_UNSUPPORTED,
    EngineChunk,
    EngineError,
    EngineFailed,
    EngineLoad,
    EngineRequest,
    EngineUnavailable,
    InvalidEngineRequest,
    UnsupportedModel,
)
from workers.trtllm_api import LLM, RequestOutput
from workers.trtllm_errors import refused_at_submit, refused_in_executor
from workers.trtllm_install import TrtLlmNotInstalled, import_tensorrt_llm
from workers.trtllm_load import LoadTracker, poll_iteration_stats
from workers.trtllm_model import inspect_model_dir
from workers.trtllm_options import TrtLlmOptions
from workers.trtllm_stream import StopHoldback

__all__ = ["TrtLlmEngine", "TrtLlmNotInstalled"]

_log = logging.getLogger(__name__)

ABORTS = Counter(
    "llmgw_trtllm_aborts_total",
    "TensorRT-LLM requests aborted before they finished (the consumer left, or the engine closed).",
)
FATAL_ERRORS = Counter(
    "llmgw_trtllm_fatal_errors_total",
    "Fatal TensorRT-LLM executor errors; the worker stops serving and exits to be restarted.",
)

_FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "timeout": FinishReason.TIMEOUT,
    "cancelled": FinishReason.CANCELLED,
}


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


@dataclass(eq=False, slots=True)
class _Running:
    """One request in flight. `waiting` is the task blocked on its next step, if any: the one
    task `close()` or a fatal error may cancel, since TensorRT-LLM will never answer it."""

    output: RequestOutput
    waiting: asyncio.Task[Any] | None = None
    ended_by_engine: bool = False


class TrtLlmEngine:
    """The `Engine` over one TensorRT-LLM `LLM`.

    Construction checks the model directory and imports `tensorrt_llm` (raising
    `TrtLlmNotInstalled` when it is missing); `start()` loads the model and starts the statistics
    reader; `generate()` streams one request and aborts it the moment its consumer leaves;
    `load()` reports iteration statistics checked against the in-flight count; `close()` aborts
    what is running and shuts the `LLM` down. A request TensorRT-LLM refuses raises
    `InvalidEngineRequest` with a reason; any other executor error is fatal: the engine raises
    `EngineFailed` to every request in flight and to every later one.
    """

    kind = "trtllm"

    def __init__(self, options: TrtLlmOptions) -> None:
        self._model_dir = inspect_model_dir(options.model_path)
        self._options = options
        self._modules = import_tensorrt_llm()
        self.models: tuple[str, ...] = (options.model_name,)
        self._llm: LLM | None = None
        self._tracker = LoadTracker(
            options.max_batch_size, stale_after_s=options.stats_stale_after_s
        )
        self._stats_task: asyncio.Task[None] | None = None
        self._stats_stop = asyncio.Event()
        # Keyed by object identity: request ids come from callers and may repeat.
        self._running: dict[int, _Running] = {}
        self._failure: BaseException | None = None
        self._max_seq_len: int | None = None

    @property
    def failed(self) -> bool:
        """True once the executor failed fatally; the engine serves nothing more."""
        return self._failure is not None

    async def start(self) -> None:
        """Load the model (minutes on a GPU) and start reading iteration statistics."""
        if self._llm is not None:
            return
        opts = self._options
        kwargs: dict[str, object] = {
            "kv_cache_config": self._modules.llmapi.KvCacheConfig(
                free_gpu_memory_fraction=opts.kv_cache_free_gpu_memory_fraction,
                enable_block_reuse=True,
            ),
            "max_batch_size": opts.max_batch_size,
        }
        if opts.max_seq_len is not None:
            kwargs["max_seq_len"] = opts.max_seq_len
        if opts.max_num_tokens is not None:
            kwargs["max_num_tokens"] = opts.max_num_tokens
        if self._model_dir.prebuilt_engine:
            # TrtLlmArgs takes neither option: the TensorRT executor always keeps statistics
            # and samples in C++ with per-request seeds.
            factory: Callable[..., Any] = self._modules.load_engine_llm()
        else:
            factory = self._modules.trtllm.LLM
            kwargs["enable_iter_perf_stats"] = True
            kwargs["sampler_type"] = opts.sampler_type
        # Built on the event loop's thread on purpose: the LLM spawns its executor processes
        # and registers process-wide handlers, as TensorRT-LLM's own servers do at start-up,
        # and the worker serves nothing before start() returns.
        llm: LLM = factory(
            model=opts.model_path,
            trust_remote_code=opts.trust_remote_code,
            tensor_parallel_size=opts.tensor_parallel_size,
            **kwargs,
        )
        self._llm = llm
        self._max_seq_len = self._resolved_max_seq_len(llm)
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

    def _resolved_max_seq_len(self, llm: LLM) -> int | None:
        """The context limit: the setting, else what the LLM resolved, else the engine's."""
        if self._options.max_seq_len is not None:
            return self._options.max_seq_len
        resolved = getattr(getattr(llm, "args", None), "max_seq_len", None)
        if isinstance(resolved, int) and resolved > 0:
            return resolved
        return self._model_dir.engine_max_seq_len

    async def close(self) -> None:
        """Abort running requests, stop the statistics reader and shut the LLM down."""
        for running in list(self._running.values()):
            _abort(running.output)
        # TensorRT-LLM sends no final response after an abort of a queued request or on
        # shutdown: end the streams here instead of leaving their consumers waiting forever.
        self._end_streams()
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

    def _end_streams(self, keep: _Running | None = None) -> None:
        for running in list(self._running.values()):
            if running is keep:
                continue
            running.ended_by_engine = True
            if running.waiting is not None:
                running.waiting.cancel()

    def _fail(self, err: BaseException) -> EngineFailed:
        """Record a fatal executor error and end every other stream; the error to raise."""
        if self._failure is None:
            self._failure = err
            FATAL_ERRORS.inc()
            _log.critical("TensorRT-LLM failed fatally; this worker stops serving", exc_info=err)
        self._end_streams()
        return EngineFailed("the TensorRT-LLM executor failed; the worker must be restarted")

    def _ended_error(self) -> EngineError:
        if self._failure is not None:
            return EngineFailed("the TensorRT-LLM executor failed; the worker must be restarted")
        return EngineUnavailable("the trtllm engine closed: retry on another worker")

    def _check(self, request: EngineRequest) -> LLM:
        llm = self._llm
        if self._failure is not None:
            raise self._ended_error()
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
            raise InvalidEngineRequest("max_tokens must be at least 1", reason=REASON_SAMPLING)
        if (
            request.seed is not None
            and not self._model_dir.prebuilt_engine
            and not self._options.honours_seeds
        ):
            raise InvalidEngineRequest(
                f"the {self._options.sampler_type} sampler ignores seeds",
                reason=REASON_SEED_UNSUPPORTED,
            )
        return llm

    def _submit(self, llm: LLM, request: EngineRequest) -> RequestOutput:
        prompt, chat = self._prompt(llm, request)
        params = self._sampling_params(request, chat=chat)
        try:
            return llm.generate_async(prompt, params, streaming=True, cache_salt=request.cache_salt)
        except self._modules.request_error as err:  # single-process mode raises it at once
            raise refused_in_executor(err, prompt_tokens=0, max_seq_len=None) from err
        except ValueError as err:
            raise refused_at_submit(
                err,
                prebuilt_engine=self._model_dir.prebuilt_engine,
                max_seq_len=self._max_seq_len,
                max_num_tokens=self._options.max_num_tokens,
            ) from err
        except Exception as err:
            # "LLM is shutting down" although this engine did not close it, or a background
            # error re-raised at submit: either way the executor is gone.
            raise self._fail(err) from err

    def _applied_max_tokens(self, prompt_tokens: int, requested: int) -> int | None:
        """The lowered limit when `_deduce_max_tokens` clamps `requested` to the context."""
        if self._max_seq_len is None or self._model_dir.prebuilt_engine:
            return None  # the TensorRT backend refuses instead (`_check_arguments`)
        room = self._max_seq_len - prompt_tokens
        return room if 0 < room < requested else None

    async def generate(self, request: EngineRequest) -> AsyncGenerator[EngineChunk, None]:
        """Stream one generation; leaving the iteration early aborts it in TensorRT-LLM."""
        llm = self._check(request)
        output = self._submit(llm, request)
        # Everything from here runs in this one generator so that the consumer's aclose() or
        # cancellation reaches the finally block at once (a nested generator would be closed
        # only when garbage collected).
        self._tracker.request_started()
        running = _Running(output)
        self._running[id(output)] = running
        steps = output.__aiter__()
        prompt_tokens = len(output.prompt_token_ids)
        holdback = StopHoldback(request.stop)
        done = False
        try:
            while True:
                if running.ended_by_engine:
                    raise self._ended_error()
                running.waiting = asyncio.current_task()
                try:
                    step = await anext(steps)
                except StopAsyncIteration:
                    raise EngineError("TensorRT-LLM ended a stream without a final") from None
                finally:
                    running.waiting = None
                completion = step.outputs[0]
                if step.finished:
                    text, count, total = holdback.final(completion.text, len(completion.token_ids))
                    # Set before the last yield: a consumer closing right after the final
                    # chunk leaves nothing to abort.
                    done = True
                    yield EngineChunk(
                        text=text,
                        token_count=count,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=total,
                        finish_reason=_finish_reason(completion.finish_reason),
                        max_tokens=self._applied_max_tokens(prompt_tokens, request.max_tokens),
                    )
                    return
                text, count = holdback.step(completion.text_diff, len(completion.token_ids_diff))
                if text or count:
                    yield EngineChunk(text=text, token_count=count, prompt_tokens=prompt_tokens)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if running.ended_by_engine and task is not None and task.uncancel() == 0:
                raise self._ended_error() from None
            raise
        except EngineError:
            raise
        except self._modules.request_error as err:
            raise refused_in_executor(
                err, prompt_tokens=prompt_tokens, max_seq_len=self._max_seq_len
            ) from err
        except Exception as err:
            # Anything else is the executor failing: it has shut itself down and re-raised its
            # own error type (`_handle_background_error`).
            raise self._fail(err) from err
        finally:
            self._running.pop(id(output), None)
            self._tracker.request_ended()
            if not done and self._failure is None:
                # The consumer left (cancelled, aclose, or an error above): free the batch slot
                # and the KV-cache blocks now instead of generating for nobody.
                _abort(output)

    def _prompt(self, llm: LLM, request: EngineRequest) -> tuple[str, bool]:
        """The prompt text and whether it came from the chat template."""
        if request.prompt is not None:
            return request.prompt, False
        if not request.messages:
            raise InvalidEngineRequest(
                "the request has neither a prompt nor chat messages", reason=REASON_CHAT_TEMPLATE
            )
        tokenizer = llm.tokenizer
        if tokenizer is None:
            raise InvalidEngineRequest(
                "this worker's model has no tokenizer, so it cannot render chat messages",
                reason=REASON_CHAT_TEMPLATE,
            )
        conversation = [{"role": m.role, "content": m.content} for m in request.messages]
        try:
            rendered = tokenizer.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=True
            )
        except ValueError as err:
            # Hugging Face raises ValueError when the tokenizer has no chat template.
            raise InvalidEngineRequest(
                "this worker's model has no chat template: send a plain prompt",
                reason=REASON_CHAT_TEMPLATE,
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
            return self._modules.trtllm.SamplingParams(**kwargs)
        except ValueError as err:
            raise InvalidEngineRequest(
                "a sampling parameter is out of range (temperature >= 0, 0 <= top_p <= 1, "
                "top_k >= 0): correct it and retry",
                reason=REASON_SAMPLING,
            ) from err
