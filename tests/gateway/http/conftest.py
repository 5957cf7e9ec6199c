"""A real gateway with its HTTP door on 127.0.0.1:0, a sim worker, and a test policy."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import openai
import pytest

from gateway.process.server import GatewayHandle
from gateway.settings import HttpSettings
from policy.settings import PolicySettings
from tests.helpers import TEST_POLICY, StartGateway, StartWorker, gateway_settings
from workers.server import WorkerHandle
from workers.sim import SimConfig

# A department that may use one model of the catalog's two, and one allowed a request a minute.
EXTRA_DEPARTMENTS = {
    "narrow.yaml": """
version: 1
department: narrow
models: [llama-3.1-8b-instruct]
data: {allowed: [public, internal], required: false, default: internal}
audit: {content: hashes, required: true}
""",
    "slow.yaml": """
version: 1
department: slow
models: [general]
data: {allowed: [public, internal], required: false, default: internal}
limits:
  user:
    requests_per_minute: 1
audit: {content: hashes, required: true}
""",
}


@pytest.fixture
def http_policy(tmp_path: Path) -> Path:
    directory = tmp_path / "policy"
    shutil.copytree(TEST_POLICY, directory)
    for name, text in EXTRA_DEPARTMENTS.items():
        (directory / name).write_text(text)
    return directory


@pytest.fixture
async def http_worker(start_sim_worker: StartWorker) -> WorkerHandle:
    return await start_sim_worker(SimConfig(time_to_first_token_ms=5, inter_token_latency_ms=2))


@pytest.fixture
async def http_gateway(
    start_test_gateway: StartGateway, http_worker: WorkerHandle, http_policy: Path, data_dir: Path
) -> GatewayHandle:
    from gateway.auth.devkeys import dev_auth_settings

    settings = gateway_settings(
        data_dir / "gw-http",
        policy=PolicySettings(http_policy, reload_interval_s=0),
        auth=dev_auth_settings(data_dir),
        http=HttpSettings(listen="127.0.0.1:0"),
    )
    handle = await start_test_gateway(http_worker, settings=settings)
    assert handle.http is not None
    return handle


@pytest.fixture
def base_url(http_gateway: GatewayHandle) -> str:
    assert http_gateway.http is not None
    return http_gateway.http.base_url


@pytest.fixture
def client_for(base_url: str) -> Callable[[str], openai.AsyncOpenAI]:
    """An `openai` client with the given token; no retries, so each call is one request."""

    def make(token: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=10)

    return make


@pytest.fixture
async def client(
    client_for: Callable[[str], openai.AsyncOpenAI], mint: Callable[..., str]
) -> AsyncIterator[openai.AsyncOpenAI]:
    async with client_for(mint()) as c:
        yield c
