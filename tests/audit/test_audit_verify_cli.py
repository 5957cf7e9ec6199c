"""`llm-audit verify` options (incremental, parallel, progress, freshness) and query --subject."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from audit.checkpoint import PUBLIC_KEY_FILE, load_or_create_signing_key, sign_checkpoint
from audit.cli import main
from audit.pseudonym import Pseudonymizer, load_or_create_key
from audit.sqlite_ledger import SqliteLedger
from tests.audit.conftest import MakeRecord


@pytest.fixture
def signed(tmp_path: Path, make_record: MakeRecord) -> tuple[Path, Path, MakeRecord]:
    """A ledger of two chains with a checkpoint, its keys dir, and the record factory."""
    db = tmp_path / "ledger.db"
    ledger = SqliteLedger(db)
    ledger.append([make_record(source=f"gw-{n % 2}") for n in range(20)])
    ledger.close()
    assert main(["checkpoint", "--db", str(db), "--keys-dir", str(tmp_path / "keys")]) == 0
    return db, tmp_path / "keys", make_record


def _verify(db: Path, keys: Path, *extra: str) -> list[str]:
    return ["verify", "--db", str(db), "--public-key", str(keys / PUBLIC_KEY_FILE), *extra]


def _append_and_sign(db: Path, keys: Path, make_record: MakeRecord, n: int) -> None:
    ledger = SqliteLedger(db)
    ledger.append([make_record(source=f"gw-{i % 2}") for i in range(n)])
    key = load_or_create_signing_key(keys)
    ledger.add_checkpoint(sign_checkpoint(key, ledger.heads(), time.time_ns()))
    ledger.close()


def test_incremental_run_checks_only_what_follows_and_says_so(
    signed: tuple[Path, Path, MakeRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    db, keys, make_record = signed
    state = db.parent / "verify.state"
    assert main(_verify(db, keys, "--state", str(state))) == 0
    first = json.loads(state.read_text())["created_ns"]
    _append_and_sign(db, keys, make_record, 6)
    capsys.readouterr()
    assert main(_verify(db, keys, "--state", str(state), "--from-checkpoint")) == 0
    out = capsys.readouterr().out
    assert "OK: 6 records in 2 chain(s)" in out
    assert f"checked only records after checkpoint {first}" in out
    assert "earlier records were not read" in out
    assert json.loads(state.read_text())["created_ns"] > first  # moved to the newest
    _append_and_sign(db, keys, make_record, 4)
    # Tampering before the starting checkpoint is not seen; after it, it is.
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE records SET model = 'x' WHERE record_id = 'req-3'")
        conn.execute("UPDATE records SET model = 'x' WHERE record_id = 'req-29'")
    conn.close()
    capsys.readouterr()
    assert main(_verify(db, keys, "--state", str(state), "--from-checkpoint")) == 1
    out = capsys.readouterr().out
    assert "FAIL [altered] record req-29" in out and "req-3 " not in out
    assert main(_verify(db, keys)) == 1
    assert "FAIL [altered] record req-3 " in capsys.readouterr().out


def test_incremental_run_catches_a_rewritten_start(
    signed: tuple[Path, Path, MakeRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    db, keys, make_record = signed
    state = db.parent / "verify.state"
    assert main(_verify(db, keys, "--state", str(state))) == 0
    _append_and_sign(db, keys, make_record, 2)
    with sqlite3.connect(db) as conn:  # truncate gw-1 back past the verified head
        conn.execute("DELETE FROM records WHERE source = 'gw-1' AND chain_index >= 10")
        conn.execute("DELETE FROM checkpoints")
    conn.close()
    capsys.readouterr()
    assert main(_verify(db, keys, "--state", str(state), "--from-checkpoint")) == 1
    assert "not the head verified by the last run" in capsys.readouterr().out


def test_state_needs_a_pinned_key(signed: tuple[Path, Path, MakeRecord]) -> None:
    db, _, _ = signed
    args = ["verify", "--db", str(db), "--state", str(db.parent / "s"), "--from-checkpoint"]
    assert main(args) == 2


def test_parallel_jobs_give_the_same_answer(
    signed: tuple[Path, Path, MakeRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    db, keys, _ = signed
    assert main(_verify(db, keys, "--jobs", "2")) == 0
    assert "OK: 20 records in 2 chain(s), 1 checkpoint(s)" in capsys.readouterr().out
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM records WHERE record_id = 'req-8'")
    conn.close()
    assert main(_verify(db, keys, "--jobs", "2")) == 1
    assert "FAIL [deleted]" in capsys.readouterr().out


def test_progress_goes_to_stderr_only_when_asked(
    signed: tuple[Path, Path, MakeRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    db, keys, _ = signed
    main(_verify(db, keys))
    assert capsys.readouterr().err == ""  # not a TTY, not asked
    main(_verify(db, keys, "--progress"))
    captured = capsys.readouterr()
    assert "verify: 20/20 records" in captured.err and "records/s" in captured.err
    assert "verify:" not in captured.out


def test_max_checkpoint_age_option(
    signed: tuple[Path, Path, MakeRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    db, keys, _ = signed
    time.sleep(0.05)
    assert main(_verify(db, keys, "--max-checkpoint-age", "0.01")) == 1
    assert "FAIL [stale]" in capsys.readouterr().out
    assert main(_verify(db, keys, "--max-checkpoint-age", "none")) == 0
    assert main(_verify(db, keys, "--max-checkpoint-age", "soon")) == 2


def test_query_by_subject_through_the_pseudonym_key(
    tmp_path: Path, make_record: MakeRecord, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "pseudonym.key"
    alice = Pseudonymizer(load_or_create_key(key_file))("alice@region.dk")
    db = tmp_path / "ledger.db"
    ledger = SqliteLedger(db)
    ledger.append([make_record(subject_pseudonym=alice if n % 3 == 0 else "x") for n in range(9)])
    ledger.close()
    args = ["query", "--db", str(db), "--format", "json", "--pseudonym-key", str(key_file)]
    assert main([*args, "--subject", "alice@region.dk"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3 and {r["subject"] for r in rows} == {alice}
    assert main([*args, "--subject", "bob@region.dk"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["query", "--db", str(db), "--subject", "alice@region.dk"]) == 2
    assert "--pseudonym-key" in capsys.readouterr().err


def test_coarsen_command(
    signed: tuple[Path, Path, MakeRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _, _ = signed
    assert main(["coarsen-checkpoints", "--db", str(db)]) == 0
    assert "removed 0 checkpoint(s) older than 30 days" in capsys.readouterr().out


def test_witness_file_errors_are_named(
    signed: tuple[Path, Path, MakeRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    db, keys, _ = signed
    bad = db.parent / "witness.jsonl"
    bad.write_text('{"created_ns": 1}\n')
    assert main(_verify(db, keys, "--witness", str(bad))) == 2
    assert f"{bad}:1: not a checkpoint line" in capsys.readouterr().err
    assert main(_verify(db, keys, "--witness", str(db.parent / "none.jsonl"))) == 2
    assert "no such file" in capsys.readouterr().err
