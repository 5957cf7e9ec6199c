"""Junk tokens with the audit store down cannot get an authenticated department refused."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc

from audit.settings import AuditSpoolSettings
from gateway.auth.devkeys import dev_auth_settings
from tests.helpers import StartGateway, StartWorker, gateway_settings


async def test_anonymous_refusals_cannot_fill_the_spool_for_authenticated_callers(
    data_dir: Path,
    start_sim_worker: StartWorker,
    start_test_gateway: StartGateway,
    mint: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    # The store is unreachable (port 9), so every record stays in a spool with a small quota.
    audit = AuditSpoolSettings(
        spool_path=str(data_dir / "spool.db"),
        source="gw-test",
        store_target="127.0.0.1:9",
        quota_bytes=20_000,
        flush_timeout_s=0.2,
        anonymous_share=0.1,
        # Aggregation alone would keep this flood to two records; turned off, the share is what
        # must protect authenticated callers (defence in depth).
        anonymous_window_s=0,
    )
    settings = gateway_settings(data_dir / "gw", auth=dev_auth_settings(data_dir), audit=audit)
    gateway = await start_test_gateway(await start_sim_worker(), settings=settings)
    spool = gateway.pipeline.audit.spool
    request = pb.GenerateRequest(
        model="llama-3.1-8b-instruct", prompt="hello", sampling=pb.SamplingParams(max_tokens=2)
    )
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        # Far more refused junk than the whole quota holds (a record is a few hundred bytes).
        for i in range(300):
            try:
                await stub.Generate(request, metadata=(("authorization", f"Bearer j{i}"),))
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        # `qa` must be audited (fail closed); it is served and its record is written.
        before = spool.pending_bytes
        strict = (("authorization", f"Bearer {mint('qa')}"),)
        for _ in range(5):
            response = await stub.Generate(request, metadata=strict, timeout=10)
            assert response.usage.completion_tokens == 2
        assert spool.pending_bytes > before
    # 300 refused calls cost a bounded number of log lines, none with a traceback.
    refusals = [r for r in caplog.records if "refused" in r.getMessage() or r.exc_info]
    assert len(refusals) <= 5, [r.getMessage() for r in refusals]
    assert not [r for r in caplog.records if r.exc_info]
    assert spool.anonymous_bytes >= spool.anonymous_quota_bytes  # the junk did use its share
    assert not gateway.pipeline.audit.is_full
