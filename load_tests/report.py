"""Load-test results: recorded samples, exact percentiles, and the JSON and text reports."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, TypedDict

from load_tests.scenario import Rpc, Scenario

FORMAT = "llmgw-loadtest/1"
OK = "OK"
# RESOURCE_EXHAUSTED is the gateway shedding load as designed (limits, full queue): it is counted
# apart from failures so that a run at overload is not mistaken for a broken gateway.
EXHAUSTED = "RESOURCE_EXHAUSTED"
# The open loop could not start a request because `max_in_flight` were already running.
CLIENT_OVERLOADED = "CLIENT_OVERLOADED"
TIMELINE_BUCKET_S = 1.0


@dataclass(slots=True)
class Sample:
    """One finished request; times are seconds since the run started.

    `start_s` is when the request was due (open loop) or sent (closed loop): latencies count from
    it, so time spent waiting behind a slow client or server is part of the latency.
    """

    step: int
    rpc: Rpc
    department: str
    model: str
    start_s: float
    launch_lag_s: float = 0.0
    end_s: float = 0.0
    code: str = OK
    completion_tokens: int = 0
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)

    @property
    def latency_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, slots=True)
class RunResult:
    """Everything one run recorded; `elapsed_s` runs from the start to the last completion."""

    scenario: Scenario
    target: str
    started_at: datetime
    elapsed_s: float
    samples: list[Sample]
    interrupted: bool = False


class LatencyJson(TypedDict):
    """Latency distribution in milliseconds; percentiles are exact (nearest rank)."""

    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float


class SummaryJson(TypedDict):
    """Counts, throughput and latencies over one window (a step or the whole run)."""

    requests: int
    ok: int
    rejected: int
    failed: int
    by_code: dict[str, int]
    duration_s: float
    offered_rps: float
    completed_rps: float
    ok_rps: float
    tokens_per_s: float
    e2e_ms: LatencyJson | None
    ttft_ms: LatencyJson | None
    itl_ms: LatencyJson | None


class StepJson(SummaryJson):
    """A step's summary with its place in the run and its load."""

    index: int
    label: str
    start_s: float
    concurrency: int | None
    rate: float | None


class TimelineJson(TypedDict):
    """Requests that started in one bucket of the run, with their end-to-end latency (OK only)."""

    t_s: float
    started: int
    ok: int
    rejected: int
    failed: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None


class ResultsJson(TypedDict):
    """The file `run --out` writes and `compare` and `chart` read."""

    format: str
    scenario: str
    target: str
    mode: str
    started_at: str
    elapsed_s: float
    interrupted: bool
    totals: SummaryJson
    steps: list[StepJson]
    timeline: list[TimelineJson]
    launch_lag_ms: LatencyJson | None


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of sorted values, as HdrHistogram reports it: the smallest
    recorded value with at least `p` percent of the samples at or below it."""
    if not ordered:
        raise ValueError("percentile of no samples: record at least one value first")
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def latency_ms(values_s: Iterable[float]) -> LatencyJson | None:
    """Distribution of durations given in seconds, reported in milliseconds; None when empty."""
    ordered = sorted(v * 1000.0 for v in values_s)
    if not ordered:
        return None
    return LatencyJson(
        count=len(ordered),
        mean=math.fsum(ordered) / len(ordered),
        p50=percentile(ordered, 50),
        p90=percentile(ordered, 90),
        p99=percentile(ordered, 99),
        max=ordered[-1],
    )


def summarise(
    samples: Sequence[Sample], window: tuple[float, float], finished: Sequence[Sample]
) -> SummaryJson:
    """Summarise `samples` (started in the window) with throughput from `finished` (the samples
    that ended in the window, whenever they started)."""
    duration = window[1] - window[0]
    by_code = Counter(s.code for s in samples)
    ok = [s for s in samples if s.code == OK]
    done_ok = [s for s in finished if s.code == OK]
    return SummaryJson(
        requests=len(samples),
        ok=len(ok),
        rejected=by_code[EXHAUSTED],
        failed=len(samples) - len(ok) - by_code[EXHAUSTED],
        by_code=dict(sorted(by_code.items())),
        duration_s=duration,
        offered_rps=_rate(len(samples), duration),
        completed_rps=_rate(len(finished), duration),
        ok_rps=_rate(len(done_ok), duration),
        tokens_per_s=_rate(sum(s.completion_tokens for s in done_ok), duration),
        e2e_ms=latency_ms(s.latency_s for s in ok),
        ttft_ms=latency_ms(s.ttft_s for s in ok if s.ttft_s is not None),
        itl_ms=latency_ms(gap for s in ok for gap in s.itl_s),
    )


def _rate(count: float, duration: float) -> float:
    return count / duration if duration > 0 else 0.0


def build_results(result: RunResult) -> ResultsJson:
    """Turn a run's samples into the JSON report: totals, one entry per step, a timeline."""
    samples, load = result.samples, result.scenario.load
    steps: list[StepJson] = []
    start = 0.0
    for index, step in enumerate(load.steps):
        window = (start, start + step.duration_s)
        summary = summarise(
            [s for s in samples if s.step == index],
            window,
            [s for s in samples if window[0] <= s.end_s < window[1]],
        )
        steps.append(
            StepJson(
                **summary,
                index=index,
                label=step.label,
                start_s=start,
                concurrency=step.concurrency,
                rate=step.rate,
            )
        )
        start = window[1]
    totals = summarise(samples, (0.0, max(result.elapsed_s, 1e-9)), samples)
    # The offered rate is about the schedule, not the drain after it.
    totals["offered_rps"] = _rate(len(samples), load.duration_s)
    return ResultsJson(
        format=FORMAT,
        scenario=result.scenario.name,
        target=result.target,
        mode=load.mode,
        started_at=result.started_at.isoformat(timespec="seconds"),
        elapsed_s=result.elapsed_s,
        interrupted=result.interrupted,
        totals=totals,
        steps=steps,
        timeline=_timeline(samples),
        launch_lag_ms=latency_ms(s.launch_lag_s for s in samples) if load.mode == "open" else None,
    )


def _timeline(samples: Sequence[Sample]) -> list[TimelineJson]:
    buckets: dict[int, list[Sample]] = {}
    for s in samples:
        buckets.setdefault(int(s.start_s // TIMELINE_BUCKET_S), []).append(s)
    out: list[TimelineJson] = []
    for key in sorted(buckets):
        bucket = buckets[key]
        ok = sorted(s.latency_s * 1000.0 for s in bucket if s.code == OK)
        rejected = sum(1 for s in bucket if s.code == EXHAUSTED)
        out.append(
            TimelineJson(
                t_s=key * TIMELINE_BUCKET_S,
                started=len(bucket),
                ok=len(ok),
                rejected=rejected,
                failed=len(bucket) - len(ok) - rejected,
                p50_ms=percentile(ok, 50) if ok else None,
                p90_ms=percentile(ok, 90) if ok else None,
                p99_ms=percentile(ok, 99) if ok else None,
                max_ms=ok[-1] if ok else None,
            )
        )
    return out


Stat = Literal["mean", "p50", "p90", "p99", "max"]


def _ms(stats: LatencyJson | None, key: Stat) -> str:
    return "-" if stats is None else f"{stats[key]:.1f}"


_E2E_STATS: tuple[Stat, ...] = ("p50", "p90", "p99", "max")
_TOKEN_STATS: tuple[Stat, ...] = ("p50", "p99")


def format_table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Align rows in columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            [
                row[0].ljust(widths[0]),
                *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)),
            ]
        ).rstrip()
        for row in rows
    ]


def render_text(results: ResultsJson) -> str:
    """A plain-text table of the run for the terminal: one row per step, then the totals."""
    header = (
        "step", "offered/s", "done/s", "ok/s", "tok/s", "ok", "exhausted", "failed",
        "e2e ms p50/p90/p99/max", "ttft ms p50/p99", "itl ms p50/p99",
    )  # fmt: skip
    names = [f"{s['index'] + 1}: {s['label']}" for s in results["steps"]]
    summaries: list[SummaryJson] = [*results["steps"], results["totals"]]
    rows = [header]
    for name, s in zip([*names, "total"], summaries, strict=True):
        rows.append(
            (
                name,
                f"{s['offered_rps']:.1f}",
                f"{s['completed_rps']:.1f}",
                f"{s['ok_rps']:.1f}",
                f"{s['tokens_per_s']:.0f}",
                str(s["ok"]),
                str(s["rejected"]),
                str(s["failed"]),
                "/".join(_ms(s["e2e_ms"], k) for k in _E2E_STATS),
                "/".join(_ms(s["ttft_ms"], k) for k in _TOKEN_STATS),
                "/".join(_ms(s["itl_ms"], k) for k in _TOKEN_STATS),
            )
        )
    lines = [
        f"scenario {results['scenario']} -> {results['target']} ({results['mode']} loop, "
        f"{results['elapsed_s']:.1f} s{', interrupted' if results['interrupted'] else ''})",
        *format_table(rows),
    ]
    codes = ", ".join(f"{code} {n}" for code, n in results["totals"]["by_code"].items())
    lines.append(f"by status: {codes or 'no requests finished'}")
    lag = results["launch_lag_ms"]
    if lag is not None:
        lines.append(
            f"open-loop launch lag ms p99/max: {lag['p99']:.1f}/{lag['max']:.1f} "
            "(large values mean this client, not the gateway, is the bottleneck)"
        )
    return "\n".join(lines)
