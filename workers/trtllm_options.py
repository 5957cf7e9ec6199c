"""Settings of the trtllm engine: which model, how many batch slots, how much GPU memory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import PurePath
from typing import Self

_DEFAULT_PATH = "trtllm"
_DEFAULT_BATCH = 64
# TorchLlmArgs.sampler_type (tensorrt_llm/llmapi/llm_args.py): TorchSampler is what "auto" picks
# without beam search, and it ignores SamplingParams.seed; TRTLLMSampler honours seeds.
SAMPLER_TYPES = ("TorchSampler", "TRTLLMSampler")
SEEDED_SAMPLERS = frozenset({"TRTLLMSampler"})


def _number(data: Mapping[str, object], key: str, path: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{path}.{key}: expected a number")
    return float(value)


def _integer(data: Mapping[str, object], key: str, path: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{path}.{key}: expected an integer")
    return value


def _boolean(data: Mapping[str, object], key: str, path: str) -> bool | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise ValueError(f"{path}.{key}: expected true or false")
    return value


def _string(data: Mapping[str, object], key: str, path: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{path}.{key}: expected a string")
    return value


@dataclass(frozen=True, slots=True)
class TrtLlmOptions:
    """How the trtllm engine loads and runs its model.

    `model_path` is a local directory (a Hugging Face checkpoint for the default PyTorch
    backend); the worker never downloads models. `served_model_name` is the name the gateway
    routes by, by default the directory's name. `max_batch_size` is the number of in-flight
    batch slots reported as `max_slots`. `stats_timeout_s` bounds one `get_stats_async` round;
    statistics older than `stats_stale_after_s` are not trusted for the load report.
    `max_seq_len` (prompt plus output) and `max_num_tokens` (tokens per batch step, hence the
    longest prompt without chunked prefill) default to TensorRT-LLM's own (the checkpoint's
    context length, 8192). `trust_remote_code` lets the checkpoint run its own Python code.
    `sampler_type` chooses the PyTorch backend's sampler: only TRTLLMSampler honours seeds.
    """

    model_path: str
    served_model_name: str | None = None
    max_batch_size: int = _DEFAULT_BATCH
    kv_cache_free_gpu_memory_fraction: float = 0.9
    tensor_parallel_size: int = 1
    stats_timeout_s: float = 2.0
    stats_stale_after_s: float = 1.0
    stats_idle_interval_s: float = 0.5
    max_seq_len: int | None = None
    max_num_tokens: int | None = None
    trust_remote_code: bool = False
    sampler_type: str = "TorchSampler"

    def __post_init__(self) -> None:
        self._validate(_DEFAULT_PATH)

    def _validate(self, path: str) -> None:
        if not self.model_path.strip():
            raise ValueError(f"{path}.model_path: expected the path of a local model directory")
        if self.served_model_name is not None and not self.served_model_name.strip():
            raise ValueError(
                f"{path}.served_model_name: must not be empty; omit it to use the "
                "model directory's name"
            )
        if self.max_batch_size < 1:
            raise ValueError(f"{path}.max_batch_size: must be at least 1")
        if not 0.0 < self.kv_cache_free_gpu_memory_fraction <= 1.0:
            raise ValueError(
                f"{path}.kv_cache_free_gpu_memory_fraction: must be in (0, 1], e.g. 0.9"
            )
        if self.tensor_parallel_size < 1:
            raise ValueError(f"{path}.tensor_parallel_size: must be at least 1")
        for key in ("max_seq_len", "max_num_tokens"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{path}.{key}: must be at least 1; omit it for the model's own")
        if self.sampler_type not in SAMPLER_TYPES:
            raise ValueError(
                f"{path}.sampler_type: expected one of {list(SAMPLER_TYPES)}, got "
                f"{self.sampler_type!r}"
            )
        for key in ("stats_timeout_s", "stats_stale_after_s", "stats_idle_interval_s"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{path}.{key}: must be greater than 0 seconds")

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

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], path: str) -> Self:
        """Build from a settings mapping; unknown keys and wrong types name their full path."""
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ValueError(f"{path}.{key}: unknown key; expected one of {sorted(known)}")
        model_path = _string(data, "model_path", path)
        if model_path is None:
            raise ValueError(f"{path}.model_path: required, the path of a local model directory")
        served = _string(data, "served_model_name", path)
        batch = _integer(data, "max_batch_size", path)
        tp = _integer(data, "tensor_parallel_size", path)
        fraction = _number(data, "kv_cache_free_gpu_memory_fraction", path)
        timeout = _number(data, "stats_timeout_s", path)
        stale = _number(data, "stats_stale_after_s", path)
        idle = _number(data, "stats_idle_interval_s", path)
        max_seq_len = _integer(data, "max_seq_len", path)
        max_num_tokens = _integer(data, "max_num_tokens", path)
        trust = _boolean(data, "trust_remote_code", path)
        sampler = _string(data, "sampler_type", path)
        try:
            return cls(
                model_path=model_path,
                served_model_name=served,
                max_batch_size=batch if batch is not None else _DEFAULT_BATCH,
                kv_cache_free_gpu_memory_fraction=fraction if fraction is not None else 0.9,
                tensor_parallel_size=tp if tp is not None else 1,
                stats_timeout_s=timeout if timeout is not None else 2.0,
                stats_stale_after_s=stale if stale is not None else 1.0,
                stats_idle_interval_s=idle if idle is not None else 0.5,
                max_seq_len=max_seq_len,
                max_num_tokens=max_num_tokens,
                trust_remote_code=bool(trust),
                sampler_type=sampler if sampler is not None else "TorchSampler",
            )
        except ValueError as err:
            # Validation names keys under "trtllm."; report them under the caller's path.
            raise ValueError(str(err).replace(f"{_DEFAULT_PATH}.", f"{path}.", 1)) from None
