"""Gateway-to-worker mutual TLS and TLS towards the audit store, over real connections."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc

from audit.settings import AuditSpoolSettings, AuditStoreSettings
from audit.store import serve_store
from gateway.auth.devkeys import dev_auth_settings
from gateway.client_tls import ClientTls
from gateway.process.server import GatewayHandle
from tests.helpers import FAST_SIM, Mint, StartGateway, StartWorker, gateway_settings, wait_until
from tests.support.pki import Ca
from workers.server import WorkerHandle, start_worker
from workers.sim import SimEngine

REQUEST = pb.GenerateRequest(
    model="llama-3.1-8b-instruct", prompt="hello", sampling=pb.SamplingParams(max_tokens=3)
)


@pytest.fixture
async def tls_worker(tmp_path: Path) -> AsyncIterator[tuple[WorkerHandle, Ca]]:
    """A worker that speaks TLS and accepts only clients certified by the test CA."""
    ca = Ca()
    cert, key = ca.issue("worker.test", server=True)
    credentials = grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca.pem, require_client_auth=True
    )
    worker = await start_worker(SimEngine(FAST_SIM), credentials=credentials)
    yield worker, ca
    await worker.stop(grace=0)


async def _generate(gateway: GatewayHandle, token: str) -> pb.GenerateResponse:
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        response: pb.GenerateResponse = await stub.Generate(
            REQUEST, metadata=(("authorization", f"Bearer {token}"),), timeout=5
        )
        return response


async def test_gateway_reaches_a_worker_over_mutual_tls(
    tmp_path: Path,
    data_dir: Path,
    tls_worker: tuple[WorkerHandle, Ca],
    start_test_gateway: StartGateway,
    mint: Mint,
) -> None:
    worker, ca = tls_worker
    cert, key = ca.write(tmp_path, "gateway.test")
    tls = ClientTls(ca_file=ca.write_ca(tmp_path), cert_file=cert, key_file=key)
    base = gateway_settings(data_dir / "gw", auth=dev_auth_settings(data_dir))
    settings = replace(base, routing=replace(base.routing, tls=tls))
    gateway = await start_test_gateway(worker, settings=settings)
    response = await _generate(gateway, mint())
    assert response.usage.completion_tokens == 3


async def test_worker_refuses_a_gateway_without_a_client_certificate(
    tmp_path: Path,
    data_dir: Path,
    tls_worker: tuple[WorkerHandle, Ca],
    start_test_gateway: StartGateway,
    mint: Mint,
) -> None:
    worker, ca = tls_worker
    tls = ClientTls(ca_file=ca.write_ca(tmp_path))  # trusts the worker, but has no certificate
    base = gateway_settings(data_dir / "gw", auth=dev_auth_settings(data_dir))
    settings = replace(base, routing=replace(base.routing, tls=tls, connect_timeout_s=0.5))
    gateway = await start_test_gateway(worker, settings=settings)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _generate(gateway, mint())
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(worker.engine.received) == 0  # type: ignore[attr-defined]


async def test_audit_records_ship_over_tls(
    tmp_path: Path,
    data_dir: Path,
    start_sim_worker: StartWorker,
    start_test_gateway: StartGateway,
    mint: Mint,
) -> None:
    ca = Ca()
    cert, key = ca.write(tmp_path, "audit.test", server=True)
    store = await serve_store(
        AuditStoreSettings(
            keys_dir=str(tmp_path / "store-keys"),
            listen="127.0.0.1:0",
            db_path=str(tmp_path / "ledger.db"),
            tls_cert_file=cert,
            tls_key_file=key,
        )
    )
    try:
        audit = AuditSpoolSettings(
            spool_path=str(data_dir / "spool.db"),
            source="gw-tls",
            store_target=f"127.0.0.1:{store.port}",
            tls_ca_file=ca.write_ca(tmp_path),
        )
        settings = gateway_settings(data_dir / "gw", auth=dev_auth_settings(data_dir), audit=audit)
        gateway = await start_test_gateway(await start_sim_worker(), settings=settings)
        response = await _generate(gateway, mint())

        def stored() -> set[str]:
            with sqlite3.connect(tmp_path / "ledger.db") as conn:
                return {row[0] for row in conn.execute("SELECT record_id FROM records")}

        await wait_until(lambda: response.request_id in stored(), within=10)
    finally:
        await store.stop(grace=0)
