"""End to end through a real gateway and a real sim worker: happy paths, validation, lifecycle."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from llmgateway.v1 import gateway_pb2 as pb

from audit.record import Outcome
from gateway.auth.devkeys import dev_auth_settings
from tests.helpers import ChannelTo, StartGateway, StartWorker, gateway_settings, wait_until
from tests.support.rpc_status import rich_status
from workers.sim import SimConfig

MODEL = "llama-3.1-8b-instruct"


def request(**overrides: object) -> pb.GenerateStreamRequest:
    fields: dict[str, object] = {
        "model": MODEL,
        "prompt": "Summarise the ward round",
        "sampling": pb.SamplingParams(max_tokens=16, seed=7),
    }
    fields.update(overrides)
    return pb.GenerateStreamRequest(**fields)  # type: ignore[arg-type]


def unary(**overrides: object) -> pb.GenerateRequest:
    return pb.GenerateRequest.FromString(request(**overrides).SerializeToString())


async def test_unary_generate_returns_answer_and_usage(stub) -> None:  # type: ignore[no-untyped-def]
    response = await stub.Generate(unary())
    assert response.text.strip()
    assert response.usage.completion_tokens == 16
    assert response.usage.prompt_tokens > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens + 16
    assert response.finish_reason == pb.FINISH_REASON_LENGTH
    assert len(response.request_id) == 28
    assert response.model == MODEL
    assert response.timings.total_ms >= response.timings.time_to_first_token_ms > 0


async def test_stream_matches_unary_and_ends_with_summary(stub) -> None:  # type: ignore[no-untyped-def]
    messages = [m async for m in stub.GenerateStream(request())]
    *chunks, last = messages
    assert chunks and all(m.text for m in chunks)
    assert last.text == "" and last.finish_reason == pb.FINISH_REASON_LENGTH
    assert sum(m.token_count for m in chunks) == last.usage.completion_tokens == 16
    assert len({m.request_id for m in messages}) == 1
    full = await stub.Generate(unary())
    assert "".join(m.text for m in chunks) == full.text  # same seed, same text


async def test_chat_input_and_stop_sequence(stub) -> None:  # type: ignore[no-untyped-def]
    chat = pb.ChatInput(messages=[pb.ChatMessage(role=pb.ROLE_USER, content="Plan the next shift")])
    free = await stub.Generate(
        unary(prompt=None, chat=chat, sampling=pb.SamplingParams(max_tokens=40, seed=3))
    )
    words = free.text.split()
    stop_word = words[len(words) // 2]
    stopped = await stub.Generate(
        unary(
            prompt=None,
            chat=chat,
            sampling=pb.SamplingParams(max_tokens=40, seed=3, stop=[f" {stop_word}"]),
        )
    )
    assert stopped.finish_reason == pb.FINISH_REASON_STOP
    assert stop_word not in stopped.text.split()
    assert free.text.startswith(stopped.text)


async def test_hundred_tokens_stream_as_generated(
    start_sim_worker: StartWorker, start_test_gateway: StartGateway, channel_to: ChannelTo
) -> None:
    worker = await start_sim_worker(SimConfig(time_to_first_token_ms=5, inter_token_latency_ms=10))
    gateway = await start_test_gateway(worker)
    async with channel_to(gateway) as channel:
        from llmgateway.v1 import gateway_pb2_grpc

        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        arrivals: list[tuple[float, int]] = []
        start = time.monotonic()
        async for message in stub.GenerateStream(
            request(sampling=pb.SamplingParams(max_tokens=100))
        ):
            arrivals.append((time.monotonic() - start, message.token_count))
    assert sum(n for _, n in arrivals) == 100
    # 100 tokens at 10 ms each take ~1 s; the first must arrive long before the last.
    first, last = arrivals[0][0], arrivals[-1][0]
    assert last > 0.8
    assert first < last / 4
    assert len(arrivals) > 50  # not buffered into a few big messages


@pytest.mark.parametrize(
    ("overrides", "field", "phrase"),
    [
        ({"prompt": "   "}, "prompt", "empty"),
        ({"prompt": None}, "input", "exactly one"),
        ({"model": ""}, "model", "required"),
        ({"model": "gpt-unknown"}, "model", "unknown model"),
        ({"sampling": pb.SamplingParams(max_tokens=0)}, "sampling.max_tokens", "between 1 and"),
        (
            {"sampling": pb.SamplingParams(max_tokens=100_000)},
            "sampling.max_tokens",
            "between 1 and",
        ),
        (
            {"sampling": pb.SamplingParams(temperature=3.0)},
            "sampling.temperature",
            "between 0 and 2",
        ),
        ({"sampling": pb.SamplingParams(top_p=0.0)}, "sampling.top_p", "greater than 0"),
        ({"sampling": pb.SamplingParams(stop=[""])}, "sampling.stop", "1 to 64"),
        ({"chat": pb.ChatInput()}, "chat.messages", "at least one"),
        (
            {"chat": pb.ChatInput(messages=[pb.ChatMessage(content="hi")])},
            "chat.messages[0].role",
            "ROLE_USER",
        ),
        ({"client_request_id": "x" * 129}, "client_request_id", "longer than 128"),
    ],
)
async def test_invalid_requests_are_invalid_argument(stub, overrides, field, phrase) -> None:  # type: ignore[no-untyped-def]
    fields = dict(overrides)
    if "chat" in fields:
        fields["prompt"] = None
    req = request(**fields)
    if fields.get("prompt", "x") is None and "chat" not in fields:
        req.ClearField("input")
    for call in (stub.Generate(pb.GenerateRequest.FromString(req.SerializeToString())),):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert phrase in (info.value.details() or "")
        status = rich_status(info.value)
        bad = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(bad)
        assert bad.field_violations[0].field == field
    with pytest.raises(grpc.aio.AioRpcError) as stream_info:
        async for _ in stub.GenerateStream(req):
            pass
    assert stream_info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_oversized_request_is_resource_exhausted(stub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(unary(prompt="word " * 300_000))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_prompt_over_token_limit_is_invalid_argument(stub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(unary(prompt="ward " * 40_000))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "shorten" in (info.value.details() or "")


async def test_deadline_exceeded_frees_the_worker_slot(
    start_sim_worker: StartWorker, start_test_gateway: StartGateway, channel_to: ChannelTo
) -> None:
    worker = await start_sim_worker(SimConfig(time_to_first_token_ms=5, inter_token_latency_ms=50))
    gateway = await start_test_gateway(worker)
    async with channel_to(gateway) as channel:
        from llmgateway.v1 import gateway_pb2_grpc

        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Generate(unary(sampling=pb.SamplingParams(max_tokens=200)), timeout=0.3)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_until(lambda: worker.engine.load().active == 0, within=0.2)


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_call_without_a_deadline_gets_the_default_one(
    start_sim_worker: StartWorker,
    start_test_gateway: StartGateway,
    channel_to: ChannelTo,
    data_dir: Path,
    streaming: bool,
) -> None:
    """server.default_deadline_s bounds a call whose client set none: a hung or slow worker
    cannot hold the call, its concurrency lease and its worker slot for ever."""
    worker = await start_sim_worker(SimConfig(time_to_first_token_ms=5, inter_token_latency_ms=20))
    settings = gateway_settings(data_dir / "gw", auth=dev_auth_settings(data_dir))
    settings = replace(settings, server=replace(settings.server, default_deadline_s=0.5))
    gateway = await start_test_gateway(worker, settings=settings)
    big = pb.SamplingParams(max_tokens=500)  # 10 s of tokens
    started = time.monotonic()
    async with channel_to(gateway) as channel:
        from llmgateway.v1 import gateway_pb2_grpc

        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            if streaming:
                async for _ in stub.GenerateStream(request(sampling=big)):
                    pass
            else:
                await stub.Generate(unary(sampling=big))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5
    await wait_until(lambda: worker.engine.load().active == 0, within=1)
    [record] = await gateway.pipeline.audit.spool.pending(10)
    assert record.outcome is Outcome.DEADLINE


async def test_client_cancel_stops_the_worker_within_100ms(
    start_sim_worker: StartWorker, start_test_gateway: StartGateway, channel_to: ChannelTo
) -> None:
    worker = await start_sim_worker(SimConfig(time_to_first_token_ms=5, inter_token_latency_ms=20))
    gateway = await start_test_gateway(worker)
    async with channel_to(gateway) as channel:
        from llmgateway.v1 import gateway_pb2_grpc

        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        call = stub.GenerateStream(request(sampling=pb.SamplingParams(max_tokens=500)))
        received = 0
        async for message in call:
            received += message.token_count
            if received >= 3:
                break
        assert worker.engine.load().active == 1
        call.cancel()
        cancelled_at = time.monotonic()
        await wait_until(lambda: worker.engine.load().active == 0, within=0.1)
        assert time.monotonic() - cancelled_at < 0.1
    assert worker.engine.cancelled == 1  # type: ignore[attr-defined]


async def test_list_models(stub) -> None:  # type: ignore[no-untyped-def]
    response = await stub.ListModels(pb.ListModelsRequest())
    names = [m.name for m in response.models]
    assert names == sorted(["llama-3.1-8b-instruct", "qwen2.5-7b-instruct"])
    assert all(m.ready_workers == 1 and list(m.pools) == ["onprem-gpu"] for m in response.models)


async def test_worker_gone_is_unavailable(
    start_test_gateway: StartGateway, start_sim_worker: StartWorker, channel_to: ChannelTo
) -> None:
    worker = await start_sim_worker()
    gateway = await start_test_gateway(worker)
    await worker.stop(grace=0)
    async with channel_to(gateway) as channel:
        from llmgateway.v1 import gateway_pb2_grpc

        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Generate(unary(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "retry" in (info.value.details() or "")
