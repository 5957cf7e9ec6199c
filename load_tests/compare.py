"""Side-by-side comparison of two load-test result files, with B/A ratios."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from load_tests.report import FORMAT, LatencyJson, ResultsJson, Stat, SummaryJson, format_table

# Ratios within this band of 1 are reported as "same": run-to-run noise, not a change.
_SAME_BAND = 0.05


class ResultsFileError(ValueError):
    """A results file cannot be read or was not written by this tool."""


def load_results(path: str | Path) -> ResultsJson:
    """Read a file written by `run --out`, checking its format tag."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ResultsFileError(f"cannot read {path}: {err.strerror}") from err
    except json.JSONDecodeError as err:
        raise ResultsFileError(f"{path}: not JSON ({err.msg} at line {err.lineno})") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ResultsFileError(
            f"{path}: not a load-test results file (expected format {FORMAT!r}); "
            "write one with `python -m load_tests run --out FILE`"
        )
    return cast(ResultsJson, data)


@dataclass(frozen=True, slots=True)
class _Metric:
    label: str
    get: Callable[[SummaryJson], float | None]
    higher_is_better: bool


def _latency(key: str, stat: Stat) -> Callable[[SummaryJson], float | None]:
    def get(summary: SummaryJson) -> float | None:
        stats = cast(LatencyJson | None, summary.get(key))
        return None if stats is None else stats[stat]

    return get


_TOTALS = [
    _Metric("requests/s (done)", lambda s: s["completed_rps"], True),
    _Metric("ok requests/s", lambda s: s["ok_rps"], True),
    _Metric("tokens/s", lambda s: s["tokens_per_s"], True),
    _Metric("ok", lambda s: s["ok"], True),
    _Metric("rejected (exhausted)", lambda s: s["rejected"], False),
    _Metric("failed", lambda s: s["failed"], False),
    *(
        _Metric(f"{name} {stat} ms", _latency(key, stat), False)
        for key, name in (("e2e_ms", "e2e"), ("ttft_ms", "ttft"), ("itl_ms", "itl"))
        for stat in ("p50", "p90", "p99", "max")
    ),
]
_PER_STEP = [m for m in _TOTALS if m.label in {"ok requests/s", "e2e p50 ms", "e2e p99 ms"}]


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "-"
    if a == 0:
        return "same" if b == 0 else "new"
    return f"x{b / a:.2f}"


def _verdict(metric: _Metric, a: float | None, b: float | None) -> str:
    if a is None or b is None or (a == 0 and b == 0):
        return ""
    if a != 0 and abs(b / a - 1) <= _SAME_BAND:
        return "same"
    return "better" if (b > a) == metric.higher_is_better else "worse"


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def compare(a: ResultsJson, b: ResultsJson, names: tuple[str, str] = ("A", "B")) -> str:
    """A table of the main metrics of two runs: A, B, the ratio B/A and whether B is better."""
    rows: list[tuple[str, str, str, str, str]] = []
    for metric in _TOTALS:
        va, vb = metric.get(a["totals"]), metric.get(b["totals"])
        if va is None and vb is None:
            continue
        rows.append((metric.label, _fmt(va), _fmt(vb), _ratio(va, vb), _verdict(metric, va, vb)))
    if len(a["steps"]) == len(b["steps"]) > 1:
        for step_a, step_b in zip(a["steps"], b["steps"], strict=True):
            for metric in _PER_STEP:
                va, vb = metric.get(step_a), metric.get(step_b)
                label = f"step {step_a['index'] + 1} ({step_a['label']}) {metric.label}"
                rows.append((label, _fmt(va), _fmt(vb), _ratio(va, vb), _verdict(metric, va, vb)))
    header = ("metric", "A", "B", "B/A", "B is")
    lines = [
        f"A: {names[0]}: {a['scenario']} -> {a['target']}, {a['started_at']}",
        f"B: {names[1]}: {b['scenario']} -> {b['target']}, {b['started_at']}",
    ]
    return "\n".join([*lines, *format_table([header, *rows])])
