"""A full audit spool refuses departments that must be audited and serves the others."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc

from audit.settings import AuditSpoolSettings
from gateway.auth.devkeys import dev_auth_settings
from tests.helpers import Mint, StartGateway, StartWorker, gateway_settings
from tests.support.rpc_status import detail


async def test_full_spool_fails_closed_for_required_audit(
    data_dir: Path, start_sim_worker: StartWorker, start_test_gateway: StartGateway, mint: Mint
) -> None:
    # The store is unreachable, so records pile up in a spool with room for a few of them.
    audit = AuditSpoolSettings(
        spool_path=str(data_dir / "spool.db"),
        source="gw-test",
        store_target="127.0.0.1:9",
        quota_bytes=4_000,
        flush_timeout_s=0.2,
    )
    settings = gateway_settings(data_dir / "gw", auth=dev_auth_settings(data_dir), audit=audit)
    gateway = await start_test_gateway(await start_sim_worker(), settings=settings)
    request = pb.GenerateRequest(
        model="llama-3.1-8b-instruct", prompt="hello", sampling=pb.SamplingParams(max_tokens=2)
    )
    strict = (("authorization", f"Bearer {mint('qa')}"),)
    lenient = (("authorization", f"Bearer {mint('qa-lenient')}"),)
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        served = 0
        for _ in range(200):
            try:
                await stub.Generate(request, metadata=strict, timeout=5)
                served += 1
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                assert "audit spool is full" in (error.details() or "")
                info = detail(error, error_details_pb2.ErrorInfo)
                assert info is not None and info.reason == "audit.spool_full"
                break
        else:
            pytest.fail("the spool never filled up")
        assert served > 0 and gateway.pipeline.audit.is_full
        # A department whose policy allows it is still served (and its record is dropped
        # with a log line rather than blocking the answer).
        response = await stub.Generate(request, metadata=lenient, timeout=5)
        assert response.usage.completion_tokens == 2
