"""The trtllm engine (over the double) behind a real worker server, router and gRPC channels."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from llmgateway.worker.v1 import worker_pb2 as pb
from llmgateway.worker.v1 import worker_pb2_grpc as pb_grpc

from gateway.request.errors import InvalidArgument, Unavailable
from gateway.routing.registry import StaticRegistry
from gateway.routing.router import RouteOutcome, Router, WorkerCall
from tests.gateway.routing.routing_helpers import FAST_ROUTING
from tests.helpers import wait_until
from workers import cli
from workers.server import SERVICE_NAME, WorkerHandle, start_worker
from workers.settings import worker_settings
from workers.trtllm import TrtLlmEngine
from workers.trtllm_options import TrtLlmOptions

MODEL = "tiny-chat"
LONG_PROMPT = " ".join(f"word{i}" for i in range(40))  # 41 tokens with BOS


@pytest.fixture
async def workers(trtllm: ModuleType, tmp_path: Path) -> AsyncIterator[list[WorkerHandle]]:
    """Two trtllm workers over the double, each with a 41-token context."""
    (tmp_path / MODEL).mkdir()
    options = TrtLlmOptions(
        model_path=str(tmp_path / MODEL),
        max_seq_len=41,
        max_batch_size=4,
        stats_idle_interval_s=0.01,
    )
    handles = [await start_worker(TrtLlmEngine(options), worker_id=f"w{i}") for i in range(2)]
    yield handles
    for handle in handles:
        await handle.stop(grace=0)


@pytest.fixture
async def router(workers: list[WorkerHandle]) -> AsyncIterator[Router]:
    registry = StaticRegistry(replace(FAST_ROUTING, workers=tuple(w.target for w in workers)))
    await registry.start()
    yield Router(registry)
    await registry.close()


def _call(prompt: str, max_tokens: int = 5) -> WorkerCall:
    message = pb.GenerateRequest(
        request_id="r",
        model=MODEL,
        prompt=prompt,
        sampling=pb.SamplingParams(max_tokens=max_tokens),
    )
    return WorkerCall(message=message)


async def _route(
    router: Router, call: WorkerCall
) -> tuple[list[pb.GenerateResponse], RouteOutcome]:
    outcome = RouteOutcome()
    return [m async for m in router.generate(call, outcome)], outcome


async def test_over_long_prompt_is_invalid_argument_named_by_the_gateway_and_not_retried(
    router: Router, workers: list[WorkerHandle], trtllm: ModuleType
) -> None:
    await wait_until(lambda: all(w.ready for w in router.registry.workers), within=2.0)
    with pytest.raises(InvalidArgument) as err:
        await _route(router, _call(LONG_PROMPT))
    message = err.value.message
    assert "max_seq_len of 41 tokens" in message and "(41 tokens)" in message
    assert "default_max_tokens" not in message  # TensorRT-LLM's own text stays in the worker
    (info,) = err.value.details
    assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "engine.max_seq_len"
    assert sum(len(llm.submitted) for llm in trtllm.instances) == 1  # one worker only
    assert not any(w.ejected for w in router.registry.workers)


async def test_fatal_engine_error_ejects_the_worker_fails_health_and_is_not_retried(
    router: Router, workers: list[WorkerHandle], trtllm: ModuleType
) -> None:
    await wait_until(lambda: all(w.ready for w in router.registry.workers), within=2.0)
    trtllm.behaviour.fail_after = 1
    with pytest.raises(Unavailable, match="not retried"):
        await _route(router, _call("hello there"))
    assert sum(len(llm.submitted) for llm in trtllm.instances) == 1
    failed = next(w for w in workers if w.servicer.failed.is_set())
    state = next(s for s in router.registry.workers if s.target == failed.target)
    assert state.ejected and not state.ready
    load = failed.servicer._load()
    assert load.failed and load.draining
    async with grpc.aio.insecure_channel(failed.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE_NAME):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING

    trtllm.behaviour.fail_after = None  # the other worker still serves
    messages, outcome = await _route(router, _call("hello there"))
    assert outcome.worker_id != failed.servicer.worker_id and messages[-1].completion_tokens == 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_worker_process_exits_non_zero_after_a_fatal_engine_error(
    trtllm: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / MODEL).mkdir()
    port = _free_port()
    args = cli.build_parser().parse_args(
        [
            "serve",
            "--engine",
            "trtllm",
            "--model",
            str(tmp_path / MODEL),
            "--listen",
            f"127.0.0.1:{port}",
            "--grace",
            "0.1",
        ]
    )
    serving = asyncio.create_task(cli._serve(worker_settings(args)))
    trtllm.behaviour.fail_after = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await channel.channel_ready()
        stub = pb_grpc.WorkerServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.Generate(_call("hi").message):
                pass
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await asyncio.wait_for(serving, 5) == 1


def test_trtllm_without_the_package_prints_the_hint_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    code = cli.main(
        ["serve", "--engine", "trtllm", "--model", str(tmp_path), "--listen", "127.0.0.1:0"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "pip install --extra-index-url https://pypi.nvidia.com tensorrt-llm==1.2.0" in err
    assert "nvcr.io/nvidia/tensorrt-llm/release:1.2.0" in err and "3.10 and 3.12" in err
