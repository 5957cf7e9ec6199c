"""The part of TensorRT-LLM 1.2's LLM API that the trtllm engine uses, as typed protocols.

`tensorrt_llm` is an optional, GPU-only dependency without type information; these protocols
name exactly the calls `workers.trtllm` makes, so mypy checks the adapter and the test double
implements the same surface. Sources (NVIDIA/TensorRT-LLM, 1.2 line) are cited in
`workers/trtllm.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from typing import Protocol


class CompletionOutput(Protocol):
    """`tensorrt_llm.executor.result.CompletionOutput` (one sequence of a request)."""

    @property
    def text(self) -> str: ...

    @property
    def token_ids(self) -> Sequence[int]: ...

    @property
    def finish_reason(self) -> str | None: ...

    @property
    def text_diff(self) -> str: ...

    @property
    def token_ids_diff(self) -> Sequence[int]: ...


class RequestOutput(Protocol):
    """`tensorrt_llm.llmapi.llm.RequestOutput`: one request's result, updated in place per step."""

    @property
    def prompt_token_ids(self) -> Sequence[int]: ...

    @property
    def outputs(self) -> Sequence[CompletionOutput]: ...

    @property
    def finished(self) -> bool: ...

    def abort(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[RequestOutput]: ...


class Tokenizer(Protocol):
    """`tensorrt_llm.llmapi.tokenizer.TransformersTokenizer`, the Hugging Face tokenizer wrapper."""

    def apply_chat_template(
        self,
        conversation: list[dict[str, str]],
        *,
        tokenize: bool,
        add_generation_prompt: bool,
    ) -> object: ...


class LLM(Protocol):
    """`tensorrt_llm.LLM` (PyTorch backend in 1.x), as far as this gateway uses it."""

    @property
    def tokenizer(self) -> Tokenizer | None: ...

    def generate_async(
        self,
        inputs: str,
        sampling_params: object,
        *,
        streaming: bool,
        cache_salt: str | None,
    ) -> RequestOutput: ...

    def get_stats_async(self, timeout: float) -> AsyncIterable[Mapping[str, object]]: ...

    def shutdown(self) -> None: ...
