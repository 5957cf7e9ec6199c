"""One person's records across every source (GDPR Art. 15 access): JSON and a readable table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from audit.ledger import Ledger
from audit.report import render

# What the table shows of each record; the JSON file holds every field.
TABLE_COLUMNS = (
    "time",
    "source",
    "department",
    "purpose",
    "model",
    "classification",
    "outcome",
    "prompt_tokens",
    "completion_tokens",
    "text_kept",
)
# Internal to the chain, or about other people's keys: not part of what is disclosed.
_INTERNAL = ("subject_commitment", "content_commitment", "prev_hash")


def subject_records(ledger: Ledger, pseudonym: str) -> Iterator[dict[str, Any]]:
    """Each record linked to `pseudonym`, oldest first: its hashed fields plus any kept text."""
    for body, prompt, answer in ledger.subject_rows(pseudonym):
        data: dict[str, Any] = json.loads(body)
        for key in _INTERNAL:
            data.pop(key, None)
        data["prompt_text"], data["answer_text"] = prompt, answer
        yield data


def _time(ns: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


def write_export(ledger: Ledger, pseudonym: str, out_dir: Path) -> int:
    """Write `records.json` and `records.txt` for one subject into `out_dir`; returns the count.

    The JSON is streamed record by record, so a heavy user's export needs no more memory than
    one record; the table keeps one short line per record.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    n = 0
    with (out_dir / "records.json").open("w", encoding="utf-8") as fh:
        fh.write("[")
        for data in subject_records(ledger, pseudonym):
            fh.write(("\n" if n == 0 else ",\n") + json.dumps(data, sort_keys=True))
            n += 1
            row = {c: data.get(c, "") for c in TABLE_COLUMNS}
            row["time"] = _time(int(data["time_ns"]))
            row["text_kept"] = "yes" if data["prompt_text"] or data["answer_text"] else "no"
            rows.append(row)
        fh.write("\n]\n")
    (out_dir / "records.txt").write_text(
        f"{n} audit record(s) of this person, oldest first (times UTC)\n\n"
        + render(rows, TABLE_COLUMNS, "table"),
        encoding="utf-8",
    )
    return n
