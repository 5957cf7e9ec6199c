"""Refusals before authentication are audited once per peer, reason and window, with a count."""

from __future__ import annotations

from pathlib import Path

import grpc
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc
from prometheus_client import REGISTRY

from audit.record import AuditRecord, Outcome
from audit.settings import AuditSpoolSettings
from gateway.auth.devkeys import dev_auth_settings
from gateway.process.server import GatewayHandle
from gateway.request.anonymous import AnonymousRefusals, peer_host
from tests.helpers import Mint, StartGateway, StartWorker, bearer, gateway_settings
from tests.support.clock import FakeClock

REQUEST = pb.GenerateRequest(
    model="llama-3.1-8b-instruct", prompt="hello", sampling=pb.SamplingParams(max_tokens=2)
)


async def _gateway(
    data_dir: Path, start_sim_worker: StartWorker, start_test_gateway: StartGateway
) -> GatewayHandle:
    # The store is unreachable, so every record stays in the spool where the test reads it.
    audit = AuditSpoolSettings(
        spool_path=str(data_dir / "spool.db"),
        source="gw-test",
        store_target="127.0.0.1:9",
        flush_timeout_s=0.2,
    )
    settings = gateway_settings(data_dir / "gw", auth=dev_auth_settings(data_dir), audit=audit)
    return await start_test_gateway(await start_sim_worker(), settings=settings)


async def _refusals(gateway: GatewayHandle) -> list[AuditRecord]:
    records = await gateway.pipeline.audit.spool.pending(10_000)
    return [r for r in records if r.status_code == "UNAUTHENTICATED"]


def _unauthenticated_requests_counted() -> float:
    """`llmgw_requests_total` summed over its UNAUTHENTICATED series."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "llmgw_requests"
        for sample in metric.samples
        if sample.name == "llmgw_requests_total"
        and sample.labels.get("grpc_status") == "UNAUTHENTICATED"
    )


async def _send(gateway: GatewayHandle, n: int, metadata: tuple[tuple[str, str], ...]) -> None:
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        for _ in range(n):
            try:
                await stub.Generate(REQUEST, metadata=metadata, timeout=5)
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            else:
                raise AssertionError("a junk token was accepted")


async def test_a_flood_of_junk_tokens_costs_two_records_per_reason_and_window(
    data_dir: Path, start_sim_worker: StartWorker, start_test_gateway: StartGateway
) -> None:
    gateway = await _gateway(data_dir, start_sim_worker, start_test_gateway)
    counted = _unauthenticated_requests_counted()
    await _send(gateway, 30, (("authorization", "Bearer not-a-jwt"),))
    await _send(gateway, 5, ())  # another reason: no credentials at all

    # Aggregation spares the audit trail, not the metrics: every refusal is counted there.
    assert _unauthenticated_requests_counted() - counted == 35

    # While the window runs: the first refusal of each reason, audited in full.
    first = await _refusals(gateway)
    assert sorted(r.rules_fired for r in first) == [("auth.malformed",), ("auth.missing",)]
    assert all(r.repeats == 0 and r.peer == "127.0.0.1" for r in first)
    assert all(r.outcome is Outcome.DENIED and r.subject_pseudonym == "" for r in first)

    # When it ends: one record per reason stands for the others, with their count.
    assert await gateway.pipeline.anonymous.flush(gateway.pipeline.audit, everything=True) == 2
    records = await _refusals(gateway)
    aggregates = {r.rules_fired: r.repeats for r in records if r.repeats}
    assert aggregates == {("auth.malformed",): 29, ("auth.missing",): 4}
    assert len(records) == 4
    # Nothing lost: the records account for every one of the 35 refusals.
    assert sum(1 + r.repeats if r.repeats else 1 for r in records) - len(aggregates) == 35


async def test_an_authenticated_refusal_is_never_aggregated(
    data_dir: Path,
    start_sim_worker: StartWorker,
    start_test_gateway: StartGateway,
    mint: Mint,
) -> None:
    gateway = await _gateway(data_dir, start_sim_worker, start_test_gateway)
    token = mint("no-such-department")
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        for _ in range(3):
            try:
                await stub.Generate(REQUEST, metadata=bearer(token), timeout=5)
            except grpc.aio.AioRpcError as error:
                assert error.code() != grpc.StatusCode.UNAUTHENTICATED
    records = await gateway.pipeline.audit.spool.pending(100)
    assert len(records) == 3 and all(r.subject_pseudonym and r.repeats == 0 for r in records)


def test_windows_roll_on_the_clock_and_keys_are_bounded() -> None:
    clock = FakeClock()
    refusals = AnonymousRefusals(window_s=10.0, clock=clock)
    assert refusals.first("ipv4:10.0.0.7:5512", "auth.expired", "UNAUTHENTICATED", "grpc")
    assert not refusals.first("ipv4:10.0.0.7:6000", "auth.expired", "UNAUTHENTICATED", "grpc")
    assert refusals.first("ipv4:10.0.0.8:5512", "auth.expired", "UNAUTHENTICATED", "grpc")
    clock.advance(10.0)
    # A new window: the first refusal of each kind is audited again.
    assert refusals.first("ipv4:10.0.0.7:5512", "auth.expired", "UNAUTHENTICATED", "grpc")


def test_peer_host_drops_the_port() -> None:
    assert peer_host("ipv4:10.0.0.7:5512") == "10.0.0.7"
    assert peer_host("ipv6:[::1]:5512") == "::1"
    assert peer_host("unix:/tmp/sock") == "unix:/tmp/sock"
