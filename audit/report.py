"""Query output and the usage report: tables, CSV, JSON and a PNG chart for a governance board."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from audit.ledger import UsageRow

_NS = 1_000_000_000


def parse_time(text: str) -> int:
    """ISO 8601 date or date-time (UTC when no offset is given) to unix ns."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as err:
        raise ValueError(f"{text!r}: expected an ISO 8601 date or date-time") from err
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp()) * _NS + dt.microsecond * 1000


def parse_period(text: str, now_ns: int | None = None) -> tuple[int | None, int | None]:
    """`YYYY-MM`, `YYYY-MM-DD`, `Nd` (last N days) or `all` to a [since, until) range in ns."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    if text == "all":
        return None, None
    if m := re.fullmatch(r"(\d+)d", text):
        return now_ns - int(m.group(1)) * 86_400 * _NS, None
    if m := re.fullmatch(r"(\d{4})-(\d{2})", text):
        year, month = int(m.group(1)), int(m.group(2))
        start = datetime(year, month, 1, tzinfo=UTC)
        end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        return int(start.timestamp()) * _NS, int(end.timestamp()) * _NS
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        start = datetime.fromisoformat(text).replace(tzinfo=UTC)
        return int(start.timestamp()) * _NS, int((start + timedelta(days=1)).timestamp()) * _NS
    raise ValueError(f"--period {text!r}: expected YYYY-MM, YYYY-MM-DD, Nd (e.g. 30d) or all")


def render(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str) -> str:
    """Rows as an aligned text table, CSV or JSON lines."""
    if fmt == "json":
        return "".join(json.dumps({c: r[c] for c in columns}) + "\n" for r in rows)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[r[c] for c in columns] for r in rows])
        return buf.getvalue()
    cells = [[str(c) for c in columns], *[[str(r[c]) for c in columns] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "".join(
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n"
        for row in cells
    )


USAGE_COLUMNS = tuple(f.name for f in fields(UsageRow))


def usage_dicts(rows: Sequence[UsageRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


class ChartsUnavailable(ValueError):
    """The optional `charts` extra (matplotlib) is not installed; the runtime image omits it."""


def render_png(rows: Sequence[UsageRow], path: str, title: str) -> None:
    """A bar chart of requests and tokens per department (Agg backend: no display needed)."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise ChartsUnavailable(
            "--png needs matplotlib, an optional extra: pip install 'llm-gateway[charts]'"
        ) from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    requests: dict[str, int] = defaultdict(int)
    tokens: dict[str, int] = defaultdict(int)
    for r in rows:
        requests[r.department] += r.requests
        tokens[r.department] += r.prompt_tokens + r.completion_tokens
    names = sorted(requests)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.bar(names, [requests[n] for n in names])
    ax1.set_title("requests by department")
    ax2.bar(names, [tokens[n] for n in names], color="tab:orange")
    ax2.set_title("tokens by department")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
