"""Helpers of the trtllm engine tests: the double loaded as `tensorrt_llm`, requests."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from workers.engine import EngineChunk, EngineRequest
from workers.trtllm import TrtLlmEngine

DOUBLE_DIR = Path(__file__).parent / "trtllm_double"
MODEL = "tiny-chat"
Factory = Callable[..., Awaitable[TrtLlmEngine]]


def _load(
    name: str, path: Path, monkeypatch: pytest.MonkeyPatch, package: Path | None
) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(package)] if package else None
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def install_double(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A fresh double installed as `tensorrt_llm` and its submodules, undone at teardown."""
    executor = DOUBLE_DIR / "executor"
    _load("tensorrt_llm.executor", executor / "__init__.py", monkeypatch, executor)
    _load("tensorrt_llm.executor.utils", executor / "utils.py", monkeypatch, None)
    module = _load("tensorrt_llm", DOUBLE_DIR / "__init__.py", monkeypatch, DOUBLE_DIR)
    _load("tensorrt_llm.llmapi", DOUBLE_DIR / "llmapi.py", monkeypatch, None)
    engine = DOUBLE_DIR / "_tensorrt_engine"
    _load("tensorrt_llm._tensorrt_engine", engine / "__init__.py", monkeypatch, engine)
    return module


def request(**fields: Any) -> EngineRequest:
    """An engine request for MODEL (prompt "hello there world", 5 tokens) with `fields` set."""
    values: dict[str, Any] = {"request_id": "r1", "model": MODEL, "max_tokens": 5}
    if "messages" not in fields:
        values["prompt"] = "hello there world"
    values.update(fields)
    return EngineRequest(**values)


async def collect(engine: TrtLlmEngine, req: EngineRequest) -> list[EngineChunk]:
    return [chunk async for chunk in engine.generate(req)]


async def next_chunk(stream: AsyncGenerator[EngineChunk, None]) -> EngineChunk:
    return await anext(stream)
