"""GPU smoke checks and timings on the two paths a request takes: the engine, and the gateway.

The engine path calls `workers.trtllm.TrtLlmEngine.generate` in this process. The gateway path
starts a worker server over that same engine and a gateway in front of it, both on loopback in
this process (dev-key JWT, a one-model policy, the in-process limiter, the local audit spool), and
streams through the gateway's public API as a client would.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc as pb_grpc

from gateway.auth.devkeys import dev_auth_settings, mint_dev_token
from gateway.process.server import GatewayHandle, start_gateway
from gateway.routing.settings import RoutingSettings
from gateway.settings import GatewaySettings, ServerSettings
from load_tests.gpu_smoke_checks import PROMPT, Outcome, over_long_prompt
from policy.settings import PolicySettings
from workers.engine import (
    REASON_MAX_SEQ_LEN,
    REASON_SEED_UNSUPPORTED,
    EngineRequest,
    InvalidEngineRequest,
)
from workers.server import WorkerHandle, start_worker
from workers.trtllm import TrtLlmEngine

POOL = "onprem-gpu"
DEPARTMENT = "smoke"
_DEFAULTS = """\
version: 1
pools:
  {pool}: {{on_prem: true}}
models:
  {model}: {{pools: [{pool}]}}
classifications: [public, internal]
clearance_default: internal
priority_classes: {{standard: 10}}
department_defaults:
  models: [{model}]
  tokens: {{max_prompt: 32768, max_output: 8192, default_output: 256, on_excess: clamp}}
  data:
    allowed: [public, internal]
    required: false
    default: internal
    pools: {{public: [{pool}], internal: [{pool}]}}
  priority: standard
  limits:
    on_limiter_failure: closed
    department: {{requests_per_minute: unlimited, concurrent_streams: unlimited}}
    user:
      requests_per_minute: unlimited
      concurrent_streams: unlimited
      tokens_per_day: unlimited
  guard: {{cpr: allow, iban: allow, email: allow, phone: allow}}
  audit: {{content: hashes, required: true}}
"""


@dataclass
class Run:
    """One stream's timing: first token, last token, tokens and whether the counts added up."""

    started: float
    first: float
    last: float
    tokens: int
    counts_add_up: bool

    @property
    def ttft_ms(self) -> float:
        return (self.first - self.started) * 1000

    @property
    def itl_ms(self) -> float:
        # Chunks may carry several tokens: the gap per token after the first chunk.
        return (self.last - self.first) * 1000 / max(self.tokens - 1, 1)


Stream = Callable[[], AsyncIterator[tuple[int, int | None]]]


async def timed(stream: Stream) -> Run:
    """Consume one stream of (token_count, completion_tokens or None on the final) pairs."""
    started = time.perf_counter()
    first = last = 0.0
    streamed = 0
    final: int | None = None
    async for count, completion in stream():
        now = time.perf_counter()
        if count:
            first = first or now
            last = now
        streamed += count
        if completion is not None:
            final = completion
    return Run(started, first or started, last or started, streamed, final == streamed)


async def measure(path: str, stream: Stream, runs: int, concurrency: int) -> list[dict[str, Any]]:
    """Sequential single streams, then `concurrency` streams at once: one row for each."""
    singles = [await timed(stream) for _ in range(runs)]
    began = time.perf_counter()
    together = await asyncio.gather(*(timed(stream) for _ in range(concurrency)))
    wall = time.perf_counter() - began
    rows = []
    for mode, group, seconds in (
        ("single", singles, sum(r.last - r.started for r in singles)),
        (f"{concurrency} concurrent", list(together), wall),
    ):
        tokens = sum(r.tokens for r in group)
        rows.append(
            {
                "path": path,
                "mode": mode,
                "streams": len(group),
                "tokens": tokens,
                "ttft_ms_p50": statistics.median(r.ttft_ms for r in group),
                "ttft_ms_max": max(r.ttft_ms for r in group),
                "itl_ms_p50": statistics.median(r.itl_ms for r in group),
                "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
                "counts_add_up": all(r.counts_add_up for r in group),
            }
        )
    return rows


class EnginePath:
    """Checks and timings directly on a started `TrtLlmEngine`."""

    def __init__(self, engine: TrtLlmEngine, *, max_tokens: int, max_seq_len: int, sampler: str):
        self.engine = engine
        self._model = engine.models[0]
        self._max_tokens = max_tokens
        self._max_seq_len = max_seq_len
        self._sampler = sampler
        self._ids = 0

    def request(self, prompt: str = PROMPT, **fields: Any) -> EngineRequest:
        self._ids += 1
        values: dict[str, Any] = {"max_tokens": self._max_tokens, **fields}
        return EngineRequest(
            request_id=f"smoke-{self._ids}", model=self._model, prompt=prompt, **values
        )

    async def stream(self) -> AsyncIterator[tuple[int, int | None]]:
        async for chunk in self.engine.generate(self.request()):
            final = chunk.completion_tokens if chunk.finish_reason is not None else None
            yield chunk.token_count, final

    async def text(self, **fields: Any) -> str:
        return "".join([c.text async for c in self.engine.generate(self.request(**fields))])

    async def over_long_prompt(self) -> Outcome:
        prompt = over_long_prompt(self._max_seq_len)
        try:
            async for _ in self.engine.generate(self.request(prompt, max_tokens=8)):
                pass
        except InvalidEngineRequest as err:
            data = {"reason": err.reason, "metadata": err.metadata}
            return err.reason == REASON_MAX_SEQ_LEN, f"refused: {err.reason} {err.metadata}", data
        return False, "an over-long prompt was not refused", {}

    async def load_queued(self, max_batch_size: int) -> Outcome:
        """Two streams more than the batch holds: the load report must show them queued."""
        streams = [asyncio.create_task(timed(self.stream)) for _ in range(max_batch_size + 2)]
        seen: list[tuple[int, int]] = []
        while not all(t.done() for t in streams):
            load = self.engine.load()
            seen.append((load.active, load.queued))
            await asyncio.sleep(0.005)
        await asyncio.gather(*streams)
        max_active = max(a for a, _ in seen)
        max_queued = max(q for _, q in seen)
        data = {"max_active": max_active, "max_queued": max_queued, "polls": len(seen)}
        passed = max_queued >= 2 and max_active <= max_batch_size
        return (
            passed,
            (
                f"{max_batch_size + 2} streams on {max_batch_size} slots: load reported up to "
                f"{max_active} active and {max_queued} queued"
            ),
            data,
        )

    async def seed(self) -> Outcome:
        sampled = {"temperature": 1.0, "top_k": 50, "seed": 1234}
        if self._sampler == "TRTLLMSampler":
            first, again = await self.text(**sampled), await self.text(**sampled)
            data = {"same_seed_equal": first == again}
            return first == again, f"same seed twice, same text: {first == again}", data
        try:
            await self.text(**sampled)
        except InvalidEngineRequest as err:
            passed = err.reason == REASON_SEED_UNSUPPORTED
            return passed, f"a seed is refused: {err.reason}", {"reason": err.reason}
        return False, f"{self._sampler} ignores seeds, yet a seeded request ran", {}


def write_policy(directory: Path, model: str) -> Path:
    """A policy that lets the `smoke` department use `model` on the worker's pool."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "defaults.yaml").write_text(_DEFAULTS.format(pool=POOL, model=model))
    (directory / f"{DEPARTMENT}.yaml").write_text(f"version: 1\ndepartment: {DEPARTMENT}\n")
    return directory


class GatewayPath:
    """A worker server over the engine and a gateway in front of it, on loopback."""

    def __init__(self, engine: TrtLlmEngine, data_dir: Path, *, max_tokens: int, max_seq_len: int):
        self._engine = engine
        self._data_dir = data_dir
        self._model = engine.models[0]
        self._max_tokens = max_tokens
        self._max_seq_len = max_seq_len
        self.worker: WorkerHandle | None = None
        self.gateway: GatewayHandle | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._metadata: tuple[tuple[str, str], ...] = ()

    async def start(self) -> None:
        self.worker = await start_worker(self._engine, pool=POOL, worker_id="gpu-smoke")
        settings = GatewaySettings(
            server=ServerSettings(listen="127.0.0.1:0"),
            routing=RoutingSettings(workers=(self.worker.target,)),
            auth=dev_auth_settings(self._data_dir),
            policy=PolicySettings(write_policy(self._data_dir / "policy", self._model)),
            data_dir=self._data_dir,
        )
        self.gateway = await start_gateway(settings)
        token = mint_dev_token(self._data_dir, department=DEPARTMENT, subject="gpu-smoke")
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._channel = grpc.aio.insecure_channel(self.gateway.target)
        self._stub = pb_grpc.InferenceServiceStub(self._channel)

    async def stop(self) -> None:
        """Stop the gateway and the worker server; the worker closes the engine."""
        if self._channel is not None:
            await self._channel.close()
        if self.gateway is not None:
            await self.gateway.stop(grace=0)
        if self.worker is not None:
            await self.worker.stop(grace=0)

    def _call(self, prompt: str, max_tokens: int) -> Any:
        request = pb.GenerateStreamRequest(
            model=self._model, prompt=prompt, sampling=pb.SamplingParams(max_tokens=max_tokens)
        )
        return self._stub.GenerateStream(request, metadata=self._metadata, timeout=600)

    async def stream(self) -> AsyncIterator[tuple[int, int | None]]:
        async for message in self._call(PROMPT, self._max_tokens):
            final = message.usage.completion_tokens if message.finish_reason else None
            yield message.token_count, final

    async def over_long_prompt(self) -> Outcome:
        try:
            async for _ in self._call(over_long_prompt(self._max_seq_len), 8):
                pass
        except grpc.aio.AioRpcError as err:
            code = err.code().name
            data = {"code": code, "details": err.details()}
            return code == "INVALID_ARGUMENT", f"{code}: {err.details()}", data
        return False, "an over-long prompt was not refused", {}
