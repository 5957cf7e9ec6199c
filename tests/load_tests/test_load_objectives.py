"""The load tool tells the truth: a real gateway, a real `python -m load_tests run` subprocess.

It exits 1 and says why when requests fail or an objective (`slo:`) is missed, 0 when the run
meets them; departments without a token use `--token-file` (or the dev stack's token).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from gateway.process.server import GatewayHandle
from load_tests.scenario import Scenario, ScenarioError
from load_tests.slo import Objectives
from tests.helpers import StartGateway
from workers.server import WorkerHandle

REPO = Path(__file__).resolve().parents[2]


def _scenario(tmp_path: Path, target: str, slo: dict[str, object] | None = None) -> Path:
    data: dict[str, object] = {
        "name": "truth",
        "target": target,
        "load": {"mode": "closed", "concurrency": 2, "duration_s": 1},
        "departments": [{"name": "qa"}],
        "models": {"llama-3.1-8b-instruct": 1},
        "prompt_tokens": {8: 1},
        "max_tokens": {4: 1},
        "rpc": {"unary": 1, "stream": 1},
    }
    if slo is not None:
        data["slo"] = slo
    path = tmp_path / "truth.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def _run(cwd: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "load_tests", "run", "--no-progress", *args),
        cwd=cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, stderr.decode()


@pytest.fixture
async def real_gateway(start_test_gateway: StartGateway, sim_worker: WorkerHandle) -> GatewayHandle:
    return await start_test_gateway(sim_worker)


async def test_exits_non_zero_when_every_request_fails(
    real_gateway: GatewayHandle, tmp_path: Path
) -> None:
    # No token anywhere (tmp_path has no .data/dev-token): the gateway refuses every call.
    code, stderr = await _run(tmp_path, "--scenario", str(_scenario(tmp_path, real_gateway.target)))
    assert code == 1, stderr
    assert "FAILED: error ratio 100.0%" in stderr and "UNAUTHENTICATED" in stderr


async def test_exits_non_zero_when_an_objective_is_missed(
    real_gateway: GatewayHandle, tmp_path: Path, mint: Callable[..., str]
) -> None:
    token = tmp_path / "token"
    token.write_text(mint() + "\n")
    path = _scenario(tmp_path, real_gateway.target, {"p99_ms": 0.001, "error_ratio": 0})
    code, stderr = await _run(tmp_path, "--scenario", str(path), "--token-file", str(token))
    assert code == 1, stderr
    assert "FAILED: p99 latency" in stderr and "error ratio" not in stderr


async def test_passes_with_the_dev_token_by_default(
    real_gateway: GatewayHandle, tmp_path: Path, mint: Callable[..., str]
) -> None:
    (tmp_path / ".data").mkdir()
    (tmp_path / ".data" / "dev-token").write_text(mint() + "\n")
    path = _scenario(tmp_path, real_gateway.target, {"p99_ms": 30_000, "ttft_p99_ms": 30_000})
    code, stderr = await _run(tmp_path, "--scenario", str(path))
    assert code == 0, stderr
    assert "using the token in .data/dev-token" in stderr


def test_objectives_are_checked_and_name_the_key() -> None:
    base = {
        "name": "s",
        "load": {"mode": "closed", "concurrency": 1, "duration_s": 1},
        "departments": [{"name": "d"}],
        "models": {"m": 1},
        "prompt_tokens": {8: 1},
        "max_tokens": {4: 1},
    }
    assert Scenario.from_mapping(base, "scenario").slo == Objectives()
    for slo, message in [
        ({"p99": 1}, "scenario.slo.p99: unknown key"),
        ({"error_ratio": 2}, "scenario.slo.error_ratio: expected a share"),
        ({"ttft_p99_ms": "fast"}, "scenario.slo.ttft_p99_ms: expected a number"),
    ]:
        with pytest.raises(ScenarioError, match=message):
            Scenario.from_mapping({**base, "slo": slo}, "scenario")
