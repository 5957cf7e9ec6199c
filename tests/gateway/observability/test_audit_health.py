"""`llmgateway.audit` tells the truth: NOT_SERVING through a store outage, SERVING once it ends."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc

from audit.settings import AuditSpoolSettings, AuditStoreSettings
from audit.store import serve_store
from common.settings import read
from gateway.auth.devkeys import mint_dev_token
from gateway.process.metrics_server import MetricsSettings
from tests.gateway.observability.scrape import sample_total, scrape
from tests.helpers import StartGateway, StartWorker, gateway_settings
from tests.support.ports import free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _eventually(check, within: float) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    import time

    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within} s")
        await asyncio.sleep(0.1)


async def test_audit_goes_not_serving_during_a_store_outage_and_comes_back(
    start_sim_worker: StartWorker, start_test_gateway: StartGateway, data_dir: Path
) -> None:
    port = free_port()
    store_settings = AuditStoreSettings(
        keys_dir=str(data_dir / "store-keys"),
        listen=f"127.0.0.1:{port}",
        db_path=str(data_dir / "audit.db"),
    )
    store = await serve_store(store_settings)
    worker = await start_sim_worker()
    settings = gateway_settings(
        data_dir / "gw",
        metrics=MetricsSettings(listen="127.0.0.1:0"),
        audit=AuditSpoolSettings(
            spool_path=str(data_dir / "spool.db"),
            source="gw-health",
            store_target=f"127.0.0.1:{port}",
            unhealthy_after_s=1.5,
        ),
    )
    gateway = await start_test_gateway(worker, settings=settings)
    token = mint_dev_token(data_dir / "gw", department="qa", subject="dana")
    metadata = (("authorization", f"Bearer {token}"),)
    request = pb.GenerateRequest(
        model="llama-3.1-8b-instruct", prompt="hello", sampling=pb.SamplingParams(max_tokens=4)
    )
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        async def audit_is(status: int) -> bool:
            answer = await health.Check(health_pb2.HealthCheckRequest(service="llmgateway.audit"))
            return bool(answer.status == status)

        await stub.Generate(request, metadata=metadata)
        assert await audit_is(SERVING)
        await store.stop(grace=0)
        await stub.Generate(request, metadata=metadata)  # a record that cannot be shipped
        # Failing, but not yet for longer than unhealthy_after_s: still SERVING.
        assert await audit_is(SERVING)
        await _eventually(lambda: audit_is(NOT_SERVING), within=10)
        assert gateway.metrics is not None
        text = scrape(gateway.metrics.url)
        assert sample_total(text, "llmgw_audit_healthy") == 0
        assert sample_total(text, "llmgw_audit_oldest_unshipped_age_seconds") > 1
        assert sample_total(text, "llmgw_audit_ship_errors_total") >= 1
        assert (
            "shipping to the audit store has failed" in gateway.component_health()["audit_status"]
        )

        store = await serve_store(store_settings)  # the store comes back on the same address
        try:
            await _eventually(lambda: audit_is(SERVING), within=15)
            text = scrape(gateway.metrics.url)
            assert sample_total(text, "llmgw_audit_healthy") == 1
            assert sample_total(text, "llmgw_audit_oldest_unshipped_age_seconds") == 0
            assert await store.gate.run(lambda ledger: ledger.count()) == 2
        finally:
            await store.stop(grace=0)


async def test_audit_goes_not_serving_past_its_spool_share(
    start_sim_worker: StartWorker, start_test_gateway: StartGateway, data_dir: Path
) -> None:
    worker = await start_sim_worker()
    port = free_port()  # no store listens: every record stays in the spool
    audit = AuditSpoolSettings(
        spool_path=str(data_dir / "spool.db"),
        source="gw-share",
        store_target=f"127.0.0.1:{port}",
        quota_bytes=4000,
        unhealthy_spool_share=0.25,
        unhealthy_after_s=3600,
    )
    gateway = await start_test_gateway(
        worker, settings=replace(gateway_settings(data_dir / "gw"), audit=audit)
    )
    token = mint_dev_token(data_dir / "gw", department="qa", subject="erin")
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        async def audit_is(status: int) -> bool:
            answer = await health.Check(health_pb2.HealthCheckRequest(service="llmgateway.audit"))
            return bool(answer.status == status)

        assert gateway.pipeline.audit.problem() == ""
        while gateway.pipeline.audit.spool.pending_bytes < 1000:
            await stub.Generate(
                pb.GenerateRequest(model="llama-3.1-8b-instruct", prompt="hello"),
                metadata=(("authorization", f"Bearer {token}"),),
            )
        assert not gateway.pipeline.audit.is_full
        assert "quota" in gateway.pipeline.audit.problem()
        await _eventually(lambda: audit_is(NOT_SERVING), within=5)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("unhealthy_spool_share", 1.5, r"\(0, 1\]"), ("unhealthy_after_s", 0, "positive")],
)
def test_health_thresholds_are_checked(key: str, value: float, message: str) -> None:
    data = {"spool_path": "s.db", "source": "gw", "store_target": "127.0.0.1:4317", key: value}
    with pytest.raises(ValueError, match=message):
        read(AuditSpoolSettings, data, "audit")
