"""A known mix of requests through a real gateway shows up, exactly, in the scraped metrics.

The totals are read by scraping the metrics endpoint over HTTP, as Prometheus does, so the same
assertions hold for a gateway of several processes (point `scrape` at its endpoint).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import grpc
import pytest
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc

from gateway.auth.devkeys import mint_dev_token
from gateway.process.logging_setup import JsonLinesFormatter
from gateway.process.metrics_server import MetricsSettings
from gateway.request.access_log import LOGGER_NAME
from tests.gateway.observability.scrape import sample_total, scrape
from tests.helpers import ROOT, StartGateway, StartWorker, gateway_settings, wait_until
from workers.sim import SimConfig

LLAMA = "llama-3.1-8b-instruct"
LIMITS_POLICY = ROOT / "tests" / "fixtures" / "limits_policy"
# Department `rate` allows 5 requests per minute per user and data up to `internal`.
DEPARTMENT = "rate"
REQUESTS = "llmgw_requests_total"


def _request(**fields: object) -> pb.GenerateRequest:
    base: dict[str, object] = {
        "model": LLAMA,
        "prompt": "Summarise the ward round",
        "sampling": pb.SamplingParams(max_tokens=8, seed=1),
    }
    base.update(fields)
    return pb.GenerateRequest(**base)  # type: ignore[arg-type]


def _totals(text: str) -> dict[str, float]:
    return {
        outcome: sample_total(
            text, REQUESTS, {"department": DEPARTMENT, "model": LLAMA, "outcome": outcome}
        )
        for outcome in ("ok", "denied", "rate_limited", "cancelled")
    }


async def test_known_mix_counts_by_department_model_and_outcome(
    start_sim_worker: StartWorker,
    start_test_gateway: StartGateway,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = await start_sim_worker(
        SimConfig(time_to_first_token_ms=5, inter_token_latency_ms=5, prefill_ms_per_token=0)
    )
    settings = gateway_settings(
        data_dir / "gw",
        policy_dir=LIMITS_POLICY,
        metrics=MetricsSettings(listen="127.0.0.1:0"),
    )
    gateway = await start_test_gateway(worker, settings=settings)
    assert gateway.metrics is not None
    before = scrape(gateway.metrics.url)
    token = mint_dev_token(data_dir / "gw", department=DEPARTMENT, subject="alice")
    other = mint_dev_token(data_dir / "gw", department=DEPARTMENT, subject="bob")
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        alice = (("authorization", f"Bearer {token}"),)
        # 2 refused by policy (health data is above the department's clearance): no rate used.
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Generate(_request(classification="health"), metadata=alice)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # 5 served (the user's per-minute limit), then 2 refused by the limit.
        for _ in range(5):
            await stub.Generate(_request(), metadata=alice)
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as limited:
                await stub.Generate(_request(), metadata=alice)
            assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # 1 cancelled by its caller after the first token.
        call = stub.GenerateStream(
            pb.GenerateStreamRequest(
                model=LLAMA, prompt="Plan the shift", sampling=pb.SamplingParams(max_tokens=2000)
            ),
            metadata=(("authorization", f"Bearer {other}"),),
        )
        await call.read()
        call.cancel()

        def counted() -> dict[str, float]:
            now, then = _totals(scrape(gateway.metrics.url)), _totals(before)  # type: ignore[union-attr]
            return {k: now[k] - then[k] for k in now}

        await wait_until(lambda: counted()["cancelled"] == 1, within=5)
    assert counted() == {"ok": 5, "denied": 2, "rate_limited": 2, "cancelled": 1}
    after = scrape(gateway.metrics.url)
    ok = {"department": DEPARTMENT, "model": LLAMA, "outcome": "ok", "grpc_status": "OK"}
    assert sample_total(after, REQUESTS, ok) - sample_total(before, REQUESTS, ok) == 5
    served = {"gen_ai_request_model": LLAMA, "department": DEPARTMENT, "error_type": ""}
    duration = "gen_ai_server_request_duration_seconds_count"
    assert sample_total(after, duration, served) - sample_total(before, duration, served) == 5
    output = {"department": DEPARTMENT, "model": LLAMA, "gen_ai_token_type": "output"}
    out_tokens = sample_total(after, "llmgw_tokens_total", output) - sample_total(
        before, "llmgw_tokens_total", output
    )
    assert out_tokens >= 5 * 8  # 8 per served request, plus what the cancelled stream produced
    # One access line per request, with no prompt text and no token in it.
    lines = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert len(lines) == 10
    formatted = [json.loads(JsonLinesFormatter().format(r)) for r in lines]
    assert {line["outcome"] for line in formatted} == {"ok", "denied", "rate_limited", "cancelled"}
    for line in formatted:
        assert line["request_id"] and line["department"] == DEPARTMENT
        text = json.dumps(line)
        assert "ward round" not in text and "Plan the shift" not in text
        assert token not in text and other not in text


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
                    _request(model=f"made-up-{i}"), metadata=(("authorization", f"Bearer {token}"),)
                )
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await asyncio.sleep(0)
    text = scrape(gateway.metrics.url)
    assert "made-up" not in text
    unknown = {"department": "qa", "model": "unknown", "outcome": "invalid"}
    assert sample_total(text, REQUESTS, unknown) >= 3
