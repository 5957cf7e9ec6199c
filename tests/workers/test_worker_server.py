"""The worker server's drain: refusals with a reason, health and load reports, the CLI."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from llmgateway.worker.v1 import worker_pb2 as pb
from llmgateway.worker.v1 import worker_pb2_grpc as pb_grpc

from tests.helpers import StartWorker, wait_until
from workers import cli
from workers.server import SERVICE_NAME, STATE_KEY
from workers.sim import SimConfig

SLOW = SimConfig(time_to_first_token_ms=5, inter_token_latency_ms=10, prefill_ms_per_token=0)


def generate_request(max_tokens: int = 5) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        request_id="r1",
        model="llama-3.1-8b-instruct",
        prompt="Plan the next shift",
        sampling=pb.SamplingParams(max_tokens=max_tokens),
    )


async def test_drain_refuses_new_work_reports_it_and_finishes_in_flight(
    start_sim_worker: StartWorker,
) -> None:
    worker = await start_sim_worker(SLOW)
    async with grpc.aio.insecure_channel(worker.target) as channel:
        stub = pb_grpc.WorkerServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        loads = stub.WatchLoad(pb.WatchLoadRequest(interval_ms=60_000))
        assert not _report(await loads.read()).draining
        in_flight = stub.Generate(generate_request(max_tokens=20))
        await wait_until(lambda: worker.engine.load().active == 1, 1.0)

        answer = await stub.SetDraining(pb.SetDrainingRequest(draining=True))
        assert answer.load.draining and answer.load.active == 1 and answer.load.free_slots == 0
        # The watcher hears of it at once, not after its 60 s interval.
        assert _report(await asyncio.wait_for(loads.read(), timeout=1.0)).draining
        status = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Generate(generate_request()).read()
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert (STATE_KEY, "draining") in tuple(refused.value.trailing_metadata() or ())
        finished = [m async for m in in_flight]
        assert finished[-1].completion_tokens == 20

        await stub.SetDraining(pb.SetDrainingRequest(draining=False))
        assert [m async for m in stub.Generate(generate_request())][-1].completion_tokens == 5
        loads.cancel()


async def test_drain_command_waits_for_in_flight_and_reports(
    start_sim_worker: StartWorker, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = await start_sim_worker(SLOW)
    async with grpc.aio.insecure_channel(worker.target) as channel:
        stub = pb_grpc.WorkerServiceStub(channel)
        in_flight = asyncio.create_task(_collect(stub.Generate(generate_request(max_tokens=30))))
        await wait_until(lambda: worker.engine.load().active == 1, 1.0)
        code = await asyncio.to_thread(cli.main, ["drain", "--target", worker.target, "--wait"])
        assert code == 0 and in_flight.done() and worker.servicer.draining
    assert "draining; 0 active, 0 queued" in capsys.readouterr().out


async def test_drain_command_names_an_unreachable_target(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = await asyncio.to_thread(
        cli.main, ["drain", "--target", "127.0.0.1:1", "--timeout", "0.5"]
    )
    assert code == 1 and "check --target" in capsys.readouterr().err


def test_serve_needs_advertise_with_redis_registration(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        ["serve", "--register-redis", "redis://127.0.0.1:1/0", "--listen", "127.0.0.1:0"]
    )
    assert code == 2 and "--advertise" in capsys.readouterr().err


async def _collect(call: grpc.aio.UnaryStreamCall[pb.GenerateRequest, pb.GenerateResponse]) -> int:
    return len([m async for m in call])


def _report(message: object) -> pb.Load:
    assert isinstance(message, pb.WatchLoadResponse), "the load stream ended"
    return message.load
