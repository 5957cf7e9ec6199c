"""Smoke runs of the gateway benchmarks: each runs for seconds and prints a table of sane numbers.

No timing threshold is asserted (this machine is shared); only that every benchmark starts its
real processes, completes, and reports positive, finite figures for every row it promises.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_bench(module: str, *args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        [sys.executable, "-m", f"load_tests.{module}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def row(output: str, label: str) -> list[float]:
    """The numbers of the table row whose first column starts with `label`."""
    for line in output.splitlines():
        if line.startswith(label):
            cells = line[len(label) :].split()
            return [float(c.replace(",", "")) for c in cells]
    raise AssertionError(f"no row {label!r} in:\n{output}")


def positive(values: list[float]) -> bool:
    return all(math.isfinite(v) and v > 0 for v in values)


@pytest.mark.slow
def test_overhead_benchmark_reports_three_targets() -> None:
    out = run_bench(
        "bench_overhead", "--seconds", "0.5", "--warmup", "0.2", "--unloaded", "30",
        "--concurrency", "8",
    )  # fmt: skip
    for label in ("worker directly", "bare grpc.aio hop", "full gateway"):
        rate, cpu_us, p50, p99, *_ = row(out, label)
        assert positive([rate, cpu_us, p50, p99]), out
        assert p99 >= p50
    assert "full/bare throughput:" in out and "added latency over the worker" in out


def test_relay_benchmark_counts_tokens_on_both_paths() -> None:
    out = run_bench(
        "bench_relay", "--streams", "8", "--tokens", "64", "--seconds", "0.5", "--warmup",
        "0.2", "--ttft-samples", "5",
    )  # fmt: skip
    for label in ("worker directly", "through the gateway"):
        values = row(out, label)
        assert positive(values), out
        assert values[1] >= 1.0  # tokens per message: coalesced, never split below one
    assert "tokens/s per gateway core" in out


def test_memory_benchmark_samples_gateway_rss() -> None:
    out = run_bench(
        "bench_memory", "--streams", "50", "--seconds", "1", "--interval", "0.25",
        "--workers", "1", "--itl-ms", "50",
    )  # fmt: skip
    seconds, samples, idle, open_mb, peak, last, _growth, per_stream = row(out, "50 ")
    assert samples >= 4 and seconds >= 1
    assert positive([idle, open_mb, peak, last, per_stream]), out
    assert peak >= open_mb >= idle


def test_scale_benchmark_compares_sizes() -> None:
    out = run_bench("bench_scale", "--requests", "100", "--picks", "100")
    for label in ("admission, 10 departments", "admission, 1000 departments"):
        policy_us, limiter_us, total = row(out, label)
        assert positive([policy_us, limiter_us]) and total == pytest.approx(
            policy_us + limiter_us, abs=1.0
        )
    for label in ("pick, 2 workers", "pick, 200 workers"):
        assert positive(row(out, label)), out
    assert "ratios: admission 1000/10 departments" in out


@pytest.mark.slow
def test_processes_benchmark_runs_one_and_two_processes() -> None:
    out = run_bench(
        "bench_processes", "--seconds", "0.5", "--warmup", "0.2", "--concurrency", "8",
        "--connections", "2",
    )  # fmt: skip
    one = row(out, "1 process(es)")
    two = row(out, "2 process(es)")
    assert positive(one[1:]) and positive(two[1:]), out
    assert two[0] == 2  # both serving processes were running
    assert "2 processes / 1 process:" in out


@pytest.mark.slow
def test_http_benchmark_compares_both_doors() -> None:
    out = run_bench(
        "bench_http", "--seconds", "0.4", "--rounds", "2", "--warmup", "0.2", "--concurrency", "4"
    )  # fmt: skip
    labels = [
        "gRPC Generate ",
        "HTTP chat completion ",
        "gRPC GenerateStream",
        "HTTP chat completion, SSE",
    ]
    for label in labels:
        assert positive(row(out, label)), out
    assert row(out, "gRPC Generate ")[-1] == 1.0  # each ratio is against its gRPC row
