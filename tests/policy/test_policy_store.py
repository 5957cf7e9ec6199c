"""PolicyStore: load, last-good hot reload under continuous evaluation, metrics and health."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from gateway.auth.principal import Principal
from policy import PolicyError, PolicyRequest, PolicyStore, evaluate
from tests.support.polling import wait_until

ADMIN = Principal(subject="u1", department="administration", clearance="internal")
REQUEST = PolicyRequest("qwen2.5-7b-instruct", ("draft a letter",), prompt_tokens=3000)


def failures() -> float:
    return REGISTRY.get_sample_value("llmgw_policy_reloads_total", {"result": "failure"}) or 0.0


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_load_and_health(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)
    with pytest.raises(RuntimeError, match="before a successful load"):
        store.current()
    assert store.health()["status"] == "not_loaded"

    policy = store.load()

    assert store.current() is policy
    health = store.health()
    assert health["status"] == "ok"
    assert health["version"] == policy.version
    assert health["departments"] == "3"
    assert "last_error" not in health
    assert store.current().model_catalog["qwen2.5-7b-instruct"] == ("onprem-gpu", "eu-cloud")


def test_invalid_initial_load_raises_every_error(policy_dir: Path) -> None:
    edit(policy_dir / "research.yaml", "priority: batch", "priority: whenever")
    edit(policy_dir / "administration.yaml", "max_prompt: 4096", "max_prompt: big")
    store = PolicyStore(policy_dir)
    before = failures()

    with pytest.raises(PolicyError) as raised:
        store.load()

    assert [issue.key for issue in raised.value.issues] == ["tokens.max_prompt", "priority"]
    assert failures() == before + 1
    assert store.health()["status"] == "not_loaded"
    assert "research.yaml:" in store.health()["last_error"]


def test_reload_valid_change(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)
    first = store.load()
    assert not store.reload_if_changed()

    edit(policy_dir / "administration.yaml", "max_prompt: 4096", "max_prompt: 2048")

    assert store.reload_if_changed()
    assert store.current().version != first.version
    assert store.current().departments["administration"].tokens.max_prompt == 2048


def test_touch_without_change_does_not_reload(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)
    first = store.load()
    os.utime(policy_dir / "emergency.yaml", ns=(1, 1))

    assert not store.reload_if_changed()
    assert store.current() is first


def test_invalid_change_keeps_last_good_until_fixed(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)
    good = store.load()
    before = failures()
    edit(policy_dir / "emergency.yaml", "priority: emergency", "priority: asap")

    assert not store.reload_if_changed()
    assert not store.reload_if_changed()  # the same bad content is reported once

    assert store.current() is good
    assert failures() == before + 1
    assert REGISTRY.get_sample_value("llmgw_policy_reload_failing") == 1
    health = store.health()
    assert health["status"] == "degraded" and health["version"] == good.version
    assert f"{policy_dir / 'emergency.yaml'}:" in health["last_error"]
    assert "priority: unknown priority class 'asap'" in health["last_error"]

    edit(policy_dir / "emergency.yaml", "priority: asap", "priority: emergency")  # revert

    assert not store.reload_if_changed()
    assert store.current() is good
    assert store.health()["status"] == "ok"
    assert REGISTRY.get_sample_value("llmgw_policy_reload_failing") == 0


async def test_hot_reload_under_load(policy_dir: Path) -> None:
    """A valid and an invalid change while requests keep being decided: none of them fails."""
    store = PolicyStore(policy_dir)
    first = store.load()
    reloader = asyncio.create_task(store.run_reloader(0.01))
    versions: set[str] = set()
    decided = 0
    stop = asyncio.Event()

    async def keep_deciding() -> None:
        nonlocal decided
        while not stop.is_set():
            decision = evaluate(store.current(), ADMIN, REQUEST)
            assert decision.allowed, decision.denial
            versions.add(decision.policy_version)
            decided += 1
            await asyncio.sleep(0)

    load = asyncio.create_task(keep_deciding())
    try:
        edit(policy_dir / "administration.yaml", "max_output: 1024", "max_output: 900")
        await wait_until(
            lambda: store.current().version != first.version, within=5, every=0.005, what="reload"
        )
        second = store.current()
        assert second.departments["administration"].tokens.max_output == 900

        before = failures()
        edit(policy_dir / "administration.yaml", "max_prompt: 4096", "max_prompt: [4096]")
        await wait_until(lambda: failures() == before + 1, within=5, every=0.005, what="reload")
        await asyncio.sleep(0.05)  # several more polls: still the last good version
        assert store.current() is second
        assert store.health()["status"] == "degraded"
    finally:
        stop.set()
        await load
        reloader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reloader

    assert versions == {first.version, second.version}
    assert decided > 100
