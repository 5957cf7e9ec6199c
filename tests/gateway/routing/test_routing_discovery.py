"""Workers found at run time: Redis self-registration, DNS records, and the residency guard."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from common.egress import EgressGuard, ResidencySettings
from common.settings import read
from common.worker_registry import Advert, advert_key, index_key, redis_client
from gateway.request.errors import Unavailable
from gateway.routing.dns_discovery import DnsDiscovery
from gateway.routing.factory import build_registry
from gateway.routing.registry import StaticDiscovery, WorkerRegistry
from gateway.routing.settings import RoutingSettings
from tests.gateway.routing.routing_helpers import FAST_ROUTING, MODEL, StartRouter, call, run
from tests.helpers import FAST_SIM, StartWorker, wait_until
from tests.support.redis_server import RedisServer
from workers.registration import RedisRegistration
from workers.server import start_worker
from workers.sim import SimEngine


async def test_worker_registering_in_redis_gets_traffic_without_restart(
    redis_server: RedisServer, start_sim_worker: StartWorker, start_router: StartRouter
) -> None:
    settings = RoutingSettings(
        redis_url=redis_server.url, redis_refresh_s=0.05, health_check_s=0.05
    )
    router = await start_router(registry=build_registry(settings))
    with pytest.raises(Unavailable):
        await run(router, call())

    worker = await start_sim_worker()
    advert = Advert(worker.target, "sim-0", (MODEL,), "onprem-gpu", 16)
    registration = RedisRegistration(redis_client(redis_server.url, 1.0), advert, ttl_s=1.0)
    await registration.start()
    await wait_until(lambda: MODEL in router.models(), within=2.0)
    text, outcome = await run(router, call())
    assert text and outcome.worker_id == "sim-0"

    await registration.stop()  # a graceful stop removes the advert: the worker leaves at once
    await wait_until(lambda: not router.registry.workers, within=2.0)
    assert redis_server.command("SCARD", index_key("llmgw:")) == b":0\r\n"


async def test_expired_heartbeat_drops_the_worker_and_cleans_the_index(
    redis_server: RedisServer, start_sim_worker: StartWorker, start_router: StartRouter
) -> None:
    worker = await start_sim_worker()
    # A worker that registered once and then died: its key expires, the index entry stays.
    advert = Advert(worker.target, "sim-0", (MODEL,), "onprem-gpu", 16).to_json()
    redis_server.command("SET", advert_key("llmgw:", worker.target), advert, "PX", "400")
    redis_server.command("SADD", index_key("llmgw:"), worker.target)
    settings = RoutingSettings(redis_url=redis_server.url, redis_refresh_s=0.05)
    router = await start_router(registry=build_registry(settings))
    assert [w.target for w in router.registry.workers] == [worker.target]
    await wait_until(lambda: not router.registry.workers, within=2.0)
    await wait_until(lambda: redis_server.command("SCARD", index_key("llmgw:")) == b":0\r\n", 1.0)


async def test_heartbeat_keeps_the_advert_alive_with_a_ttl(redis_server: RedisServer) -> None:
    advert = Advert("10.1.2.3:50061", "w1", (MODEL,), "onprem-gpu", 8)
    registration = RedisRegistration(redis_client(redis_server.url, 1.0), advert, ttl_s=0.3)
    await registration.start()
    await wait_until(lambda: registration.beats >= 3, within=1.0)  # beats every ttl/3
    stored = redis_server.command("GET", advert_key("llmgw:", "10.1.2.3:50061")).split(b"\r\n")[1]
    assert Advert.from_json(stored.decode()) == advert
    ttl = int(redis_server.command("PTTL", advert_key("llmgw:", "10.1.2.3:50061"))[1:].strip())
    assert 0 < ttl <= 300
    await registration.stop()
    assert redis_server.command("EXISTS", advert_key("llmgw:", "10.1.2.3:50061")) == b":0\r\n"
    assert json.loads(advert.to_json())["models"] == [MODEL]


async def test_dns_records_join_and_leave(start_router: StartRouter) -> None:
    first = await start_worker(SimEngine(FAST_SIM), listen="127.0.0.2:0", worker_id="pod-a")
    second = await start_worker(
        SimEngine(FAST_SIM), listen=f"127.0.0.3:{first.port}", worker_id="pod-b"
    )
    records: list[str] = ["127.0.0.2"]
    failing = False

    def resolve(host: str) -> Sequence[str]:
        assert host == "llm-workers.gpu.svc"
        if failing:
            raise OSError("temporary failure in name resolution")
        return list(records)

    try:
        dns = DnsDiscovery([f"llm-workers.gpu.svc:{first.port}"], 0.05, resolver=resolve)
        router = await start_router(registry=WorkerRegistry(FAST_ROUTING, [dns]))
        assert [w.worker_id for w in router.registry.workers] == ["pod-a"]
        records.append("127.0.0.3")
        await wait_until(lambda: len(router.registry.workers) == 2, within=1.0)
        await wait_until(lambda: router.models()[MODEL].ready_workers == 2, within=1.0)
        failing = True  # a DNS outage keeps the workers it knew
        records.remove("127.0.0.2")
        served = {(await run(router, call(f"p{i}")))[1].worker_id for i in range(12)}
        assert served == {"pod-a", "pod-b"}
        failing = False
        await wait_until(lambda: len(router.registry.workers) == 1, within=1.0)
        assert router.registry.workers[0].worker_id == "pod-b"
    finally:
        await first.stop(grace=0)
        await second.stop(grace=0)


async def test_residency_guard_refuses_a_discovered_worker(
    start_sim_worker: StartWorker, start_router: StartRouter
) -> None:
    local = await start_sim_worker()
    guard = EgressGuard(read(ResidencySettings, {"allowed_networks": ["10.0.0.0/8"]}, "residency"))
    sources = [StaticDiscovery([local.target, "192.0.2.10:50061"])]
    router = await start_router(registry=WorkerRegistry(FAST_ROUTING, sources, guard=guard))
    assert [w.target for w in router.registry.workers] == [local.target]
