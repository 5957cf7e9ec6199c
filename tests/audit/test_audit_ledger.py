"""The ledger on SQLite and a real PostgreSQL: idempotency, tamper detection, erasure."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.chain import ChainHead, link_hash, make_link
from audit.checkpoint import sign_checkpoint
from audit.ledger import Ledger, QueryFilter
from audit.verify import Problem, verify
from tests.audit.conftest import MakeRecord

Tamper = Callable[..., None]
KEY = Ed25519PrivateKey.generate()


@pytest.fixture
def tamper(ledger_target: tuple[str | None, str | None]) -> Tamper:
    """Run SQL on the ledger behind its back, as an attacker with database access would."""
    db_path, dsn = ledger_target

    def run(sql: str, params: Sequence[Any] = ()) -> None:
        if db_path is not None:
            conn = sqlite3.connect(db_path)
            with conn:
                conn.execute(sql, tuple(params))
            conn.close()
        else:
            import psycopg

            with psycopg.connect(dsn or "", autocommit=True) as pg:
                pg.execute(sql.replace("?", "%s").encode(), tuple(params))

    return run


def _fill(ledger: Ledger, make_record: MakeRecord, n: int = 10) -> None:
    ledger.append([make_record() for _ in range(n)])


def _checkpoint(ledger: Ledger) -> None:
    ledger.add_checkpoint(sign_checkpoint(KEY, ledger.heads(), time.time_ns()))


def _only_problem(ledger: Ledger) -> Problem:
    result = verify(ledger, KEY.public_key())
    assert not result.ok
    return result.problems[0]


def test_clean_chains_verify(ledger: Ledger, make_record: MakeRecord) -> None:
    _fill(ledger, make_record, 6)
    ledger.append([make_record(source="gw-1") for _ in range(4)])
    _checkpoint(ledger)
    result = verify(ledger, KEY.public_key())
    assert result.ok, result.problems
    assert (result.records, result.sources, result.checkpoints) == (10, 2, 1)
    assert ledger.heads()["gw-1"].chain_index == 4


def test_append_is_idempotent_by_record_id(ledger: Ledger, make_record: MakeRecord) -> None:
    records = [make_record() for _ in range(5)]
    assert ledger.append(records).stored == 5
    again = ledger.append([*records[2:], make_record()])
    assert (again.stored, again.duplicates) == (1, 3)
    assert ledger.count() == 6
    assert verify(ledger).ok


def test_altered_column_is_named(ledger: Ledger, make_record: MakeRecord, tamper: Tamper) -> None:
    _fill(ledger, make_record)
    tamper("UPDATE records SET department = 'finance' WHERE record_id = ?", ["req-5"])
    problem = _only_problem(ledger)
    assert (problem.kind, problem.record_id, problem.sequence) == ("altered", "req-5", 5)
    assert "department" in problem.message


def test_altered_hashed_body_is_named(
    ledger: Ledger, make_record: MakeRecord, tamper: Tamper
) -> None:
    _fill(ledger, make_record)
    tamper("UPDATE records SET body = replace(body, 'v7', 'v8') WHERE record_id = ?", ["req-7"])
    problem = _only_problem(ledger)
    assert (problem.kind, problem.record_id) == ("altered", "req-7")


def test_deleted_record_is_named(ledger: Ledger, make_record: MakeRecord, tamper: Tamper) -> None:
    _fill(ledger, make_record)
    tamper("DELETE FROM records WHERE record_id = ?", ["req-4"])
    problem = _only_problem(ledger)
    assert (problem.kind, problem.record_id) == ("deleted", "req-5")
    assert "chain index 4..4" in problem.message


def test_reordered_records_are_named(
    ledger: Ledger, make_record: MakeRecord, tamper: Tamper
) -> None:
    _fill(ledger, make_record)
    tamper(
        "UPDATE records SET chain_index = CASE record_id WHEN 'req-3' THEN 4 ELSE 3 END "
        "WHERE record_id IN ('req-3', 'req-4')"
    )
    problem = _only_problem(ledger)
    assert (problem.kind, problem.record_id) == ("reordered", "req-4")
    assert "req-3" in problem.message


def test_inserted_record_is_named(ledger: Ledger, make_record: MakeRecord, tamper: Tamper) -> None:
    _fill(ledger, make_record)
    # A careful forger: a well-formed record correctly linked to req-3, slipped in after it.
    rows = list(ledger.links("gw-0"))
    forged = make_record(record_id="forged-1", sequence=4)
    link = make_link(forged, ChainHead(rows[2].chain_index, rows[2].hash), "00" * 32)
    tamper(
        "INSERT INTO records (source, chain_index, record_id, sequence, time_ns, department, "
        "model, purpose, outcome, status_code, prompt_tokens, completion_tokens, body, "
        "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            "gw-0", 4, "forged-1", 4, forged.time_ns, forged.department, forged.model,
            forged.purpose, "ok", "OK", forged.prompt_tokens, forged.completion_tokens,
            link.body, link.prev_hash, link.hash,
        ],
    )  # fmt: skip
    problem = _only_problem(ledger)
    assert (problem.kind, problem.record_id) == ("inserted", "forged-1")


def test_truncated_tail_is_caught_by_checkpoint(
    ledger: Ledger, make_record: MakeRecord, tamper: Tamper
) -> None:
    _fill(ledger, make_record)
    _checkpoint(ledger)
    tamper("DELETE FROM records WHERE record_id IN ('req-9', 'req-10')")
    tamper("UPDATE heads SET chain_index = 8")  # a thorough attacker fixes the head too
    problem = _only_problem(ledger)
    assert (problem.kind, problem.record_id) == ("truncated", "req-8")
    assert "chain index 10" in problem.message


def test_rewritten_chain_is_caught_by_checkpoint(
    ledger: Ledger, make_record: MakeRecord, tamper: Tamper
) -> None:
    _fill(ledger, make_record, 4)
    _checkpoint(ledger)
    # Rewrite req-2's body and recompute every later hash: the chain is consistent again.
    rows = list(ledger.links("gw-0"))
    head = ChainHead(rows[0].chain_index, rows[0].hash)
    for row in rows[1:]:
        body = row.body
        if row.record_id == "req-2":
            body = body.replace("diagnosis-support", "research")
        new_hash = link_hash(head.hash, body)
        tamper(
            "UPDATE records SET body = ?, prev_hash = ?, hash = ?, purpose = ? WHERE record_id = ?",
            [body, head.hash, new_hash, json.loads(body)["purpose"], row.record_id],
        )
        head = ChainHead(row.chain_index, new_hash)
    problem = _only_problem(ledger)
    assert (problem.kind, problem.record_id) == ("checkpoint", "req-4")


def test_checkpoint_signed_by_another_key_fails(ledger: Ledger, make_record: MakeRecord) -> None:
    _fill(ledger, make_record, 2)
    other = Ed25519PrivateKey.generate()
    ledger.add_checkpoint(sign_checkpoint(other, ledger.heads(), time.time_ns()))
    assert _only_problem(ledger).kind == "checkpoint"
    assert verify(ledger, other.public_key()).ok


def test_erasure_unlinks_subject_and_chain_still_verifies(
    ledger: Ledger, make_record: MakeRecord, ledger_target: tuple[str | None, str | None]
) -> None:
    ledger.append([make_record(subject_pseudonym="alice-pseud", prompt_text="secret-marker-1")])
    ledger.append([make_record(subject_pseudonym="bob-pseud", prompt_text="kept-marker-2")])
    _checkpoint(ledger)
    assert ledger.erase_subject("alice-pseud") == 1
    assert verify(ledger, KEY.public_key()).ok
    subjects = {r["record_id"]: r["subject"] for r in ledger.query(QueryFilter())}
    assert subjects == {"req-1": "(erased)", "req-2": "bob-pseud"}
    assert ledger.subject_of("req-1") is None
    db_path = ledger_target[0]
    if db_path is not None:  # nothing of the erased subject left in the files, WAL included
        raw = b"".join(p.read_bytes() for p in Path(db_path).parent.glob("ledger.db*"))
        assert b"alice-pseud" not in raw
        assert b"secret-marker-1" not in raw
        assert b"bob-pseud" in raw


def test_usage_groups_requests_and_tokens(ledger: Ledger, make_record: MakeRecord) -> None:
    ledger.append(
        [
            make_record(department="a", prompt_tokens=1, completion_tokens=2),
            make_record(department="a", prompt_tokens=3, completion_tokens=4),
            make_record(department="b", prompt_tokens=5, completion_tokens=6),
        ]
    )
    rows = {r.department: r for r in ledger.usage(QueryFilter())}
    assert (rows["a"].requests, rows["a"].prompt_tokens, rows["a"].completion_tokens) == (2, 4, 6)
    assert rows["b"].requests == 1
    only_b = ledger.query(QueryFilter(department="b"))
    assert [r["department"] for r in only_b] == ["b"]
