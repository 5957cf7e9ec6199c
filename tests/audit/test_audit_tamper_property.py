"""Property: any change to a ledger's records, text or checkpoints is caught by `verify`.

Each example fills a real SQLite ledger (two chains, some records with text, an old and a fresh
checkpoint), changes it as someone with database access could, and verifies with the pinned key.
Not generated, because no ledger alone can tell them from the store's own work: a well-formed
record appended after the last checkpoint (the store appends the same way), and deleting a
checkpoint older than the newest (coarsening does that; the newest still covers every record).
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.checkpoint import sign_checkpoint
from audit.record import AuditRecord, Outcome
from audit.sqlite_ledger import SqliteLedger
from audit.verify import verify

KEY = Ed25519PrivateKey.generate()
DAY_NS = 86_400 * 1_000_000_000
RECORD_COLUMNS = (
    "source", "chain_index", "record_id", "sequence", "time_ns", "department", "model",
    "purpose", "outcome", "status_code", "prompt_tokens", "completion_tokens", "body",
    "prev_hash", "hash",
)  # fmt: skip
POSITION = "SELECT source, chain_index FROM records WHERE rowid = ?"
CP_COLUMNS = "created_ns, payload, signature, public_key"
ACTIONS = [
    ("records", "edit"), ("records", "delete"), ("records", "insert"), ("records", "reorder"),
    ("records", "truncate"), ("contents", "edit"), ("contents", "delete"),
    ("contents", "insert"), ("contents", "reorder"), ("contents", "truncate"),
    ("checkpoints", "edit"), ("checkpoints", "delete"), ("checkpoints", "insert"),
    ("checkpoints", "reorder"), ("checkpoints", "truncate"), ("subject_links", "edit"),
]  # fmt: skip


def _record(n: int, source: str, seq: int) -> AuditRecord:
    text = n % 3 == 0
    return AuditRecord(
        record_id=f"r{n}", time_ns=1_767_225_600_000_000_000 + n, subject_pseudonym=f"p{n % 4}",
        department=("a", "b")[n % 2], outcome=Outcome.OK, status_code="OK", source=source,
        sequence=seq, model="m", purpose="care", prompt_tokens=n, completion_tokens=2 * n,
        prompt_text=f"prompt {n}" if text else None,
        answer_text=f"answer {n}" if text and n % 2 else None,
    )  # fmt: skip


def _fill(path: Path) -> None:
    ledger = SqliteLedger(path)
    n = 0
    for half in (0, 1):
        for source in ("gw-a", "gw-b"):
            for i in range(4):
                n += 1
                ledger.append([_record(n, source, half * 4 + i + 1)])
        created = time.time_ns() - (10 * DAY_NS if half == 0 else 0)
        ledger.add_checkpoint(
            sign_checkpoint(KEY, ledger.heads(), created, ledger.newest_checkpoint())
        )
    ledger.close()


def _changed(old: Any, draw: st.DataObject) -> Any:
    if isinstance(old, int):
        delta = draw.draw(st.integers(min_value=-3, max_value=3).filter(bool))
        return old + delta
    new = draw.draw(st.text(min_size=1, max_size=8) | st.just(old[::-1] + "x") | st.just(""))
    return new if new != old else old + "x"


def _mutate(conn: sqlite3.Connection, table: str, action: str, data: st.DataObject) -> str:
    """Apply one change; returns a description for the failure message."""
    ids = [r[0] for r in conn.execute(f"SELECT rowid FROM {table} ORDER BY rowid")]
    pick = data.draw(st.sampled_from(ids))
    if action == "truncate":
        if table == "records":
            src, top = conn.execute(POSITION, (pick,)).fetchone()
            cut = data.draw(st.integers(min_value=0, max_value=top - 1)) if top > 1 else 0
            conn.execute("DELETE FROM records WHERE source = ? AND chain_index > ?", (src, cut))
            return f"truncate {src} after {cut}"
        conn.execute(f"DELETE FROM {table}")
        return f"truncate {table}"
    if action == "delete":
        if table == "checkpoints":
            pick = ids[-1]  # the newest; older ones are coarsening's to delete (see docstring)
        conn.execute(f"DELETE FROM {table} WHERE rowid = ?", (pick,))
        return f"delete {table} row {pick}"
    if action == "edit":
        cols = {
            "records": RECORD_COLUMNS,
            "contents": ("prompt_text", "answer_text"),
            "checkpoints": ("created_ns", "payload", "signature", "public_key"),
            "subject_links": ("subject_pseudonym", "salt"),
        }[table]
        col = data.draw(st.sampled_from(cols))
        old = conn.execute(f"SELECT {col} FROM {table} WHERE rowid = ?", (pick,)).fetchone()[0]
        new = _changed(old, data) if old is not None else "now some text"
        conn.execute(f"UPDATE {table} SET {col} = ? WHERE rowid = ?", (new, pick))
        return f"edit {table}.{col} of row {pick}: {old!r} -> {new!r}"
    if action == "reorder":
        other = data.draw(st.sampled_from([i for i in ids if i != pick]))
        if table == "records":  # swap two records' positions (within one chain or across)
            a = conn.execute(POSITION, (pick,)).fetchone()
            b = conn.execute(POSITION, (other,)).fetchone()
            conn.execute(
                "UPDATE records SET source = ?, chain_index = ? WHERE rowid = ?", (*b, pick)
            )
            conn.execute(
                "UPDATE records SET source = ?, chain_index = ? WHERE rowid = ?", (*a, other)
            )
        elif table == "contents":
            rows = conn.execute(
                "SELECT record_id, prompt_text, answer_text FROM contents WHERE rowid IN (?, ?)",
                (pick, other),
            ).fetchall()
            for (rid, _, _), (_, p, a) in zip(rows, reversed(rows), strict=True):
                conn.execute(
                    "UPDATE contents SET prompt_text = ?, answer_text = ? WHERE record_id = ?",
                    (p, a, rid),
                )
        else:
            conn.execute("UPDATE checkpoints SET id = -id WHERE id IN (?, ?)", (pick, other))
            conn.execute(
                "UPDATE checkpoints SET id = CASE WHEN id = ? THEN ? ELSE ? END WHERE id < 0",
                (-pick, other, pick),
            )
        return f"reorder {table} rows {pick} and {other}"
    # insert
    if table == "records":
        names = ", ".join(RECORD_COLUMNS)
        row = conn.execute(f"SELECT {names} FROM records WHERE rowid = ?", (pick,)).fetchone()
        index = data.draw(st.integers(min_value=1, max_value=9))
        values = (row[0], index, "forged", *row[3:])
        conn.execute(f"INSERT INTO records ({names}) VALUES ({', '.join('?' * 15)})", values)
        return f"insert a copy of record row {pick} at chain index {index}"
    if table == "contents":
        bare = [
            r[0]
            for r in conn.execute(
                "SELECT record_id FROM records WHERE record_id NOT IN "
                "(SELECT record_id FROM contents)"
            )
        ]
        rid = data.draw(st.sampled_from([*bare, "no-such-record"]))
        conn.execute("INSERT INTO contents (record_id, prompt_text) VALUES (?, 'planted')", (rid,))
        return f"insert text for {rid}"
    row = conn.execute(f"SELECT {CP_COLUMNS} FROM checkpoints WHERE rowid = ?", (pick,)).fetchone()
    payload = row[1].replace('"chain_index":', '"chain_index":1', 1)
    conn.execute(
        f"INSERT INTO checkpoints ({CP_COLUMNS}) VALUES (?, ?, ?, ?)",
        (row[0], payload, row[2], row[3]),
    )
    return f"insert a forged copy of checkpoint row {pick}"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(action=st.sampled_from(ACTIONS), data=st.data())
def test_every_change_is_detected(action: tuple[str, str], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        _fill(path)
        ledger = SqliteLedger(path)
        try:
            assert verify(ledger, KEY.public_key(), max_checkpoint_age_s=86_400).ok
            conn = sqlite3.connect(path)
            with conn:
                what = _mutate(conn, *action, data)
            conn.close()
            result = verify(ledger, KEY.public_key(), max_checkpoint_age_s=86_400)
            assert not result.ok, f"undetected: {what}"
        finally:
            ledger.close()
