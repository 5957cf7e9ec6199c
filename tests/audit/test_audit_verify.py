"""Verify's coverage: content text, subject links, checkpoint freshness, streaming at scale."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.checkpoint import sign_checkpoint
from audit.coarsen import DAY_NS, coarsen_checkpoints
from audit.ledger import Ledger
from audit.verify import verify
from tests.audit.conftest import MakeRecord

Tamper = Callable[..., None]
KEY = Ed25519PrivateKey.generate()


@pytest.fixture
def tamper(ledger_target: tuple[str | None, str | None]) -> Tamper:
    """SQL run behind the ledger's back, as by someone with database access."""
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


def _sign(ledger: Ledger, created_ns: int | None = None) -> None:
    now = time.time_ns() if created_ns is None else created_ns
    ledger.add_checkpoint(sign_checkpoint(KEY, ledger.heads(), now))


def _kinds(ledger: Ledger) -> list[tuple[str, str]]:
    return [(p.kind, p.record_id) for p in verify(ledger, KEY.public_key()).problems]


def test_text_attached_to_a_record_without_text_fails(
    ledger: Ledger, make_record: MakeRecord, tamper: Tamper
) -> None:
    ledger.append([make_record() for _ in range(3)])
    _sign(ledger)
    tamper("INSERT INTO contents (record_id, prompt_text) VALUES ('req-2', 'planted words')")
    assert _kinds(ledger)[0] == ("inserted", "req-2")


def test_altered_or_deleted_text_fails(
    ledger: Ledger, make_record: MakeRecord, tamper: Tamper
) -> None:
    ledger.append([make_record(prompt_text="the real prompt", answer_text="an answer")])
    ledger.append([make_record(prompt_text="second prompt")])
    _sign(ledger)
    assert verify(ledger, KEY.public_key()).ok
    tamper("UPDATE contents SET answer_text = 'a different answer' WHERE record_id = 'req-1'")
    assert _kinds(ledger)[0] == ("altered", "req-1")
    tamper("UPDATE contents SET answer_text = 'an answer' WHERE record_id = 'req-1'")
    tamper("UPDATE contents SET prompt_text = NULL WHERE record_id = 'req-2'")
    assert _kinds(ledger)[0] == ("altered", "req-2")
    tamper("DELETE FROM contents WHERE record_id = 'req-2'")
    assert _kinds(ledger)[0] == ("deleted", "req-2")


def test_text_of_a_record_not_in_the_ledger_fails(
    ledger: Ledger, make_record: MakeRecord, tamper: Tamper
) -> None:
    ledger.append([make_record()])
    _sign(ledger)
    tamper("INSERT INTO contents (record_id, prompt_text) VALUES ('ghost', 'invented')")
    assert _kinds(ledger) == [("inserted", "ghost")]


def test_reattributed_subject_link_fails(
    ledger: Ledger, make_record: MakeRecord, tamper: Tamper
) -> None:
    ledger.append([make_record(subject_pseudonym="alice"), make_record(subject_pseudonym="bob")])
    _sign(ledger)
    tamper("UPDATE subject_links SET subject_pseudonym = 'bob' WHERE record_id = 'req-1'")
    assert _kinds(ledger)[0] == ("altered", "req-1")


def test_truncated_tail_with_its_checkpoints_deleted_fails(
    ledger: Ledger, make_record: MakeRecord, tamper: Tamper
) -> None:
    ledger.append([make_record() for _ in range(10)])
    _sign(ledger)
    tamper("DELETE FROM records WHERE record_id IN ('req-9', 'req-10')")
    tamper("UPDATE heads SET chain_index = 8")
    tamper("DELETE FROM checkpoints")
    result = verify(ledger, KEY.public_key())
    assert [p.kind for p in result.problems] == ["stale"]
    assert "no checkpoint signed by the pinned key" in result.problems[0].message
    assert verify(ledger).ok  # without a pinned key nothing can prove it: say so in the docs


def test_old_newest_checkpoint_fails_with_its_age(ledger: Ledger, make_record: MakeRecord) -> None:
    ledger.append([make_record() for _ in range(4)])
    _sign(ledger, time.time_ns() - 3 * DAY_NS)
    result = verify(ledger, KEY.public_key())
    assert [p.kind for p in result.problems] == ["stale"]
    assert "72.0 h old" in result.problems[0].message
    assert verify(ledger, KEY.public_key(), max_checkpoint_age_s=4 * 86_400).ok
    assert verify(ledger, KEY.public_key(), max_checkpoint_age_s=None).ok


def test_checkpoint_time_column_and_order_are_checked(
    ledger: Ledger, make_record: MakeRecord, tamper: Tamper
) -> None:
    ledger.append([make_record()])
    _sign(ledger, time.time_ns() - 10)
    ledger.append([make_record()])
    _sign(ledger)
    tamper(
        "UPDATE checkpoints SET created_ns = created_ns + 1 "
        "WHERE id = (SELECT MIN(id) FROM checkpoints)"
    )
    assert _kinds(ledger) == [("checkpoint", "")]
    tamper(
        "UPDATE checkpoints SET created_ns = created_ns - 1 "
        "WHERE id = (SELECT MIN(id) FROM checkpoints)"
    )
    assert verify(ledger, KEY.public_key()).ok
    tamper("UPDATE checkpoints SET id = -id")  # the newer one now comes first
    assert _kinds(ledger) == [("checkpoint", "")]


def test_dense_checkpoints_catch_a_rewrite_at_their_index(
    ledger: Ledger, make_record: MakeRecord, tamper: Tamper
) -> None:
    for _ in range(20):
        ledger.append([make_record(), make_record(source="gw-1")])
        _sign(ledger)
    result = verify(ledger, KEY.public_key())
    assert result.ok and result.checkpoints == 20 and result.records == 40
    # Rewrite the head hash of gw-1 at index 7 as a forger who recomputed the chain would.
    tamper("UPDATE records SET hash = ? WHERE source = 'gw-1' AND chain_index = 7", ["0" * 64])
    problems = verify(ledger, KEY.public_key()).problems
    assert problems[0].kind == "altered" and problems[0].source == "gw-1"


def test_coarsening_keeps_verify_passing_and_truncation_detected(
    ledger: Ledger, make_record: MakeRecord, tamper: Tamper
) -> None:
    now = time.time_ns()
    for day in range(40, -1, -1):  # three checkpoints a day for 40 days
        for hour in (1, 2, 3):
            ledger.append([make_record()])
            _sign(ledger, now - day * DAY_NS - (4 - hour) * 3_600_000_000_000)
    before = len(ledger.checkpoints())
    removed = coarsen_checkpoints(ledger, now, keep_all_days=30)
    kept = ledger.checkpoints()
    assert removed > 0 and len(kept) == before - removed
    assert len(kept) >= 31 * 3  # all of the last 30 days
    old_days = {cp.created_ns // DAY_NS for cp in kept if cp.created_ns < now - 30 * DAY_NS}
    assert len([cp for cp in kept if cp.created_ns < now - 30 * DAY_NS]) == len(old_days)
    assert verify(ledger, KEY.public_key()).ok
    assert coarsen_checkpoints(ledger, now, keep_all_days=30) == 0  # idempotent
    tamper("DELETE FROM records WHERE chain_index > 100")
    assert _kinds(ledger)[0][0] == "truncated"


def test_coarsening_never_drops_the_newest_checkpoint(
    ledger: Ledger, make_record: MakeRecord
) -> None:
    old = time.time_ns() - 100 * DAY_NS
    for i in range(5):
        ledger.append([make_record()])
        _sign(ledger, old + i)
    coarsen_checkpoints(ledger, time.time_ns())
    kept = ledger.checkpoints()
    assert len(kept) == 1 and kept[0].heads()["gw-0"].chain_index == 5


def test_streaming_scan_on_a_long_chain(ledger: Ledger, make_record: MakeRecord) -> None:
    # Longer than the PostgreSQL cursor's fetch size and the break window, several sources.
    for _ in range(10):
        ledger.append([make_record(source=f"gw-{n % 3}") for n in range(300)])
    _sign(ledger)
    result = verify(ledger, KEY.public_key())
    assert result.ok, result.problems
    assert (result.records, result.sources) == (3000, 3)


def test_query_by_subject_uses_the_subject_index(
    sqlite_ledger: Ledger, make_record: MakeRecord, tmp_path: Path
) -> None:
    from audit.ledger import QueryFilter

    sqlite_ledger.append([make_record(subject_pseudonym=f"p{n % 4}") for n in range(40)])
    rows = sqlite_ledger.query(QueryFilter(subject_pseudonym="p1"))
    assert len(rows) == 10 and {r["subject"] for r in rows} == {"p1"}
    assert sqlite_ledger.query(QueryFilter(subject_pseudonym="nobody", since_ns=0)) == []
    assert sum(u.requests for u in sqlite_ledger.usage(QueryFilter(subject_pseudonym="p2"))) == 10
    conn = sqlite3.connect(tmp_path / "ledger.db")
    conn.execute("ANALYZE")
    sql, params = sqlite_ledger._where(QueryFilter(subject_pseudonym="x", since_ns=0))  # type: ignore[attr-defined]
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT r.record_id FROM records r LEFT JOIN subject_links l "
        f"ON l.record_id = r.record_id{sql} ORDER BY +r.time_ns, r.record_id",
        params,
    ).fetchall()
    conn.close()
    steps = " | ".join(str(row[-1]) for row in plan)
    assert "subject_links_p" in steps and "records_time" not in steps, steps


def test_two_checkpoints_disagreeing_on_one_head_fail(
    ledger: Ledger, make_record: MakeRecord
) -> None:
    from audit.chain import ChainHead

    ledger.append([make_record() for _ in range(3)])
    _sign(ledger)
    ledger.add_checkpoint(sign_checkpoint(KEY, {"gw-0": ChainHead(3, "ab" * 32)}, time.time_ns()))
    problems = verify(ledger, KEY.public_key()).problems
    assert [(p.kind, p.record_id) for p in problems] == [("checkpoint", "req-3")]
