"""Shared fixtures: real workers and gateways on 127.0.0.1:0, real channels, dev-key tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from llmgateway.v1 import gateway_pb2_grpc

from gateway.auth.devkeys import dev_auth_settings, mint_dev_token
from gateway.process.server import GatewayHandle, start_gateway
from gateway.settings import GatewaySettings
from tests.helpers import FAST_SIM, StartGateway, StartWorker, gateway_settings
from tests.support.redis_server import RedisServer
from workers.server import WorkerHandle, start_worker
from workers.sim import SimConfig, SimEngine

Req = TypeVar("Req")
Resp = TypeVar("Resp")
ClientCallDetails = grpc.aio.ClientCallDetails


def _with_token(details: ClientCallDetails, header: tuple[str, str]) -> ClientCallDetails:
    metadata = list(details.metadata or ())
    if not any(k == "authorization" for k, _ in metadata):
        metadata.append(header)
    # At run time the details are a namedtuple; grpc-stubs declare only its fields.
    replaced: ClientCallDetails = details._replace(metadata=tuple(metadata))  # type: ignore[attr-defined]
    return replaced


class _UnaryToken(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds `authorization` to unary calls that do not carry one."""

    def __init__(self, header: tuple[str, str]) -> None:
        self._header = header

    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [ClientCallDetails, Req], Awaitable[grpc.aio.UnaryUnaryCall[Req, Resp]]
        ],
        client_call_details: ClientCallDetails,
        request: Req,
    ) -> grpc.aio.UnaryUnaryCall[Req, Resp]:
        return await continuation(_with_token(client_call_details, self._header), request)


class _StreamToken(grpc.aio.UnaryStreamClientInterceptor):
    """Adds `authorization` to server-streaming calls that do not carry one."""

    def __init__(self, header: tuple[str, str]) -> None:
        self._header = header

    async def intercept_unary_stream(
        self,
        continuation: Callable[
            [ClientCallDetails, Req], Awaitable[grpc.aio.UnaryStreamCall[Req, Resp]]
        ],
        client_call_details: ClientCallDetails,
        request: Req,
    ) -> grpc.aio.UnaryStreamCall[Req, Resp]:
        return await continuation(_with_token(client_call_details, self._header), request)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server per test on a free loopback port; a test may stop() and start() it."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def mint(data_dir: Path) -> Callable[..., str]:
    """Mint a dev token trusted by the test gateways (default: subject tester in qa)."""

    def mint_token(department: str = "qa", subject: str = "tester", **claims: Any) -> str:
        return mint_dev_token(data_dir, department=department, subject=subject, **claims)

    return mint_token


@pytest.fixture
async def start_sim_worker() -> AsyncIterator[StartWorker]:
    """Start sim workers on 127.0.0.1:0; all are stopped at teardown."""
    started: list[WorkerHandle] = []

    async def start(config: SimConfig = FAST_SIM, pool: str = "onprem-gpu") -> WorkerHandle:
        handle = await start_worker(
            SimEngine(config, record_requests=1000), pool=pool, worker_id=f"sim-{len(started)}"
        )
        started.append(handle)
        return handle

    yield start
    for handle in started:
        await handle.stop(grace=0)


@pytest.fixture
async def start_test_gateway(data_dir: Path) -> AsyncIterator[StartGateway]:
    """Start gateways on 127.0.0.1:0 routing to the given workers (shared dev key and data dir
    unless `settings` says otherwise)."""
    started: list[GatewayHandle] = []

    async def start(
        *workers: WorkerHandle, settings: GatewaySettings | None = None
    ) -> GatewayHandle:
        base = settings or gateway_settings(data_dir / f"gw{len(started)}")
        if settings is None:  # every gateway of a test trusts the same dev key
            base = replace(base, auth=dev_auth_settings(data_dir))
        configured = replace(
            base,
            server=replace(base.server, listen="127.0.0.1:0"),
            routing=replace(base.routing, workers=tuple(w.target for w in workers)),
        )
        handle = await start_gateway(configured)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        await handle.stop(grace=0)


@pytest.fixture
async def sim_worker(start_sim_worker: StartWorker) -> WorkerHandle:
    return await start_sim_worker()


@pytest.fixture
async def gateway(start_test_gateway: StartGateway, sim_worker: WorkerHandle) -> GatewayHandle:
    return await start_test_gateway(sim_worker)


@pytest.fixture
def channel_to(mint: Callable[..., str]) -> Callable[[GatewayHandle], grpc.aio.Channel]:
    """A channel to a gateway whose calls carry the default test token unless they set one."""

    def connect(gateway: GatewayHandle) -> grpc.aio.Channel:
        header = ("authorization", f"Bearer {mint()}")
        return grpc.aio.insecure_channel(
            gateway.target, interceptors=[_UnaryToken(header), _StreamToken(header)]
        )

    return connect


@pytest.fixture
async def stub(
    gateway: GatewayHandle, channel_to: Callable[[GatewayHandle], grpc.aio.Channel]
) -> AsyncIterator[gateway_pb2_grpc.InferenceServiceAsyncStub]:
    async with channel_to(gateway) as channel:
        yield gateway_pb2_grpc.InferenceServiceStub(channel)
