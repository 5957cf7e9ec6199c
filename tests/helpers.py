"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc

from gateway.auth.devkeys import dev_auth_settings
from gateway.process.server import GatewayHandle
from gateway.settings import GatewaySettings
from policy.settings import PolicySettings
from tests.support.polling import wait_until as wait_until  # re-exported for the suites
from workers.server import WorkerHandle
from workers.sim import SimConfig

ROOT = Path(__file__).resolve().parents[1]
TEST_POLICY = ROOT / "tests" / "fixtures" / "policy"
EXAMPLE_POLICY = ROOT / "policy" / "examples" / "health-region"
# Fast latency model for tests: visible streaming, quick suites.
FAST_SIM = SimConfig(time_to_first_token_ms=5, inter_token_latency_ms=1, prefill_ms_per_token=0)

StartWorker = Callable[..., Awaitable[WorkerHandle]]
StartGateway = Callable[..., Awaitable[GatewayHandle]]
Metadata = tuple[tuple[str, str], ...]
# The `mint` fixture: a dev token for (department, subject, **claims) trusted by test gateways.
Mint = Callable[..., str]
# The `channel_to` fixture: a channel to a gateway whose calls carry the default test token.
ChannelTo = Callable[[GatewayHandle], grpc.aio.Channel]


def bearer(token: str) -> Metadata:
    """Call metadata that presents `token` as a bearer token."""
    return (("authorization", f"Bearer {token}"),)


def gateway_settings(
    data_dir: Path, policy_dir: Path = TEST_POLICY, **overrides: Any
) -> GatewaySettings:
    """Settings of a test gateway: dev-key auth, a policy directory, state under data_dir."""
    base = GatewaySettings(
        auth=dev_auth_settings(data_dir),
        policy=PolicySettings(policy_dir, reload_interval_s=0.2),
        data_dir=data_dir,
    )
    return replace(base, **overrides)
