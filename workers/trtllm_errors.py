"""How the trtllm engine names TensorRT-LLM's per-request refusals, without passing their text on.

TensorRT-LLM 1.2 refuses a request in two places (NVIDIA/TensorRT-LLM):
- at submit, `BaseLLM._check_arguments` (`tensorrt_llm/llmapi/llm.py`) raises ValueError: on the
  PyTorch backend when the prompt is longer than `max_num_tokens` (without chunked prefill), on
  the TensorRT backend when prompt plus `max_tokens` exceeds the engine's `max_seq_len`;
- in the executor, `BaseWorker._enqueue_request` (`tensorrt_llm/executor/base_worker.py`) wraps
  any failure, e.g. `_deduce_max_tokens` finding no room left after a prompt of `max_seq_len`
  tokens or more, as `tensorrt_llm.executor.utils.RequestError` (a RuntimeError), raised on the
  result's first `__anext__` (at once in single-process mode).
The upstream messages are logged, never forwarded: the refusal carries a reason and the numbers
this engine knows, from which the gateway writes its own message.
"""

from __future__ import annotations

import logging

from workers.engine import (
    REASON_MAX_NUM_TOKENS,
    REASON_MAX_SEQ_LEN,
    REASON_MAX_TOKENS,
    REASON_REJECTED,
    InvalidEngineRequest,
)

_log = logging.getLogger(__name__)


def refused_at_submit(
    err: ValueError, *, prebuilt_engine: bool, max_seq_len: int | None, max_num_tokens: int | None
) -> InvalidEngineRequest:
    """The refusal for a ValueError from `generate_async` (`_check_arguments`)."""
    _log.info("TensorRT-LLM refused a request at submit: %s", err)
    if prebuilt_engine:
        return InvalidEngineRequest(
            "prompt plus max_tokens exceeds the engine's max_seq_len",
            reason=REASON_MAX_TOKENS,
            metadata={"max_seq_len": max_seq_len} if max_seq_len else None,
        )
    return InvalidEngineRequest(
        "the prompt is longer than max_num_tokens",
        reason=REASON_MAX_NUM_TOKENS,
        metadata={"max_num_tokens": max_num_tokens} if max_num_tokens else None,
    )


def refused_in_executor(
    err: BaseException, *, prompt_tokens: int, max_seq_len: int | None
) -> InvalidEngineRequest:
    """The refusal for a `RequestError`: the context limit when the numbers show it."""
    _log.info("TensorRT-LLM refused a request: %s", err)
    if max_seq_len is not None and prompt_tokens >= max_seq_len:
        return InvalidEngineRequest(
            "the prompt leaves no room in max_seq_len",
            reason=REASON_MAX_SEQ_LEN,
            metadata={"max_seq_len": max_seq_len, "prompt_tokens": prompt_tokens},
        )
    return InvalidEngineRequest("TensorRT-LLM refused the request", reason=REASON_REJECTED)
