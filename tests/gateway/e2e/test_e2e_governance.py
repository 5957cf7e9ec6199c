"""Model and purpose registers against real servers: digests, suspension on reload, purposes."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import cast

import grpc
import pytest
from google.rpc import error_details_pb2
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc
from prometheus_client import REGISTRY

from gateway.auth.devkeys import dev_auth_settings
from policy.settings import PolicySettings
from tests.helpers import (
    EXAMPLE_POLICY,
    FAST_SIM,
    StartGateway,
    StartWorker,
    bearer,
    gateway_settings,
    wait_until,
)
from tests.support.rpc_status import detail
from workers.digest import sim_digests
from workers.server import start_worker
from workers.sim import SimConfig, SimEngine

LLAMA = "llama-3.1-8b-instruct"
QWEN = "qwen2.5-7b-instruct"
Mint = Callable[..., str]
WRONG = "sha256:" + "0" * 64


def error_reason(error: grpc.aio.AioRpcError) -> str:
    info = detail(error, error_details_pb2.ErrorInfo)
    return info.reason if info is not None else ""


def ask(model: str = LLAMA, **fields: object) -> pb.GenerateRequest:
    values: dict[str, object] = {
        "model": model,
        "prompt": "Draft the weekly rota",
        "classification": "internal",
        "sampling": pb.SamplingParams(max_tokens=4, seed=1),
    }
    values.update(fields)
    return pb.GenerateRequest(**values)  # type: ignore[arg-type]


@pytest.fixture
def policy_copy(tmp_path: Path) -> Path:
    directory = tmp_path / "policy"
    shutil.copytree(EXAMPLE_POLICY, directory)
    return directory


async def _gateway(
    start: StartGateway, data_dir: Path, policy_dir: Path, *workers: object
) -> object:
    settings = replace(
        gateway_settings(data_dir / "gov", policy_dir),
        auth=dev_auth_settings(data_dir),
        policy=PolicySettings(policy_dir, reload_interval_s=0.05),
    )
    return await start(*workers, settings=settings)


async def test_the_dev_simulator_matches_the_example_register() -> None:
    from policy import load_directory

    register = load_directory(EXAMPLE_POLICY).register
    assert register.models is not None
    advertised = sim_digests(SimConfig())
    assert {m: e.weights_digest for m, e in register.models.items()} == advertised
    # Latency and capacity are not part of the digest: test workers still match.
    assert sim_digests(FAST_SIM) == advertised


async def test_a_worker_with_another_digest_gets_no_traffic(
    start_sim_worker: StartWorker,
    start_test_gateway: StartGateway,
    data_dir: Path,
    mint: Mint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = await start_sim_worker()
    engine = SimEngine(FAST_SIM, record_requests=100)
    rogue = await start_worker(engine, worker_id="rogue", model_digests={LLAMA: WRONG, QWEN: WRONG})
    try:
        caplog.set_level(logging.ERROR, logger="gateway.routing.digests")
        gateway = await _gateway(start_test_gateway, data_dir, EXAMPLE_POLICY, good, rogue)
        token = mint(department="emergency")
        async with grpc.aio.insecure_channel(gateway.target) as channel:  # type: ignore[attr-defined]
            stub = gateway_pb2_grpc.InferenceServiceStub(channel)
            for n in range(20):
                answer = await stub.Generate(
                    ask(affinity_key=f"session-{n}"), metadata=bearer(token), timeout=10
                )
                assert answer.text
        assert len(engine.received) == 0
        assert len(good.engine.received) == 20  # type: ignore[attr-defined]
        mismatches = [r for r in caplog.records if "rogue" in r.getMessage()]
        assert len(mismatches) == 1, "logged once per change, not per request"
        assert WRONG in mismatches[0].getMessage()
        health = gateway.component_health()  # type: ignore[attr-defined]
        assert health["routing.digest_mismatch"] == "1"
        assert "rogue" in health["routing.digest_mismatch_workers"]
        gauge = REGISTRY.get_sample_value(
            "llmgw_routing_digest_mismatch", {"model": LLAMA, "worker": "rogue"}
        )
        assert gauge == 1.0
    finally:
        await rogue.stop(grace=0)


async def test_only_mismatched_workers_means_unavailable_with_the_reason(
    start_test_gateway: StartGateway, data_dir: Path, mint: Mint
) -> None:
    rogue = await start_worker(SimEngine(FAST_SIM), worker_id="rogue", model_digests={LLAMA: WRONG})
    try:
        gateway = await _gateway(start_test_gateway, data_dir, EXAMPLE_POLICY, rogue)
        async with grpc.aio.insecure_channel(gateway.target) as channel:  # type: ignore[attr-defined]
            stub = gateway_pb2_grpc.InferenceServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.Generate(ask(), metadata=bearer(mint(department="emergency")), timeout=5)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "registered build" in (failed.value.details() or "")
    finally:
        await rogue.stop(grace=0)


async def test_suspension_applies_on_reload_and_the_stream_in_flight_finishes(
    start_sim_worker: StartWorker,
    start_test_gateway: StartGateway,
    data_dir: Path,
    mint: Mint,
    policy_copy: Path,
) -> None:
    worker = await start_sim_worker(
        SimConfig(time_to_first_token_ms=5, inter_token_latency_ms=20, prefill_ms_per_token=0)
    )
    gateway = await _gateway(start_test_gateway, data_dir, policy_copy, worker)
    token = mint(department="emergency")
    before = gateway.component_health()["policy.version"]  # type: ignore[attr-defined]
    async with grpc.aio.insecure_channel(gateway.target) as channel:  # type: ignore[attr-defined]
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        request = pb.GenerateStreamRequest.FromString(
            ask(sampling=pb.SamplingParams(max_tokens=40, seed=3)).SerializeToString()
        )
        stream = stub.GenerateStream(request, metadata=bearer(token), timeout=20)
        # grpc-stubs type read() as `object | Response`; EOF here would fail on `.text` below.
        first = cast(pb.GenerateStreamResponse, await stream.read())
        assert first.text
        models = policy_copy / "models.yaml"
        text = models.read_text()
        assert text.count("    status: approved\n") == 2
        models.write_text(text.replace("    status: approved\n", "    status: suspended\n", 1))
        await wait_until(
            lambda: gateway.component_health()["policy.version"] != before,  # type: ignore[attr-defined]
            within=5,
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Generate(ask(), metadata=bearer(token), timeout=5)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_reason(refused.value) == "register.model_suspended"
        messages = [first]
        while isinstance(message := await stream.read(), pb.GenerateStreamResponse):
            messages.append(message)
        assert messages[-1].finish_reason == pb.FINISH_REASON_LENGTH
        assert sum(m.token_count for m in messages) == 40
        # The other model is still approved.
        assert (await stub.Generate(ask(QWEN), metadata=bearer(token), timeout=5)).text


async def test_registered_purposes_are_required_where_the_department_says_so(
    start_sim_worker: StartWorker, start_test_gateway: StartGateway, data_dir: Path, mint: Mint
) -> None:
    worker = await start_sim_worker()
    gateway = await _gateway(start_test_gateway, data_dir, EXAMPLE_POLICY, worker)
    token = mint(department="research")
    async with grpc.aio.insecure_channel(gateway.target) as channel:  # type: ignore[attr-defined]
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        for purpose, code, rule in (
            ("", grpc.StatusCode.INVALID_ARGUMENT, "purpose.required"),
            ("curiosity", grpc.StatusCode.INVALID_ARGUMENT, "purpose.unregistered"),
            ("treatment", grpc.StatusCode.PERMISSION_DENIED, "purpose.department_not_allowed"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Generate(ask(purpose=purpose), metadata=bearer(token), timeout=5)
            assert (refused.value.code(), error_reason(refused.value)) == (code, rule)
            assert "research" in (refused.value.details() or "")  # names the usable purpose
        answer = await stub.Generate(ask(purpose="research"), metadata=bearer(token), timeout=5)
        assert answer.text
        listed = await stub.ListModels(pb.ListModelsRequest(), metadata=bearer(token), timeout=5)
        assert {m.name: list(m.purposes) for m in listed.models} == {LLAMA: ["research"]}
        emergency = await stub.ListModels(
            pb.ListModelsRequest(), metadata=bearer(mint(department="emergency")), timeout=5
        )
        assert {m.name: list(m.purposes) for m in emergency.models} == {
            LLAMA: ["administration", "treatment"],
            QWEN: ["administration", "treatment"],
        }
