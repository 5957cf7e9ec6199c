"""End to end: the audit trail and tracing of real requests, from the gateway to a real store.

Every test runs a real sim worker, a real gateway and a real audit store (SQLite in tmp) on
127.0.0.1, and reads what arrived in the ledger file itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import sqlite3
import string
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from audit.settings import AuditSpoolSettings, AuditStoreSettings
from audit.store import AuditStoreHandle, serve_store
from common.egress import ResidencyViolation
from common.telemetry import TelemetrySettings
from gateway.auth.settings import DEV_AUDIENCE, DEV_ISSUER
from gateway.process.server import GatewayHandle, start_gateway
from gateway.routing.settings import RoutingSettings
from gateway.settings import GatewaySettings
from tests.gateway.observability.otlp_collector import Collector, run_collector
from tests.helpers import (
    EXAMPLE_POLICY,
    TEST_POLICY,
    StartGateway,
    StartWorker,
    bearer,
    gateway_settings,
    wait_until,
)
from workers.sim import SimConfig

LLAMA = "llama-3.1-8b-instruct"
QWEN = "qwen2.5-7b-instruct"
SOURCE = "gw-e2e"
LLM_AUDIT = Path(sys.executable).with_name("llm-audit")
LLM_GATEWAY = Path(sys.executable).with_name("llm-gateway")
# Slow enough that a stream can be cancelled, timed out or cut off while it runs.
STEADY_SIM = SimConfig(time_to_first_token_ms=5, inter_token_latency_ms=20, prefill_ms_per_token=0)
ChannelTo = Callable[[GatewayHandle], grpc.aio.Channel]
Mint = Callable[..., str]


@dataclass
class Store:
    """A real audit store and where its ledger and keys live (restartable on the same port)."""

    db: Path
    keys_dir: Path
    handle: AuditStoreHandle | None = None
    port: int = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.handle = await serve_store(
            AuditStoreSettings(
                keys_dir=str(self.keys_dir),
                listen=f"127.0.0.1:{self.port}",
                db_path=str(self.db),
                checkpoint_interval_s=3600,
            )
        )
        self.port = self.handle.port

    async def stop(self) -> None:
        """Stop serving; signs a last checkpoint of the chain heads."""
        if self.handle is not None:
            await self.handle.stop(grace=0)
            self.handle = None

    def rows(self) -> list[dict[str, Any]]:
        """Every ledger record, in chain order, with its body decoded."""
        conn = sqlite3.connect(self.db)
        try:
            rows = conn.execute(
                "SELECT record_id, chain_index, body FROM records ORDER BY source, chain_index"
            ).fetchall()
        finally:
            conn.close()
        return [{**json.loads(body), "chain_index": index} for _, index, body in rows]

    def content_of(self, record_id: str) -> str | None:
        """The prompt text the side table keeps for a record (None when none is kept)."""
        conn = sqlite3.connect(self.db)
        try:
            row = conn.execute(
                "SELECT prompt_text FROM contents WHERE record_id = ?", (record_id,)
            ).fetchone()
        finally:
            conn.close()
        return None if row is None else str(row[0])


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    running = Store(db=tmp_path / "ledger.db", keys_dir=tmp_path / "store-keys")
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
def collector() -> Iterator[Collector]:
    with run_collector() as running:
        yield running


StartAudited = Callable[[GatewaySettings], Awaitable[GatewayHandle]]


@pytest.fixture
def start_audited(start_sim_worker: StartWorker, start_test_gateway: StartGateway) -> StartAudited:
    """Start a gateway with `settings` in front of a fresh fast sim worker."""

    async def start(settings: GatewaySettings) -> GatewayHandle:
        return await start_test_gateway(await start_sim_worker(), settings=settings)

    return start


@pytest.fixture
async def audited_gateway(
    data_dir: Path, store: Store, start_audited: StartAudited
) -> GatewayHandle:
    """A gateway (TEST_POLICY) in front of a fast sim worker, auditing to `store`."""
    return await start_audited(audited(data_dir, store))


def audited(
    data_dir: Path, store: Store, policy_dir: Path = TEST_POLICY, **overrides: Any
) -> GatewaySettings:
    """Test gateway settings (same dev key as `mint`) whose records ship to `store`."""
    spool = AuditSpoolSettings(
        spool_path=str(data_dir / "audit-spool.db"), source=SOURCE, store_target=store.target
    )
    return gateway_settings(data_dir, policy_dir, audit=spool, **overrides)


def traced(collector: Collector) -> TelemetrySettings:
    return TelemetrySettings(
        enabled=True, otlp_endpoint=f"http://127.0.0.1:{collector.port}", export_timeout_s=5.0
    )


def generate(prompt: str = "Summarise the ward round", **fields: Any) -> pb.GenerateRequest:
    fields.setdefault("model", LLAMA)
    fields.setdefault("sampling", pb.SamplingParams(max_tokens=4, seed=7))
    return pb.GenerateRequest(prompt=prompt, **fields)


def streamed(prompt: str = "Summarise the ward round", **fields: Any) -> pb.GenerateStreamRequest:
    return pb.GenerateStreamRequest.FromString(generate(prompt, **fields).SerializeToString())


async def expect_status(call: Any, code: grpc.StatusCode) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()


async def drained(gateway: GatewayHandle, store: Store, count: int) -> list[dict[str, Any]]:
    """The ledger once it holds `count` records and the gateway's spool is empty."""
    spool = gateway.pipeline.audit.spool
    await wait_until(lambda: len(store.rows()) >= count, within=10)

    async def spool_empty() -> bool:
        return await spool.pending_count() == 0

    await wait_until(spool_empty, within=5, every=0.01, what="empty spool")
    assert await spool.pending_count() == 0
    return store.rows()


def llm_audit_verify(store: Store) -> str:
    """`llm-audit verify` on the ledger file with the store's pinned public key; must pass."""
    done = subprocess.run(
        [
            str(LLM_AUDIT),
            "verify",
            "--db",
            str(store.db),
            "--public-key",
            str(store.keys_dir / "checkpoint_ed25519.pub.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def exported_spans(collector: Collector) -> list[Span]:
    return [
        span
        for request in collector.requests
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]


def attributes(span: Span) -> dict[str, Any]:
    """Scalar attribute values by key."""
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value") or "") for kv in span.attributes}


async def flush_spans(gateway: GatewayHandle) -> None:
    provider = gateway.pipeline.tracing.provider
    assert provider is not None, "tracing is not enabled on this gateway"
    assert await asyncio.to_thread(provider.force_flush, 5_000)


def traceparent(sampled: bool) -> tuple[str, str, list[tuple[str, str]]]:
    """A caller's (trace id, span id, metadata) with the sampled flag set or not."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    flags = "01" if sampled else "00"
    return trace_id, span_id, [("traceparent", f"00-{trace_id}-{span_id}-{flags}")]


# --- one record per request, whatever the outcome ------------------------------------------


async def test_every_outcome_has_exactly_one_record_and_the_ledger_verifies(
    data_dir: Path,
    store: Store,
    mint: Mint,
    start_sim_worker: StartWorker,
    start_test_gateway: StartGateway,
) -> None:
    worker = await start_sim_worker(STEADY_SIM)
    gateway = await start_test_gateway(worker, settings=audited(data_dir, store, EXAMPLE_POLICY))
    clinician = bearer(mint("emergency", "dr-a", roles=("clinician",), clearance="health"))
    clerk = bearer(mint("administration", "clerk-b"))
    classified: dict[str, Any] = {"classification": "internal"}
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        ok = await stub.Generate(
            generate(client_request_id="ok", **classified), metadata=clinician, timeout=5
        )
        # Administration may not use llama: a policy denial.
        await expect_status(
            stub.Generate(generate(client_request_id="policy"), metadata=clerk),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        await expect_status(stub.Generate(generate()), grpc.StatusCode.UNAUTHENTICATED)
        await expect_status(
            stub.Generate(generate("   ", client_request_id="blank"), metadata=clinician),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        long_answer = pb.SamplingParams(max_tokens=200)
        await expect_status(
            stub.Generate(
                generate(client_request_id="late", sampling=long_answer, **classified),
                metadata=clinician,
                timeout=0.2,
            ),
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
        call = stub.GenerateStream(
            streamed(client_request_id="gone", sampling=long_answer, **classified),
            metadata=clinician,
        )
        async for _ in call:
            break  # the first tokens arrived: the client goes away mid-stream
        call.cancel()
        await wait_until(lambda: len(store.rows()) == 6, within=5)
        cut = stub.GenerateStream(
            streamed(client_request_id="cut", sampling=long_answer, **classified),
            metadata=clinician,
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for message in cut:
                if message.token_count == 1:  # once, at the first token
                    await worker.stop(grace=0)  # the worker dies mid-stream
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE

    rows = await drained(gateway, store, 7)
    seen = {r["status_code"]: (r["department"], r["outcome"], r["client_request_id"]) for r in rows}
    assert seen == {
        "OK": ("emergency", "ok", "ok"),
        "PERMISSION_DENIED": ("administration", "denied", "policy"),
        "UNAUTHENTICATED": ("", "denied", ""),  # refused before the request was read
        "INVALID_ARGUMENT": ("emergency", "denied", ""),  # the request did not convert
        "DEADLINE_EXCEEDED": ("emergency", "deadline", "late"),
        "CANCELLED": ("emergency", "cancelled", "gone"),
        "UNAVAILABLE": ("emergency", "error", "cut"),
    }
    assert len(rows) == 7 and len({r["record_id"] for r in rows}) == 7
    (answered,) = [r for r in rows if r["outcome"] == "ok"]
    assert answered["record_id"] == ok.request_id
    assert answered["completion_tokens"] == ok.usage.completion_tokens == 4
    assert answered["worker"] == "sim-0" and answered["model"] == LLAMA
    assert answered["prompt_hmac"] and not answered["prompt_text_captured"]
    assert answered["subject_commitment"] and "dr-a" not in json.dumps(rows)
    (cut_off,) = [r for r in rows if r["outcome"] == "error"]
    assert cut_off["completion_tokens"] >= 1  # what was streamed before the failure counts
    assert [r["chain_index"] for r in rows] == list(range(1, 8))
    await store.stop()
    assert "OK: 7 records in 1 chain(s), 1 checkpoint(s)" in llm_audit_verify(store)


async def test_a_refusal_inside_the_exchange_is_spooled_once(
    audited_gateway: GatewayHandle, store: Store, mint: Mint, channel_to: ChannelTo
) -> None:
    # The exchange writes the record of a refused request; nothing outside it may
    # append it a second time (the ledger would dedupe it, but it costs a second fsync and a
    # second shipment, and the spool's count of appends no longer matches the requests).
    gateway = audited_gateway
    async with channel_to(gateway) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        stranger = bearer(mint("no-such-department"))
        await expect_status(
            stub.Generate(generate(), metadata=stranger), grpc.StatusCode.PERMISSION_DENIED
        )
    (row,) = await drained(gateway, store, 1)
    assert row["outcome"] == "denied"
    assert gateway.pipeline.audit.spool.appends == 1


# --- tracing ---------------------------------------------------------------------------------


@pytest.fixture
async def traced_gateway(
    data_dir: Path, store: Store, collector: Collector, start_audited: StartAudited
) -> GatewayHandle:
    """A gateway (TEST_POLICY) auditing to `store` and exporting its spans to `collector`."""
    return await start_audited(audited(data_dir, store, telemetry=traced(collector)))


async def test_unsampled_caller_still_gets_an_audit_record(
    traced_gateway: GatewayHandle, store: Store, collector: Collector, channel_to: ChannelTo
) -> None:
    gateway = traced_gateway
    quiet_trace, _, quiet = traceparent(sampled=False)
    loud_trace, _, loud = traceparent(sampled=True)
    async with channel_to(gateway) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        unsampled = await stub.Generate(generate(), metadata=quiet)
        await stub.Generate(generate(), metadata=loud)
    await flush_spans(gateway)
    exported = {span.trace_id.hex() for span in exported_spans(collector)}
    assert loud_trace in exported  # spans of a sampled caller are exported...
    assert quiet_trace not in exported  # ...an unsampled caller's are not,
    rows = {r["record_id"]: r for r in await drained(gateway, store, 2)}
    assert rows[unsampled.request_id]["trace_id"] == quiet_trace  # but its record is there
    assert rows[unsampled.request_id]["outcome"] == "ok"


async def test_callers_trace_continues_in_gateway_spans_with_genai_attributes(
    traced_gateway: GatewayHandle, store: Store, collector: Collector, channel_to: ChannelTo
) -> None:
    gateway = traced_gateway
    trace_id, parent_id, metadata = traceparent(sampled=True)
    async with channel_to(gateway) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        messages = [
            m
            async for m in stub.GenerateStream(
                streamed(sampling=pb.SamplingParams(max_tokens=6)), metadata=metadata
            )
        ]
    await flush_spans(gateway)
    spans = [s for s in exported_spans(collector) if s.trace_id.hex() == trace_id]
    (root,) = [s for s in spans if s.name == "gen_ai.generate"]
    assert root.parent_span_id.hex() == parent_id
    assert root.kind == Span.SPAN_KIND_SERVER
    attrs = attributes(root)
    assert attrs["gen_ai.request.model"] == LLAMA
    assert attrs["gen_ai.usage.output_tokens"] == messages[-1].usage.completion_tokens == 6
    assert attrs["gen_ai.usage.input_tokens"] == messages[-1].usage.prompt_tokens > 0
    assert attrs["gen_ai.response.id"] == messages[-1].request_id
    assert attrs["gen_ai.request.stream"] is True
    children = {s.name for s in spans if s.parent_span_id == root.span_id}
    assert {"authenticate", "policy", "limits", "route_and_generate"} <= children
    (row,) = await drained(gateway, store, 1)
    assert (row["trace_id"], row["span_id"]) == (trace_id, root.span_id.hex())


# --- no prompt text where policy does not allow it -------------------------------------------


def marker() -> str:
    # Letters only: digits could look like a CPR number or a phone number to the guard.
    return "mrk" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(20))


def file_bytes(db: Path) -> bytes:
    """A SQLite database's bytes, its WAL included (recent writes live there)."""
    return b"".join(p.read_bytes() for p in sorted(db.parent.glob(db.name + "*")) if p.is_file())


async def test_prompt_text_is_kept_only_where_policy_allows_it(
    data_dir: Path,
    store: Store,
    collector: Collector,
    mint: Mint,
    start_sim_worker: StartWorker,
    start_test_gateway: StartGateway,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    worker = await start_sim_worker()
    settings = audited(data_dir, store, EXAMPLE_POLICY, telemetry=traced(collector))
    gateway = await start_test_gateway(worker, settings=settings)
    hashed, kept = marker(), marker()
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        emergency = await stub.Generate(  # audit.content: hashes
            generate(f"Triage note {hashed}", classification="internal"),
            metadata=bearer(mint("emergency", "dr-a", roles=("clinician",))),
        )
        administration = await stub.Generate(  # audit.content: full, no capture in traces
            generate(f"Draft a letter about {kept}", model=QWEN),
            metadata=bearer(mint("administration", "clerk-b")),
        )
    received = [e.prompt for e in worker.engine.received]  # type: ignore[attr-defined]
    assert received == [f"Triage note {hashed}", f"Draft a letter about {kept}"]
    rows = {r["record_id"]: r for r in await drained(gateway, store, 2)}
    await flush_spans(gateway)
    spans = b"".join(request.SerializeToString() for request in collector.requests)
    ledger = file_bytes(store.db)
    spool = file_bytes(data_dir / "audit-spool.db")
    # The searches look where the requests went: their spans and records are there.
    for response in (emergency, administration):
        assert response.request_id.encode() in spans
        assert response.request_id.encode() in ledger and response.request_id.encode() in spool

    assert rows[emergency.request_id]["prompt_hmac"]
    assert store.content_of(emergency.request_id) is None
    for where, blob in (("spans", spans), ("ledger", ledger), ("spool", spool)):
        assert hashed.encode() not in blob, f"prompt text of a hashes department in the {where}"
    assert caplog.records and hashed not in caplog.text

    assert kept in (store.content_of(administration.request_id) or "")
    assert kept.encode() in ledger  # the byte search finds text that is there
    assert kept.encode() not in spans


async def test_streamed_answer_is_hashed_as_it_streams_and_kept_only_where_allowed(
    data_dir: Path, mint: Mint, start_sim_worker: StartWorker, start_test_gateway: StartGateway
) -> None:
    """A stream's answer is hashed part by part (a hashes department keeps no text of it): the
    record's hash is the same keyed hash of the whole answer, and full content keeps the text."""
    worker = await start_sim_worker()
    gateway = await start_test_gateway(worker, settings=gateway_settings(data_dir, EXAMPLE_POLICY))
    answers: dict[str, str] = {}
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        for department, request, roles in (
            ("emergency", streamed("Triage note", classification="internal",
                                   sampling=pb.SamplingParams(max_tokens=40)),
             ("clinician",)),
            ("administration", streamed("Draft a letter", model=QWEN), ()),
        ):  # fmt: skip
            call = stub.GenerateStream(
                request, metadata=bearer(mint(department, "user-s", roles=roles))
            )
            parts = [message.text async for message in call]
            answers[department] = "".join(parts)
            assert len(parts) > 2 and answers[department]
    records = {r.department: r for r in await gateway.pipeline.audit.spool.pending(10)}
    keys = gateway.pipeline.audit.keys
    hashed, kept = records["emergency"], records["administration"]
    assert hashed.answer_hmac == keys.content(answers["emergency"])
    assert hashed.answer_text is None
    assert kept.answer_hmac == keys.content(answers["administration"])
    assert kept.answer_text == answers["administration"]


async def test_trace_content_capture_allowed_by_policy_reaches_the_span(
    tmp_path: Path,
    data_dir: Path,
    store: Store,
    collector: Collector,
    mint: Mint,
    start_audited: StartAudited,
) -> None:
    policy_dir = tmp_path / "policy"
    shutil.copytree(TEST_POLICY, policy_dir)
    (policy_dir / "transcripts.yaml").write_text(
        "version: 1\ndepartment: transcripts\n"
        "audit: {content: full, capture_content_in_traces: true}\n"
    )
    gateway = await start_audited(audited(data_dir, store, policy_dir, telemetry=traced(collector)))
    text = marker()
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        response = await stub.Generate(
            generate(f"Transcribe {text}"), metadata=bearer(mint("transcripts", "scribe"))
        )
    await drained(gateway, store, 1)
    assert text in (store.content_of(response.request_id) or "")
    await flush_spans(gateway)
    (root,) = [s for s in exported_spans(collector) if s.name == "gen_ai.generate"]
    assert text in attributes(root).get("gen_ai.input.messages", "")


# --- store outage -----------------------------------------------------------------------------


@pytest.mark.slow
async def test_records_made_while_the_store_is_down_arrive_exactly_once(
    audited_gateway: GatewayHandle, store: Store, channel_to: ChannelTo
) -> None:
    gateway = audited_gateway
    shipper = gateway.pipeline.audit.shipper
    assert shipper is not None
    answered: list[str] = []
    stop = asyncio.Event()

    async def client(stub: gateway_pb2_grpc.InferenceServiceAsyncStub) -> None:
        while not stop.is_set():
            answered.append((await stub.Generate(generate(), timeout=5)).request_id)

    async with channel_to(gateway) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        clients = [asyncio.create_task(client(stub)) for _ in range(4)]
        await wait_until(lambda: len(store.rows()) >= 20, within=10)
        await store.stop()
        at_outage = len(answered)
        await wait_until(lambda: shipper.health().last_error is not None, within=5)
        await wait_until(lambda: len(answered) >= at_outage + 40, within=10)
        during_outage = len(answered) - at_outage
        await store.start()  # same port, same ledger
        await wait_until(lambda: len(answered) >= at_outage + during_outage + 20, within=10)
        stop.set()
        await asyncio.gather(*clients)

    rows = await drained(gateway, store, len(answered))
    assert sorted(r["record_id"] for r in rows) == sorted(answered)  # each once, none lost
    assert [r["chain_index"] for r in rows] == list(range(1, len(answered) + 1))
    assert shipper.health().last_error is None
    await store.stop()
    llm_audit_verify(store)


# --- residency guard at start -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "address", "what"),
    [
        ("workers", "10.1.2.3:50061", "worker"),
        ("store_target", "10.1.2.3:4317", "audit endpoint"),
    ],
)
async def test_start_refuses_an_egress_address_outside_the_allowlist(
    data_dir: Path, field: str, address: str, what: str
) -> None:
    server = replace(GatewaySettings().server, listen="127.0.0.1:0")
    base = gateway_settings(data_dir, server=server)
    if field == "workers":
        settings = replace(base, routing=RoutingSettings(workers=(address,)))
    else:
        spool = AuditSpoolSettings(
            spool_path=str(data_dir / "audit-spool.db"), source=SOURCE, store_target=address
        )
        settings = replace(base, audit=spool)
    with pytest.raises(ResidencyViolation) as info:
        handle = await start_gateway(settings)
        await handle.stop(grace=0)  # only reached if the guard failed
    assert f"{what} {address} refused" in str(info.value)
    assert "residency.allowed_networks" in str(info.value)
    assert not (data_dir / "audit-spool.db").exists()  # refused before anything was opened


@pytest.mark.parametrize(
    ("worker", "store_target", "refused"),
    [
        ("10.1.2.3:50061", "127.0.0.1:4317", "worker 10.1.2.3:50061 refused"),
        ("127.0.0.1:50061", "10.1.2.3:4317", "audit endpoint 10.1.2.3:4317 refused"),
    ],
)
def test_serve_cli_exits_2_naming_the_refused_address(
    tmp_path: Path, data_dir: Path, worker: str, store_target: str, refused: str
) -> None:
    auth = gateway_settings(data_dir).auth
    assert auth is not None and auth.dev_key_file is not None
    config = tmp_path / "gateway.yaml"
    settings = {
        "server": {"listen": "127.0.0.1:0"},
        "routing": {"workers": [worker]},
        "auth": {
            "issuer": DEV_ISSUER,
            "audience": DEV_AUDIENCE,
            "algorithms": ["EdDSA"],
            "dev_key_file": auth.dev_key_file,
        },
        "policy": {"directory": str(TEST_POLICY)},
        "audit": {
            "spool_path": str(data_dir / "audit-spool.db"),
            "source": SOURCE,
            "store_target": store_target,
        },
        "data_dir": str(data_dir),
    }
    config.write_text(yaml.safe_dump(settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMGW_")}
    done = subprocess.run(
        [str(LLM_GATEWAY), "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"llm-gateway: refusing to start: {refused}" in done.stderr
    assert not (data_dir / "audit-spool.db").exists()
