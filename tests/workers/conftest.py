"""Fixtures of the worker tests: the TensorRT-LLM double and engines over it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.workers.trtllm_helpers import MODEL, Factory, install_double
from workers.trtllm import TrtLlmEngine
from workers.trtllm_options import TrtLlmOptions


@pytest.fixture
def trtllm(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A fresh double installed as `tensorrt_llm` for this test only."""
    return install_double(monkeypatch)


@pytest.fixture
async def make_engine(trtllm: ModuleType, tmp_path: Path) -> AsyncIterator[Factory]:
    """Start engines over the double with fast statistics polling; all closed at teardown."""
    model_dir = tmp_path / MODEL
    model_dir.mkdir()
    base = TrtLlmOptions(
        model_path=str(model_dir),
        max_batch_size=4,
        kv_cache_free_gpu_memory_fraction=0.85,
        stats_timeout_s=0.05,
        stats_stale_after_s=0.5,
        stats_idle_interval_s=0.01,
    )
    started: list[TrtLlmEngine] = []

    async def make(**overrides: Any) -> TrtLlmEngine:
        engine = TrtLlmEngine(replace(base, **overrides))
        await engine.start()
        started.append(engine)
        return engine

    yield make
    for engine in started:
        await engine.close()
