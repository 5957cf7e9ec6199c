"""Settings of the trtllm engine: which model, how many batch slots, how much GPU memory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from common.settings import Invalid, setting

_INTEGER = "an integer"
_NUMBER = "a number"
# TorchLlmArgs.sampler_type (tensorrt_llm/llmapi/llm_args.py): TorchSampler is what "auto" picks
# without beam search, and it ignores SamplingParams.seed; TRTLLMSampler honours seeds.
SAMPLER_TYPES = ("TorchSampler", "TRTLLMSampler")
SEEDED_SAMPLERS = frozenset({"TRTLLMSampler"})


@dataclass(frozen=True, slots=True)
class TrtLlmOptions:
    """How the trtllm engine loads and runs its model (the worker never downloads models)."""

    model_path: str = setting(
        doc="local model directory (a Hugging Face checkpoint for the PyTorch backend)",
        expect="a string",
    )
    served_model_name: str | None = setting(
        None, doc="the name the gateway routes by; by default the directory's name"
    )
    max_batch_size: int = setting(
        64, doc="in-flight batch slots, reported as max_slots", expect=_INTEGER
    )
    kv_cache_free_gpu_memory_fraction: float = setting(
        0.9, doc="share of free GPU memory given to the KV cache, in (0, 1]", expect=_NUMBER
    )
    tensor_parallel_size: int = setting(1, doc="GPUs the model is split over", expect=_INTEGER)
    stats_timeout_s: float = setting(2.0, doc="bounds one get_stats_async round", expect=_NUMBER)
    stats_stale_after_s: float = setting(
        1.0, doc="statistics older than this are not trusted for the load report", expect=_NUMBER
    )
    stats_idle_interval_s: float = setting(
        0.5, doc="how often statistics are read while idle", expect=_NUMBER
    )
    max_seq_len: int | None = setting(
        None,
        doc="prompt plus output tokens; null: TensorRT-LLM's own (the checkpoint's context length)",
        expect="an integer or null",
    )
    max_num_tokens: int | None = setting(
        None,
        doc="tokens per batch step, hence the longest prompt without chunked prefill "
        "(null: TensorRT-LLM's 8192)",
        expect="an integer or null",
    )
    trust_remote_code: bool = setting(
        False, doc="let the checkpoint run its own Python code", expect="true or false"
    )
    sampler_type: str = setting(
        "TorchSampler",
        doc="the PyTorch backend's sampler: only TRTLLMSampler honours request seeds",
        expect="one of 'TorchSampler', 'TRTLLMSampler'",
    )

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if not self.model_path.strip():
            raise Invalid("model_path", "expected the path of a local model directory")
        if self.served_model_name is not None and not self.served_model_name.strip():
            raise Invalid(
                "served_model_name",
                "must not be empty; omit it to use the model directory's name",
            )
        if self.max_batch_size < 1:
            raise Invalid("max_batch_size", "must be at least 1")
        if not 0.0 < self.kv_cache_free_gpu_memory_fraction <= 1.0:
            raise Invalid("kv_cache_free_gpu_memory_fraction", "must be in (0, 1], e.g. 0.9")
        if self.tensor_parallel_size < 1:
            raise Invalid("tensor_parallel_size", "must be at least 1")
        for key in ("max_seq_len", "max_num_tokens"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise Invalid(key, "must be at least 1; omit it for the model's own")
        if self.sampler_type not in SAMPLER_TYPES:
            raise Invalid(
                "sampler_type",
                f"expected one of {list(SAMPLER_TYPES)}, got {self.sampler_type!r}",
            )
        for key in ("stats_timeout_s", "stats_stale_after_s", "stats_idle_interval_s"):
            if getattr(self, key) <= 0:
                raise Invalid(key, "must be greater than 0 seconds")

    @property
    def honours_seeds(self) -> bool:
        """Whether a request's seed makes sampling reproducible with this sampler."""
        return self.sampler_type in SEEDED_SAMPLERS

    @property
    def model_name(self) -> str:
        """The name requests must use: `served_model_name`, else the model directory's name."""
        if self.served_model_name is not None:
            return self.served_model_name
        return PurePath(self.model_path).name or self.model_path
