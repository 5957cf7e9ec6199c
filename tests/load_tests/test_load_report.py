"""Exact percentiles and the JSON/text report built from recorded samples."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from load_tests.report import RunResult, Sample, build_results, percentile, render_text
from load_tests.scenario import read_scenario

STEPPED = {
    "name": "stepped",
    "load": {"mode": "open", "steps": [{"rate": 4, "duration_s": 1}, {"rate": 8, "duration_s": 1}]},
    "departments": [{"name": "d"}],
    "models": {"m": 1},
    "prompt_tokens": {8: 1},
    "max_tokens": {4: 1},
}


def sample(step: int, start: float, end: float, code: str = "OK", tokens: int = 4) -> Sample:
    return Sample(
        step=step,
        rpc="stream",
        department="d",
        model="m",
        start_s=start,
        end_s=end,
        code=code,
        completion_tokens=tokens if code == "OK" else 0,
        ttft_s=(end - start) / 2 if code == "OK" else None,
        itl_s=[0.01, 0.02] if code == "OK" else [],
    )


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, p) for p in (50, 90, 99, 100)] == [50.0, 90.0, 99.0, 100.0]
    assert percentile([1.0, 2.0], 50) == 1.0
    assert percentile([1.0, 2.0], 99) == 2.0
    assert percentile([7.0], 99.9) == 7.0
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)


def test_results_split_steps_statuses_and_throughput() -> None:
    samples = [
        sample(0, 0.0, 0.1),
        sample(0, 0.25, 0.45),
        sample(0, 0.5, 0.6, code="RESOURCE_EXHAUSTED"),
        sample(0, 0.75, 1.2),  # started in step 0, finished in step 1
        sample(1, 1.0, 1.3),
        sample(1, 1.125, 1.2, code="UNAVAILABLE"),
        sample(1, 1.25, 1.25, code="CLIENT_OVERLOADED"),
        sample(1, 1.5, 2.5),  # finished after the schedule, during the drain
    ]
    run = RunResult(
        scenario=read_scenario(STEPPED, "scenario"),
        target="127.0.0.1:1",
        started_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        elapsed_s=2.5,
        samples=samples,
    )

    results = build_results(run)

    first, second = results["steps"]
    assert (first["requests"], first["ok"], first["rejected"], first["failed"]) == (4, 3, 1, 0)
    assert (second["requests"], second["ok"], second["rejected"], second["failed"]) == (4, 2, 0, 2)
    assert first["offered_rps"] == 4.0 and second["offered_rps"] == 4.0
    # Throughput counts what finished inside the step's window, whenever it started.
    assert first["completed_rps"] == 3.0 and first["ok_rps"] == 2.0
    assert second["completed_rps"] == 4.0 and second["ok_rps"] == 2.0
    assert second["tokens_per_s"] == 8.0
    e2e = first["e2e_ms"]
    assert e2e is not None
    assert e2e["count"] == 3
    assert e2e["p50"] == pytest.approx(200.0) and e2e["max"] == pytest.approx(450.0)
    itl = first["itl_ms"]
    assert itl is not None and itl["count"] == 6 and itl["max"] == pytest.approx(20.0)
    totals = results["totals"]
    assert totals["by_code"] == {
        "CLIENT_OVERLOADED": 1,
        "OK": 5,
        "RESOURCE_EXHAUSTED": 1,
        "UNAVAILABLE": 1,
    }
    assert totals["offered_rps"] == 4.0  # 8 requests over the 2 s schedule
    assert totals["ok_rps"] == 2.0  # 5 over the 2.5 s the run took
    assert [(b["t_s"], b["started"], b["ok"]) for b in results["timeline"]] == [
        (0.0, 4, 3),
        (1.0, 4, 2),
    ]
    assert results["launch_lag_ms"] is not None
    assert results["started_at"] == "2026-01-02T03:04:05+00:00"

    text = render_text(results)
    assert "1: 4/s" in text and "2: 8/s" in text and "\ntotal" in text
    assert "by status: CLIENT_OVERLOADED 1, OK 5, RESOURCE_EXHAUSTED 1, UNAVAILABLE 1" in text
