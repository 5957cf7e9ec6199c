"""The GPU smoke script: its dry run against the TensorRT-LLM double, and the real run on a GPU.

The script runs as its own process: its dry run installs the double as `tensorrt_llm` for the
whole interpreter, which must not leak into the test process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from load_tests.gpu_smoke import CHECK_NAMES

ROOT = Path(__file__).resolve().parents[2]
GPU_MODEL = os.environ.get("LLMGW_GPU_MODEL")


def run_smoke(out: Path, *args: str, timeout: float = 120) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(
        [sys.executable, "-m", "load_tests.gpu_smoke", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    report = json.loads(out.read_text()) if out.exists() else {}
    return done.returncode, report, done.stdout + done.stderr


@pytest.mark.slow
def test_dry_run_passes_every_check_and_measures_both_paths(tmp_path: Path) -> None:
    rc, report, output = run_smoke(tmp_path / "smoke.json", "--dry-run", "--runs", "2")
    assert rc == 0, output
    assert [c["name"] for c in report["checks"]] == list(CHECK_NAMES)
    assert all(c["passed"] for c in report["checks"]), output
    for name in CHECK_NAMES:
        assert f"PASS  {name}: " in output
    # The double follows upstream: numQueuedRequests misses requests waiting for a batch slot.
    queued = next(c for c in report["checks"] if c["name"] == "queued_meaning")
    assert queued["data"]["numQueuedRequests_misses_slot_waiters"] is True
    rows = {(r["path"], r["mode"]) for r in report["measurements"]}
    assert rows == {(p, m) for p in ("engine", "gateway") for m in ("single", "8 concurrent")}
    for row in report["measurements"]:
        assert row["tokens"] > 0 and row["tokens_per_s"] > 0 and row["ttft_ms_p50"] > 0


@pytest.mark.slow
def test_dry_run_with_a_seeded_sampler_checks_reproducibility(tmp_path: Path) -> None:
    rc, report, output = run_smoke(
        tmp_path / "smoke.json", "--dry-run", "--runs", "1", "--sampler", "TRTLLMSampler"
    )
    assert rc == 0, output
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["seed_reproducibility"]["data"]["same_seed_equal"] is True
    assert checks["engine_seed"]["detail"].startswith("same seed twice, same text: True")


@pytest.mark.slow
def test_a_failing_check_makes_the_script_exit_non_zero(tmp_path: Path) -> None:
    # The double loads any path; the engine refuses one that is not a directory, so every
    # engine and gateway check fails as not run.
    rc, report, output = run_smoke(
        tmp_path / "smoke.json", "--dry-run", "--runs", "1", "--model", str(tmp_path / "absent")
    )
    assert rc == 1, output
    failed = {c["name"] for c in report["checks"] if not c["passed"]}
    assert "engine_over_long_prompt" in failed and "gateway_stream_counts" in failed
    assert "FAIL  engine_seed: not run: ValueError" in output
    assert report["passed"] is False


def test_without_model_or_dry_run_the_script_says_what_to_pass(tmp_path: Path) -> None:
    rc, _, output = run_smoke(tmp_path / "smoke.json")
    assert rc == 2
    assert "--model DIR is required (or --dry-run)" in output


@pytest.mark.gpu
@pytest.mark.timeout(3600)
@pytest.mark.skipif(
    GPU_MODEL is None or importlib.util.find_spec("tensorrt_llm") is None,
    reason="needs TensorRT-LLM and a model directory in LLMGW_GPU_MODEL (docs/gpu.md)",
)
def test_gpu_smoke_on_a_real_model(tmp_path: Path) -> None:
    assert GPU_MODEL is not None
    sampler = os.environ.get("LLMGW_GPU_SAMPLER", "TorchSampler")
    out = Path(os.environ.get("LLMGW_GPU_OUT", str(tmp_path / "gpu-smoke.json")))
    rc, report, output = run_smoke(out, "--model", GPU_MODEL, "--sampler", sampler, timeout=3500)
    print(output)
    assert [c["name"] for c in report["checks"]] == list(CHECK_NAMES)
    assert rc == 0, output
