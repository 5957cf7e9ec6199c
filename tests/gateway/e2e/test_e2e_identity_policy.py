"""End to end: identity and policy decisions through a real gateway, sim worker and audit spool.

Every refusal is checked the way a caller and an auditor see it: the status code, the message,
the google.rpc.ErrorInfo naming the policy rule, what reached the worker (nothing, or redacted
text), and exactly one audit record that holds no prompt text or CPR digits.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc

from audit.record import AuditRecord, Outcome
from gateway.auth.devkeys import dev_auth_settings, dev_key_path
from gateway.auth.settings import DEV_AUDIENCE, DEV_ISSUER
from gateway.process.server import GatewayHandle
from policy.settings import PolicySettings
from tests.helpers import (
    EXAMPLE_POLICY,
    StartGateway,
    StartWorker,
    bearer,
    gateway_settings,
    wait_until,
)
from tests.support.rpc_status import detail, rich_status
from workers.server import WorkerHandle
from workers.sim import SimConfig

if TYPE_CHECKING:
    from llmgateway.v1.gateway_pb2_grpc import InferenceServiceAsyncStub as Stub

LLAMA = "llama-3.1-8b-instruct"
QWEN = "qwen2.5-7b-instruct"
# A valid CPR number (7 July 1961) in both written forms; neither may ever leave the gateway.
CPR = "070761-4285"
CPR_COMPACT = "0707614285"
CPR_DIGITS = ("070761", "4285")
NOTE = f"Patient {CPR} arrived with chest pain; summarise the triage note"
Mint = Callable[..., str]


def unary(**fields: object) -> pb.GenerateRequest:
    values: dict[str, object] = {
        "model": LLAMA,
        "prompt": "Draft the weekly rota",
        "sampling": pb.SamplingParams(max_tokens=8, seed=1),
    }
    values.update(fields)
    return pb.GenerateRequest(**values)  # type: ignore[arg-type]


def streaming(request: pb.GenerateRequest) -> pb.GenerateStreamRequest:
    return pb.GenerateStreamRequest.FromString(request.SerializeToString())


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo detail of a refusal, parsed from `grpc-status-details-bin`."""
    assert rich_status(error).code == error.code().value[0]
    info = detail(error, error_details_pb2.ErrorInfo)
    assert info is not None, "the refusal carries no google.rpc.ErrorInfo"
    return info


# Fields that are hex digests, ids, times or timings: a CPR fragment such as "4285" can turn up in
# them by chance, so only whole numbers and the date part are looked for there.
_OPAQUE = {"record_id", "time_ns", "subject_pseudonym", "trace_id", "span_id", "policy_version",
           "prompt_hmac", "answer_hmac", "timings", "model_digest"}  # fmt: skip


def assert_no_content(record: AuditRecord, *texts: str) -> None:
    """No field of the record contains any of `texts` or any part of the CPR number."""
    fields = record.to_dict()
    readable = json.dumps({k: v for k, v in fields.items() if k not in _OPAQUE})
    for text in (*texts, *CPR_DIGITS, CPR_COMPACT):
        assert text not in readable
    everything = json.dumps(fields)
    for text in (*texts, CPR, CPR_COMPACT, CPR_DIGITS[0]):
        assert text not in everything


async def pending_ids(gateway: GatewayHandle) -> set[str]:
    return {r.record_id for r in await gateway.pipeline.audit.spool.pending(1000)}


async def refused(
    gateway: GatewayHandle,
    stub: Stub,
    request: pb.GenerateRequest,
    metadata: tuple[tuple[str, str], ...],
    method: str,
) -> tuple[grpc.aio.AioRpcError, AuditRecord]:
    """Send a request that must fail (unary or streaming); its error and its one audit record."""
    before = await pending_ids(gateway)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        if method == "unary":
            await stub.Generate(request, metadata=metadata)
        else:
            async for _ in stub.GenerateStream(streaming(request), metadata=metadata):
                pass
    records = [
        r for r in await gateway.pipeline.audit.spool.pending(1000) if r.record_id not in before
    ]
    assert len(records) == 1, f"expected one audit record, found {len(records)}"
    return info.value, records[0]


async def health_of(channel: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    status: int = response.status
    return status


async def health_is(channel: grpc.aio.Channel, service: str, expected: int) -> bool:
    return await health_of(channel, service) == expected


@pytest.fixture
async def ip_worker(start_sim_worker: StartWorker) -> WorkerHandle:
    return await start_sim_worker()


@pytest.fixture
async def ip_gateway(
    start_test_gateway: StartGateway, ip_worker: WorkerHandle, data_dir: Path
) -> GatewayHandle:
    """A gateway on the health-region example policy, trusting the `mint` fixture's key."""
    settings = gateway_settings(data_dir / "example", EXAMPLE_POLICY)
    return await start_test_gateway(
        ip_worker, settings=replace(settings, auth=dev_auth_settings(data_dir))
    )


@pytest.fixture
async def ip_stub(ip_gateway: GatewayHandle) -> AsyncIterator[Stub]:
    """A stub with no default token: every call names its caller."""
    async with grpc.aio.insecure_channel(ip_gateway.target) as channel:
        yield gateway_pb2_grpc.InferenceServiceStub(channel)


# --- identity -------------------------------------------------------------------------------


def _signed(claims: dict[str, object], key: ed25519.Ed25519PrivateKey) -> str:
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"typ": "JWT"})


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": DEV_ISSUER,
        "aud": DEV_AUDIENCE,
        "sub": "nurse-7",
        "department": "emergency",
        "iat": now - 60,
        "exp": now + 600,
    }
    claims.update(overrides)
    return claims


def _dev_key(data_dir: Path) -> ed25519.Ed25519PrivateKey:
    key = serialization.load_pem_private_key(dev_key_path(data_dir).read_bytes(), password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key


@pytest.mark.parametrize("method", ["unary", "stream"])
@pytest.mark.parametrize(
    ("credential", "phrase"),
    [
        ("none", "no credentials"),
        ("garbage", "not a compact JWT"),
        ("expired", "expired"),
        ("foreign", "signature does not verify"),
    ],
)
async def test_bad_credentials_are_unauthenticated_without_echoing_the_token(
    ip_gateway: GatewayHandle,
    ip_stub: Stub,
    ip_worker: WorkerHandle,
    data_dir: Path,
    credential: str,
    phrase: str,
    method: str,
) -> None:
    tokens = {
        "none": None,
        "garbage": "s3cr3t-garbage-token-value",
        # Expired two minutes ago: beyond the verifier's 30 s leeway.
        "expired": _signed(
            _claims(iat=int(time.time()) - 900, exp=int(time.time()) - 120), _dev_key(data_dir)
        ),
        "foreign": _signed(_claims(), ed25519.Ed25519PrivateKey.generate()),
    }
    token = tokens[credential]
    metadata = bearer(token) if token else ()
    request = unary(prompt=NOTE, classification="health", purpose="treatment")
    error, record = await refused(ip_gateway, ip_stub, request, metadata, method)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    message = error.details() or ""
    assert phrase in message
    if token:
        assert token not in message and token.split(".")[-1] not in message
    assert record.outcome is Outcome.DENIED and record.status_code == "UNAUTHENTICATED"
    assert record.department == "" and record.subject_pseudonym == ""
    assert_no_content(record, NOTE)
    assert not ip_worker.engine.received  # type: ignore[attr-defined]


async def test_health_and_reflection_need_no_token(ip_gateway: GatewayHandle) -> None:
    async with grpc.aio.insecure_channel(ip_gateway.target) as channel:
        assert await health_of(channel, "") == health_pb2.HealthCheckResponse.SERVING
        assert (
            await health_of(channel, "llmgateway.v1.InferenceService")
            == health_pb2.HealthCheckResponse.SERVING
        )
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = [r async for r in reflection.ServerReflectionInfo(iter([request]))]
    services = {s.name for s in responses[0].list_services_response.service}
    assert "llmgateway.v1.InferenceService" in services
    assert "grpc.health.v1.Health" in services


@pytest.mark.parametrize(
    ("department", "models"),
    [("administration", [QWEN]), ("research", [LLAMA]), ("emergency", [LLAMA, QWEN])],
)
async def test_list_models_shows_only_the_departments_models(
    ip_stub: Stub, mint: Mint, department: str, models: list[str]
) -> None:
    response = await ip_stub.ListModels(
        pb.ListModelsRequest(), metadata=bearer(mint(department=department))
    )
    assert sorted(m.name for m in response.models) == models
    assert all(m.ready_workers == 1 for m in response.models)


async def test_list_models_of_an_unknown_department_is_empty(ip_stub: Stub, mint: Mint) -> None:
    response = await ip_stub.ListModels(
        pb.ListModelsRequest(), metadata=bearer(mint(department="qa"))
    )
    assert list(response.models) == []


# --- policy denials -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("department", "claims", "fields", "code", "rule"),
    [
        ("administration", {}, {"model": LLAMA}, "PERMISSION_DENIED", "models.not_allowed"),
        ("emergency", {}, {}, "INVALID_ARGUMENT", "classification.required"),
        (
            "emergency",
            {"clearance": "health"},
            {"classification": "health"},
            "INVALID_ARGUMENT",
            "purpose.required",
        ),
        (
            "emergency",
            {"clearance": "internal"},
            {"classification": "health", "purpose": "treatment"},
            "PERMISSION_DENIED",
            "classification.above_clearance",
        ),
        (
            "administration",
            {},
            {"model": QWEN, "prompt": f"Letter about {CPR} and {CPR_COMPACT}"},
            "PERMISSION_DENIED",
            "guard.cpr.block",
        ),
        (
            "administration",
            {},
            {"model": QWEN, "sampling": pb.SamplingParams(max_tokens=2000)},
            "INVALID_ARGUMENT",
            "tokens.max_output.refuse",
        ),
        ("qa", {}, {}, "PERMISSION_DENIED", "department.unknown"),
    ],
)
@pytest.mark.parametrize("method", ["unary", "stream"])
async def test_policy_denial_names_its_rule_and_is_audited_once(
    ip_gateway: GatewayHandle,
    ip_stub: Stub,
    ip_worker: WorkerHandle,
    mint: Mint,
    department: str,
    claims: dict[str, str],
    fields: dict[str, object],
    code: str,
    rule: str,
    method: str,
) -> None:
    request = unary(**fields)
    metadata = bearer(mint(department=department, subject="clerk-3", **claims))
    error, record = await refused(ip_gateway, ip_stub, request, metadata, method)
    assert error.code().name == code
    message = error.details() or ""
    assert f"(policy rule {rule})" in message
    assert request.prompt not in message and CPR not in message
    info = error_info(error)
    assert info.reason == rule and info.domain == "llmgateway"
    assert info.metadata["department"] == department
    assert not ip_worker.engine.received  # type: ignore[attr-defined]
    assert record.outcome is Outcome.DENIED and record.status_code == code
    assert record.rules_fired[-1] == rule
    assert record.department == department
    assert record.subject_pseudonym and "clerk-3" not in record.subject_pseudonym
    assert record.policy_version == ip_gateway.pipeline.policy.current().version
    assert not record.prompt_text and record.answer_text in (None, "")
    assert_no_content(record, request.prompt, "clerk-3")


async def test_purpose_from_the_token_satisfies_the_purpose_rule(
    ip_gateway: GatewayHandle, ip_stub: Stub, mint: Mint
) -> None:
    token = mint(department="emergency", clearance="health", purpose="treatment")
    response = await ip_stub.Generate(unary(classification="health"), metadata=bearer(token))
    assert response.usage.completion_tokens == 8
    [record] = await ip_gateway.pipeline.audit.spool.pending(10)
    assert record.outcome is Outcome.OK
    assert record.purpose == "treatment" and record.classification == "health"


# --- redaction and caps ---------------------------------------------------------------------


@pytest.mark.parametrize("form", ["prompt", "chat"])
async def test_cpr_is_redacted_before_the_worker_for_emergency(
    ip_gateway: GatewayHandle, ip_stub: Stub, ip_worker: WorkerHandle, mint: Mint, form: str
) -> None:
    text = f"{NOTE}; earlier visit under {CPR_COMPACT}"
    fields: dict[str, object] = {"classification": "health", "purpose": "treatment"}
    if form == "prompt":
        fields["prompt"] = text
    else:
        fields["chat"] = pb.ChatInput(
            messages=[
                pb.ChatMessage(role=pb.ROLE_SYSTEM, content="You write triage summaries."),
                pb.ChatMessage(role=pb.ROLE_USER, content=text),
            ]
        )
        fields["prompt"] = None
    request = unary(**fields)
    assert request.WhichOneof("input") == form
    response = await ip_stub.Generate(
        request, metadata=bearer(mint(department="emergency", clearance="health"))
    )
    assert response.usage.completion_tokens == 8
    received = ip_worker.engine.received[-1]  # type: ignore[attr-defined]
    sent = received.prompt if form == "prompt" else received.messages[-1].content
    assert sent.count("[REDACTED:cpr]") == 2
    assert all(digits not in sent for digits in CPR_DIGITS)
    assert "chest pain" in sent  # only the number is replaced
    if form == "chat":
        assert received.messages[0].content == "You write triage summaries."
    [record] = await ip_gateway.pipeline.audit.spool.pending(10)
    assert record.outcome is Outcome.OK
    assert "guard.cpr.redact" in record.rules_fired
    assert record.redactions == {"cpr": 2}
    assert record.prompt_text is None and record.answer_text is None  # hashes only
    assert record.prompt_hmac and record.answer_hmac
    assert_no_content(record, text, "chest pain")


async def test_max_tokens_over_the_cap_is_clamped_for_emergency(
    start_sim_worker: StartWorker, start_test_gateway: StartGateway, data_dir: Path, mint: Mint
) -> None:
    # No inter-token delay: the clamped answer of 2,048 tokens takes a fraction of a second.
    worker = await start_sim_worker(
        SimConfig(time_to_first_token_ms=1, inter_token_latency_ms=0, prefill_ms_per_token=0)
    )
    settings = gateway_settings(data_dir / "clamp", EXAMPLE_POLICY)
    gateway = await start_test_gateway(
        worker, settings=replace(settings, auth=dev_auth_settings(data_dir))
    )
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        response = await stub.Generate(
            unary(classification="internal", sampling=pb.SamplingParams(max_tokens=3000)),
            metadata=bearer(mint(department="emergency")),
        )
    assert worker.engine.received[-1].max_tokens == 2048  # type: ignore[attr-defined]
    assert response.usage.completion_tokens == 2048
    [record] = await gateway.pipeline.audit.spool.pending(10)
    assert record.outcome is Outcome.OK
    assert "tokens.max_output.clamp" in record.rules_fired


# --- hot reload under load ------------------------------------------------------------------


def _replace_file(path: Path, text: str) -> None:
    """Swap a policy file atomically, as a ConfigMap update does (never half-written)."""
    staged = path.with_name(f".{path.name}.staged")  # hidden: the policy store ignores it
    staged.write_text(text)
    os.replace(staged, path)


def _with_cap(emergency: str, cap: int) -> str:
    """The emergency file with `max_output` (and the default answer size) lowered to `cap`."""
    assert emergency.count("  max_output: 2048\n") == 1
    return emergency.replace(
        "  max_output: 2048\n", f"  max_output: {cap}\n  default_output: {cap}\n"
    )


@pytest.fixture
def ip_policy_copy(tmp_path: Path) -> Path:
    """A writable copy of the example policy whose emergency request rates do not bind: this
    test is about policy swaps, and its load loop sends far more than 60 requests a minute."""
    directory = tmp_path / "policy"
    shutil.copytree(EXAMPLE_POLICY, directory)
    emergency = directory / "emergency.yaml"
    text = emergency.read_text()
    for rate in ("requests_per_minute: 1200\n", "requests_per_minute: 60\n"):
        assert text.count(rate) == 1
        text = text.replace(rate, "requests_per_minute: 1000000\n")
    emergency.write_text(text)
    return directory


async def test_policy_hot_reload_under_load_keeps_last_good_and_reports_health(
    start_sim_worker: StartWorker,
    start_test_gateway: StartGateway,
    data_dir: Path,
    mint: Mint,
    ip_policy_copy: Path,
) -> None:
    worker = await start_sim_worker()
    settings = replace(
        gateway_settings(data_dir / "reload", ip_policy_copy),
        auth=dev_auth_settings(data_dir),
        policy=PolicySettings(ip_policy_copy, reload_interval_s=0.05),
    )
    gateway = await start_test_gateway(worker, settings=settings)
    emergency = ip_policy_copy / "emergency.yaml"
    original = emergency.read_text()
    first_version = gateway.component_health()["policy.version"]
    completions: list[int] = []
    failures: list[grpc.aio.AioRpcError] = []
    stop = asyncio.Event()

    async def client(stub: Stub, n: int) -> None:
        token = bearer(mint(department="emergency", subject=f"nurse-{n}"))
        request = unary(classification="internal", sampling=pb.SamplingParams(max_tokens=40))
        while not stop.is_set():
            try:
                response = await stub.Generate(request, metadata=token, timeout=10)
            except grpc.aio.AioRpcError as err:
                failures.append(err)
            else:
                completions.append(response.usage.completion_tokens)

    async def settled_at(cap: int, in_flight: int = 6) -> None:
        """Wait until answers have the new cap, then check that every later one has it
        (requests admitted just before the swap may still finish under the old cap)."""
        await wait_until(lambda: cap in completions, within=5)
        mark = len(completions)
        await wait_until(lambda: len(completions) >= mark + in_flight + 12, within=5)
        assert set(completions[mark + in_flight :]) == {cap}

    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        clients = [asyncio.create_task(client(stub, n)) for n in range(6)]
        await wait_until(lambda: len(completions) >= 12, within=5)
        assert set(completions) == {40}

        # A valid change is applied without a restart.
        _replace_file(emergency, _with_cap(original, 24))
        await settled_at(24)
        second_version = gateway.component_health()["policy.version"]
        assert second_version != first_version

        # An invalid change: the last good policy stays in force, health says degraded.
        _replace_file(emergency, _with_cap(original, 8) + "colour: red\n")
        await wait_until(lambda: gateway.component_health()["policy.status"] == "degraded", 5)
        health = gateway.component_health()
        assert health["policy.version"] == second_version
        assert "emergency.yaml" in health["policy.last_error"]
        assert "colour" in health["policy.last_error"]
        await wait_until(
            lambda: health_is(
                channel, "llmgateway.policy", health_pb2.HealthCheckResponse.NOT_SERVING
            ),
            within=3,
            every=0.05,
            what="llmgateway.policy NOT_SERVING",
        )
        assert await health_of(channel, "") == health_pb2.HealthCheckResponse.SERVING
        mark = len(completions)
        await wait_until(lambda: len(completions) >= mark + 12, within=5)
        assert set(completions[mark:]) == {24}

        # Fixing the file restores SERVING and applies the fix.
        _replace_file(emergency, _with_cap(original, 16))
        await settled_at(16)
        assert gateway.component_health()["policy.status"] == "ok"
        await wait_until(
            lambda: health_is(channel, "llmgateway.policy", health_pb2.HealthCheckResponse.SERVING),
            within=3,
            every=0.05,
            what="llmgateway.policy SERVING",
        )
        stop.set()
        await asyncio.gather(*clients)

    assert failures == []
    assert set(completions) <= {40, 24, 16}
    # Every answer has its audit record, across all three swaps.
    assert await gateway.pipeline.audit.spool.pending_count() == len(completions)
