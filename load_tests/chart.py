"""PNG chart of a load-test run: latency percentiles over time and per step."""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from load_tests.report import TIMELINE_BUCKET_S, ResultsJson, Stat

_PERCENTILES: tuple[tuple[Stat, str], ...] = (
    ("p50", "tab:blue"),
    ("p90", "tab:orange"),
    ("p99", "tab:red"),
)


def write_chart(results: ResultsJson, png: str | Path) -> None:
    """Draw the run's timeline (top) and its per-step latencies (bottom) into `png`."""
    # A bare Figure on the Agg canvas, not pyplot: no display needed and no global figure state,
    # so the tool runs on servers, in CI and inside other programs.
    fig = Figure(figsize=(11, 8), layout="constrained")
    FigureCanvasAgg(fig)
    over_time, per_step = fig.subplots(2, 1)
    _timeline(results, over_time)
    _steps(results, per_step)
    fig.suptitle(
        f"{results['scenario']} -> {results['target']} ({results['mode']} loop, "
        f"started {results['started_at']})"
    )
    fig.savefig(png, dpi=100)


def _timeline(results: ResultsJson, ax: Axes) -> None:
    timeline = results["timeline"]
    t = [b["t_s"] for b in timeline]
    # A bucket holds the requests that started within it: plot its latency at its middle.
    mid = [x + TIMELINE_BUCKET_S / 2 for x in t]
    series = {
        "p50": [b["p50_ms"] for b in timeline],
        "p90": [b["p90_ms"] for b in timeline],
        "p99": [b["p99_ms"] for b in timeline],
    }
    for name, colour in _PERCENTILES:
        values = [float("nan") if v is None else v for v in series[name]]
        ax.plot(mid, values, label=name, color=colour, marker=".")
    peak = max((b["max_ms"] or 0.0 for b in timeline), default=0.0)
    low = min((b["p50_ms"] for b in timeline if b["p50_ms"]), default=0.0)
    if low > 0 and peak / low > 50:
        # Queueing at overload spans orders of magnitude; a linear axis would flatten the rest.
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    for step in results["steps"]:
        if step["index"] % 2:
            ax.axvspan(
                step["start_s"], step["start_s"] + step["duration_s"], color="0.5", alpha=0.08
            )
        label = f" {step['index'] + 1}: {step['label']}"
        ax.text(step["start_s"], 0.01, label, transform=ax.get_xaxis_transform(), fontsize=8)
    ax.set_xlabel("request start (s since run start)")
    ax.set_ylabel("end-to-end latency of OK requests (ms)")
    ax.grid(True, alpha=0.3)
    rate = ax.twinx()
    rate.bar(
        t,
        [b["ok"] for b in timeline],
        width=TIMELINE_BUCKET_S * 0.9,
        alpha=0.15,
        color="tab:green",
        align="edge",
        label="ok/s",
    )
    rate.bar(
        t,
        [b["rejected"] + b["failed"] for b in timeline],
        width=TIMELINE_BUCKET_S * 0.9,
        alpha=0.3,
        color="tab:gray",
        align="edge",
        bottom=[b["ok"] for b in timeline],
        label="errors/s",
    )
    rate.set_ylabel("requests started per second")
    # Latency lines above the request bars of the twin axis.
    ax.set_zorder(rate.get_zorder() + 1)
    ax.patch.set_visible(False)
    lines, labels = ax.get_legend_handles_labels()
    bars, bar_labels = rate.get_legend_handles_labels()
    ax.legend(lines + bars, labels + bar_labels, loc="upper left", fontsize=8)


def _steps(results: ResultsJson, ax: Axes) -> None:
    steps = results["steps"]
    series: list[tuple[str, Stat, str]] = [("e2e", name, colour) for name, colour in _PERCENTILES]
    if any(s["ttft_ms"] is not None for s in steps):
        series += [("ttft", "p50", "tab:cyan"), ("ttft", "p99", "tab:purple")]
    # Narrow bars even for one step, so that a single step is not a wall of colour.
    width = min(0.8 / len(series), 0.12)
    for k, (metric, name, colour) in enumerate(series):
        heights = []
        for step in steps:
            stats = step["e2e_ms"] if metric == "e2e" else step["ttft_ms"]
            heights.append(0.0 if stats is None else stats[name])
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(steps))]
        bars = ax.bar(xs, heights, width=width, color=colour, label=f"{metric} {name}")
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(
        range(len(steps)),
        [f"{s['index'] + 1}: {s['label']}\n{s['ok_rps']:.1f} ok/s" for s in steps],
    )
    ax.set_xlim(-0.5, len(steps) - 0.5)
    ax.set_ylabel("latency (ms)")
    ax.set_title("per step", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
