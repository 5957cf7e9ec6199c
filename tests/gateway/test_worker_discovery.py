"""Workers that announce themselves in Redis join a running gateway without a restart."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import grpc
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc

from common.worker_registry import Advert, redis_client
from gateway.auth.devkeys import dev_auth_settings
from tests.helpers import Mint, StartGateway, StartWorker, gateway_settings, wait_until
from tests.support.redis_server import RedisServer
from workers.registration import RedisRegistration


async def test_a_worker_registering_in_redis_gets_traffic_without_restart(
    data_dir: Path,
    redis_server: RedisServer,
    start_sim_worker: StartWorker,
    start_test_gateway: StartGateway,
    mint: Mint,
) -> None:
    base = gateway_settings(data_dir / "gw", auth=dev_auth_settings(data_dir))
    settings = replace(
        base, routing=replace(base.routing, redis_url=redis_server.url, redis_refresh_s=0.1)
    )
    gateway = await start_test_gateway(settings=settings)  # no static workers at all
    assert gateway.pipeline.router.models() == {}

    worker = await start_sim_worker()
    advert = Advert(
        target=worker.target,
        worker_id=worker.servicer.worker_id,
        models=tuple(worker.engine.models),
        pool="onprem-gpu",
        max_slots=worker.engine.load().max_slots,
    )
    registration = RedisRegistration(
        redis_client(redis_server.url, timeout_s=1.0), advert, ttl_s=2.0
    )
    await registration.start()
    try:
        await wait_until(
            lambda: "llama-3.1-8b-instruct" in gateway.pipeline.router.models(), within=5
        )
        async with grpc.aio.insecure_channel(gateway.target) as channel:
            stub = gateway_pb2_grpc.InferenceServiceStub(channel)
            response = await stub.Generate(
                pb.GenerateRequest(
                    model="llama-3.1-8b-instruct",
                    prompt="hello",
                    sampling=pb.SamplingParams(max_tokens=4),
                ),
                metadata=(("authorization", f"Bearer {mint()}"),),
                timeout=5,
            )
        assert response.usage.completion_tokens == 4
        assert len(worker.engine.received) == 1  # type: ignore[attr-defined]
    finally:
        await registration.stop()
    await wait_until(lambda: not gateway.pipeline.router.models(), within=5)
