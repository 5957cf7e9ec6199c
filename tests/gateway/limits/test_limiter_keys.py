"""Key layout: one Redis Cluster slot per department, proven on a real cluster-mode server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from redis.crc import key_slot

from gateway.limits import Admission, Completion, RedisLimiter
from gateway.limits.checks import budget_window, plan, reservation_key
from policy.limits import DepartmentLimits, Limit, LimitSet
from tests.gateway.limits.conftest import redis_settings
from tests.support.polling import wait_until_sync
from tests.support.redis_server import RedisServer

FULL = LimitSet(
    requests_per_minute=Limit(100, 60),
    concurrent_streams=Limit(10, 0),
    tokens_per_minute=Limit(10_000, 60),
    tokens_per_day=Limit(100_000, 86_400),
    tokens_per_month=Limit(1_000_000, 30 * 86_400),
)


@pytest.fixture(scope="module")
def cluster_node() -> Iterator[RedisServer]:
    """A one-node Redis Cluster owning every slot: it still refuses cross-slot scripts."""
    with RedisServer(extra_args=("--cluster-enabled", "yes")) as server:
        server.command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
        wait_until_sync(
            lambda: b"cluster_state:ok" in server.command("CLUSTER", "INFO"),
            within=10,
            every=0.05,
            what="single-node cluster state ok",
        )
        yield server


def test_every_key_of_a_department_shares_one_slot() -> None:
    limits = DepartmentLimits("a}b{:c%", department_limits=FULL, user_limits=FULL)
    adm = Admission("r:1}", limits.department, "us{er}:x", 5, limits)
    keys = [reservation_key("llmgw:", adm.department, adm.request_id)]
    keys += [c.key for c in plan(adm, "llmgw:", 1_749_988_800_000)]
    assert len(keys) == 11
    assert {key_slot(k.encode()) for k in keys} == {key_slot(b"{dept:a%7Db%7B%3Ac%25}")}
    assert all(k.startswith("llmgw:{dept:a%7Db%7B%3Ac%25}:") for k in keys)


async def test_scripts_run_on_a_cluster_node_without_crossslot(cluster_node: RedisServer) -> None:
    limiter = RedisLimiter.from_settings(redis_settings(cluster_node))
    for department in ("radiology", "er", "weird:{name}"):
        limits = DepartmentLimits(department, department_limits=FULL, user_limits=FULL)
        decision = await limiter.admit(Admission(uuid.uuid4().hex, department, "u", 50, limits))
        assert decision.allowed and not decision.degraded, decision
        assert decision.lease is not None
        assert await limiter.heartbeat(decision.lease)
        assert await limiter.complete(decision.lease, 20) is Completion.RECONCILED
    # The control: keys of two departments in one script are refused by this server.
    crossed = cluster_node.command(
        "EVAL", "return 1", "2", "llmgw:{dept:radiology}:d:rpm", "llmgw:{dept:er}:d:rpm"
    )
    assert crossed.startswith(b"-CROSSSLOT")
    await limiter.close()


@pytest.mark.parametrize(
    ("now", "period_s", "month", "end"),
    [
        (datetime(2025, 1, 31, 23, 59, 59), 30 * 86_400, True, datetime(2025, 2, 1)),
        (datetime(2024, 2, 29, 12), 31 * 86_400, True, datetime(2024, 3, 1)),
        (datetime(2025, 12, 31, 1), 30 * 86_400, True, datetime(2026, 1, 1)),
        (datetime(2025, 6, 15, 23, 59), 86_400, False, datetime(2025, 6, 16)),
        (datetime(2025, 6, 15, 0, 0, 3), 2, True, datetime(2025, 6, 15, 0, 0, 4)),
    ],
)
def test_budget_windows(now: datetime, period_s: int, month: bool, end: datetime) -> None:
    now_ms = int(now.replace(tzinfo=UTC).timestamp() * 1000)
    window, end_ms = budget_window(period_s, now_ms, calendar_month=month)
    assert end_ms == int(end.replace(tzinfo=UTC).timestamp() * 1000)
    later, _ = budget_window(period_s, end_ms, calendar_month=month)
    assert later == window + 1
    assert budget_window(period_s, end_ms - 1, calendar_month=month)[0] == window
