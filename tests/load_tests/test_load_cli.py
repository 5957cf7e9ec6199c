"""The command line: a real `python -m load_tests run` subprocess, then `compare` and `chart`."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from load_tests.__main__ import main
from load_tests.report import FORMAT, RunResult, Sample, build_results
from load_tests.scenario import read_scenario
from tests.load_tests.conftest import StartGateway, WriteScenario
from tests.load_tests.fake_inference import EXHAUSTED_MODEL, Behaviour

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[2]


async def test_run_subprocess_writes_json_png_and_progress(
    start_gateway: StartGateway, write_scenario: WriteScenario, tmp_path: Path
) -> None:
    gw = await start_gateway(Behaviour(ttft_s=0.01, itl_s=0.002, latency_s=0.01))
    path = write_scenario(
        {
            "name": "cli",
            "target": "127.0.0.1:1",  # overridden by --target
            "load": {"mode": "closed", "concurrency": 2, "duration_s": 1.5},
            "departments": [{"name": "d"}],
            "models": {"ok-model": 4, EXHAUSTED_MODEL: 1},
            "prompt_tokens": {8: 1},
            "max_tokens": {4: 1},
            "rpc": {"unary": 1, "stream": 1},
        }
    )
    out, png = tmp_path / "a.json", tmp_path / "a.png"

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "load_tests",
        "run",
        "--scenario",
        str(path),
        "--target",
        gw.target,
        "--out",
        str(out),
        "--png",
        str(png),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)

    assert proc.returncode == 0, stderr.decode()
    results = json.loads(out.read_text())
    assert results["format"] == FORMAT and results["target"] == gw.target
    totals = results["totals"]
    assert totals["requests"] == sum(gw.calls.values())
    assert (
        totals["rejected"]
        == gw.calls[f"unary:{EXHAUSTED_MODEL}"] + gw.calls[f"stream:{EXHAUSTED_MODEL}"]
    )
    assert totals["ok"] > 0 and totals["rejected"] > 0 and totals["failed"] == 0
    assert totals["ttft_ms"]["count"] > 0
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert "step 1/1 (2 callers)" in stderr.decode()  # the live progress line
    assert "\ntotal " in stdout.decode()


async def test_sigint_ends_the_run_early_and_still_reports(
    start_gateway: StartGateway, write_scenario: WriteScenario, tmp_path: Path
) -> None:
    gw = await start_gateway(Behaviour(latency_s=0.01))
    path = write_scenario(
        {
            "name": "long",
            "load": {"mode": "open", "rate": 20, "duration_s": 600},
            "departments": [{"name": "d"}],
            "models": {"ok-model": 1},
            "prompt_tokens": {8: 1},
            "max_tokens": {4: 1},
        }
    )
    out = tmp_path / "long.json"
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "load_tests", "run", "--scenario", str(path)),
        *("--target", gw.target, "--out", str(out)),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    # The first progress line means the load, and so the signal handler, is running.
    first = await asyncio.wait_for(proc.stderr.readline(), 15)
    assert b"step 1/1 (20/s)" in first
    proc.send_signal(signal.SIGINT)
    stdout, _ = await asyncio.wait_for(proc.communicate(), 15)

    assert proc.returncode == 0
    assert "interrupted" in stdout.decode()
    results = json.loads(out.read_text())
    assert results["interrupted"] is True
    assert 0 < results["totals"]["requests"] == sum(gw.calls.values()) < 200


def results_file(path: Path, latency_s: float, count: int) -> Path:
    scenario = read_scenario(
        {
            "name": path.stem,
            "load": {"mode": "closed", "concurrency": 1, "duration_s": 1},
            "departments": [{"name": "d"}],
            "models": {"m": 1},
            "prompt_tokens": {8: 1},
            "max_tokens": {4: 1},
        },
        "scenario",
    )
    samples = [
        Sample(
            step=0,
            rpc="stream",
            department="d",
            model="m",
            start_s=i / count,
            end_s=i / count + latency_s,
            completion_tokens=4,
            ttft_s=latency_s / 2,
            itl_s=[latency_s / 8],
        )
        for i in range(count)
    ]
    run = RunResult(scenario, "127.0.0.1:1", datetime.now(UTC), 1.0 + latency_s, samples)
    path.write_text(json.dumps(build_results(run)))
    return path


def test_compare_prints_ratios_and_verdicts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = results_file(tmp_path / "a.json", latency_s=0.1, count=50)
    b = results_file(tmp_path / "b.json", latency_s=0.2, count=50)

    assert main(["compare", str(a), str(b)]) == 0

    rows = {
        line.split("  ")[0].strip(): line.split() for line in capsys.readouterr().out.splitlines()
    }
    assert rows["e2e p50 ms"][-2:] == ["x2.00", "worse"]
    assert rows["ttft p99 ms"][-2:] == ["x2.00", "worse"]
    assert rows["ok"][-2:] == ["x1.00", "same"]
    assert rows["ok requests/s"][-1] in {"worse", "same"}  # the run took longer


def test_chart_subcommand_redraws_a_results_file(tmp_path: Path) -> None:
    a = results_file(tmp_path / "a.json", latency_s=0.05, count=20)
    png = tmp_path / "chart.png"

    assert main(["chart", str(a), "--png", str(png)]) == 0
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_errors_exit_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_results = tmp_path / "x.json"
    not_results.write_text('{"hello": 1}')

    assert main(["compare", str(not_results), str(not_results)]) == 2
    assert "not a load-test results file" in capsys.readouterr().err
    assert main(["run", "--scenario", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: cannot read settings file: No such file" in capsys.readouterr().err
