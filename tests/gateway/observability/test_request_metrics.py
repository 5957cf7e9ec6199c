"""A known mix of requests shows up, exactly, in the metrics of a gateway of 1 and 2 processes."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc

from gateway.auth.devkeys import ensure_dev_key, mint_dev_token
from gateway.auth.settings import DEV_AUDIENCE, DEV_ISSUER
from gateway.process.logging_setup import JsonLinesFormatter
from gateway.process.metrics_server import MetricsSettings
from gateway.request.access_log import LOGGER_NAME
from tests.deploy.loopback import Replica, start_replica
from tests.gateway.observability.request_mix import (
    LIMITS_POLICY,
    MixGateway,
    all_counted,
    assert_totals,
    send_round,
)
from tests.gateway.observability.scrape import sample_total, scrape
from tests.helpers import StartGateway, StartWorker, gateway_settings, wait_until
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from workers.server import WorkerHandle
from workers.sim import SimConfig

REQUESTS = "llmgw_requests_total"
SIM = SimConfig(time_to_first_token_ms=5, inter_token_latency_ms=5, prefill_ms_per_token=0)
# SO_REUSEPORT picks a process for each new connection by a hash of its addresses and ports: a
# round's 10 connections seldom all land on one process, and when they do a further round is sent.
MAX_ROUNDS = 4


def _one_round_only() -> None:
    raise AssertionError("a gateway of one process needs one round")


async def _one_process(
    start_sim_worker: StartWorker,
    start_test_gateway: StartGateway,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> MixGateway:
    """A gateway in this process, with the in-process limiter."""
    worker = await start_sim_worker(SIM)
    settings = gateway_settings(
        data_dir / "gw", policy_dir=LIMITS_POLICY, metrics=MetricsSettings(listen="127.0.0.1:0")
    )
    gateway = await start_test_gateway(worker, settings=settings)
    assert gateway.metrics is not None
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)

    def access_lines() -> list[dict[str, Any]]:
        formatter = JsonLinesFormatter()
        return [json.loads(formatter.format(r)) for r in caplog.records if r.name == LOGGER_NAME]

    return MixGateway(
        gateway.target, gateway.metrics.url, 1, data_dir / "gw", access_lines, _one_round_only
    )


async def _start_processes(
    worker: WorkerHandle, redis: RedisServer, home: Path, processes: int
) -> Replica:
    """`llm-gateway serve --config` with `server.processes`, dev-key auth, the Redis limiter and
    the default local audit spool; ready once every process serves."""
    data = home / "data"
    config = {
        "data_dir": str(data),
        "server": {
            "listen": f"127.0.0.1:{free_port()}",
            "processes": processes,
            "shutdown_grace_s": 5,
        },
        "auth": {
            "issuer": DEV_ISSUER,
            "audience": DEV_AUDIENCE,
            "algorithms": ["EdDSA"],
            "dev_key_file": str(ensure_dev_key(data)),
        },
        "policy": {"directory": str(LIMITS_POLICY)},
        "routing": {"workers": [worker.target]},
        "limits": {"redis_url": redis.url},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
    }
    replica = await start_replica("gateway", config, home)
    await replica.wait_ready()
    return replica


def _access_lines(replica: Replica) -> Callable[[], list[dict[str, Any]]]:
    def read() -> list[dict[str, Any]]:
        entries = [json.loads(line) for line in replica.log_lines()]
        return [e for e in entries if e["logger"] == LOGGER_NAME]

    return read


async def _settled(gateway: MixGateway, before: str, rounds: int) -> bool:
    text = await asyncio.to_thread(scrape, gateway.metrics_url)
    return all_counted(before, text, rounds, gateway.access_lines())


def _flush(redis: RedisServer) -> None:
    """A new minute for the limiter: every round meets the limits the first one met."""
    redis.command("FLUSHALL")


@pytest.fixture(params=["1 process", pytest.param("2 processes", marks=pytest.mark.integration)])
async def mix_gateway(
    request: pytest.FixtureRequest,
    start_sim_worker: StartWorker,
    start_test_gateway: StartGateway,
    data_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> AsyncIterator[MixGateway]:
    if request.param == "1 process":
        yield await _one_process(start_sim_worker, start_test_gateway, data_dir, caplog)
        return
    worker = await start_sim_worker(SIM)
    with RedisServer() as redis:
        home = tmp_path / "gateway"
        home.mkdir()
        replica = await _start_processes(worker, redis, home, processes=2)
        try:
            yield MixGateway(
                f"127.0.0.1:{replica.port}",
                f"http://127.0.0.1:{replica.metrics_port}/metrics",
                2,
                home / "data",
                _access_lines(replica),
                functools.partial(_flush, redis),
            )
            assert await replica.terminate(within=30) == 0
        finally:
            if replica.process.returncode is None:
                replica.process.kill()
                await replica.process.wait()


async def test_known_mix_counts_by_department_model_and_outcome(
    mix_gateway: MixGateway,
) -> None:
    gateway = mix_gateway
    before = await asyncio.to_thread(scrape, gateway.metrics_url)
    rounds = 0
    served_by: set[str] = set()
    # Further rounds, on new connections, until every process has served (bounded).
    while len(served_by) < gateway.processes and rounds < MAX_ROUNDS:
        if rounds:
            gateway.fresh_limits()
        await send_round(gateway)
        rounds += 1

        settled = functools.partial(_settled, gateway, before, rounds)
        await wait_until(settled, within=10, every=0.05, what="every request counted")
        served_by = {line["process"] for line in gateway.access_lines()}
    assert len(served_by) == gateway.processes, served_by
    after = await asyncio.to_thread(scrape, gateway.metrics_url)
    assert sample_total(after, "llmgw_process_serving") == gateway.processes
    assert_totals(before, after, rounds, gateway.access_lines())


async def test_unknown_model_names_do_not_create_series(
    sim_worker: object, start_test_gateway: StartGateway, data_dir: Path
) -> None:
    settings = gateway_settings(data_dir / "gw", metrics=MetricsSettings(listen="127.0.0.1:0"))
    gateway = await start_test_gateway(sim_worker, settings=settings)
    assert gateway.metrics is not None
    token = mint_dev_token(data_dir / "gw", department="qa", subject="carol")
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        for i in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await stub.Generate(
                    pb.GenerateRequest(model=f"made-up-{i}", prompt="Summarise the ward round"),
                    metadata=(("authorization", f"Bearer {token}"),),
                )
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await asyncio.sleep(0)
    text = scrape(gateway.metrics.url)
    assert "made-up" not in text
    unknown = {"department": "qa", "model": "unknown", "outcome": "invalid"}
    assert sample_total(text, REQUESTS, unknown) >= 3
