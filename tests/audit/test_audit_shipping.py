"""Spool -> shipper -> a real audit store over OTLP/gRPC: exactly once, through outages."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from audit.otlp import export_request
from audit.settings import AuditStoreSettings
from audit.shipper import Shipper
from audit.spool import AuditSpool
from audit.store import TRACE_SERVICE, AuditStoreHandle, serve_store
from audit.verify import verify
from tests.audit.conftest import MakeRecord
from tests.support.polling import wait_until
from tests.support.ports import free_port


async def test_store_down_then_back_delivers_everything_once(
    tmp_path: Path, make_record: MakeRecord
) -> None:
    port = free_port()
    spool = AuditSpool(tmp_path / "spool.db", quota_bytes=10**9, source="gw-0")
    shipper = Shipper(
        spool, f"127.0.0.1:{port}", batch_size=16, max_backoff_s=0.2, export_timeout_s=1.0
    )
    await shipper.start()
    for _ in range(40):
        await spool.append(make_record())
    await wait_until(lambda: shipper.health().last_error is not None, within=10, every=0.02)
    assert shipper.health().delivered == 0
    assert await spool.pending_count() == 40

    settings = AuditStoreSettings(
        keys_dir=str(tmp_path / "keys"), listen=f"127.0.0.1:{port}", db_path=str(tmp_path / "l.db")
    )
    store = await serve_store(settings)
    try:
        for _ in range(25):  # appends while the backlog drains
            await spool.append(make_record())
        await wait_until(lambda: shipper.health().delivered == 65, within=10, every=0.02)
        assert await spool.pending_count() == 0
        assert await store.gate.run(lambda ledger: ledger.count()) == 65
        assert shipper.health().last_error is None
        assert (await store.gate.run(verify)).ok
    finally:
        await shipper.close()
        await spool.close()
        await store.stop(grace=0)


async def test_close_is_bounded_and_keeps_undelivered_records(
    tmp_path: Path, make_record: MakeRecord
) -> None:
    spool = AuditSpool(tmp_path / "spool.db", quota_bytes=10**9, source="gw-0")
    shipper = Shipper(spool, f"127.0.0.1:{free_port()}", max_backoff_s=0.1, export_timeout_s=0.5)
    await shipper.start()
    await spool.append(make_record())
    started = time.monotonic()
    await shipper.close(flush_timeout_s=0.3)
    assert time.monotonic() - started < 2.0
    assert await spool.pending_count() == 1
    await spool.close()


async def test_export_sent_twice_is_stored_once(
    store: AuditStoreHandle, make_record: MakeRecord
) -> None:
    request = export_request([make_record(), make_record()], "gw")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{store.port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]
        for _ in range(2):
            response = await stub.Export(request, timeout=5)
            assert response.partial_success.rejected_spans == 0
    assert await store.gate.run(lambda ledger: ledger.count()) == 2


async def test_foreign_spans_are_ignored_and_bad_audit_spans_rejected(
    store: AuditStoreHandle, make_record: MakeRecord
) -> None:
    request = export_request([make_record(), make_record(source="")], "gw")
    other = request.resource_spans.add().scope_spans.add()
    other.scope.name = "some.library"
    other.spans.add(name="GET /")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{store.port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]
        response = await stub.Export(request, timeout=5)
        health = health_pb2_grpc.HealthStub(channel)
        status = await health.Check(health_pb2.HealthCheckRequest(service=TRACE_SERVICE))
    assert response.partial_success.rejected_spans == 1
    assert "source" in response.partial_success.error_message
    assert await store.gate.run(lambda ledger: ledger.count()) == 1
    assert status.status == health_pb2.HealthCheckResponse.SERVING


async def test_stop_signs_a_checkpoint_of_the_heads(
    tmp_path: Path, make_record: MakeRecord
) -> None:
    settings = AuditStoreSettings(
        keys_dir=str(tmp_path / "keys"), listen="127.0.0.1:0", db_path=str(tmp_path / "l.db")
    )
    store = await serve_store(settings)
    await store.gate.append([make_record(), make_record(source="gw-1")])
    await store.stop(grace=0)
    from audit.checkpoint import load_public_key
    from audit.sqlite_ledger import SqliteLedger

    ledger = SqliteLedger(tmp_path / "l.db")
    try:
        checkpoints = ledger.checkpoints()
        assert len(checkpoints) == 1
        assert set(checkpoints[0].heads()) == {"gw-0", "gw-1"}
        key = load_public_key(tmp_path / "keys" / "checkpoint_ed25519.pub.pem")
        assert verify(ledger, key).ok
    finally:
        ledger.close()
