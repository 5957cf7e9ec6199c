"""`llm-audit retain` and `hold` on real ledgers: pruning, text expiry, holds, and verify after."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.checkpoint import sign_retention
from audit.cli import main
from audit.ledger import Ledger, QueryFilter
from audit.pseudonym import Pseudonymizer, load_or_create_key
from audit.record import AuditRecord
from audit.settings import AuditStoreSettings
from audit.sqlite_ledger import SqliteLedger
from audit.store import open_ledger, serve_store
from tests.audit.conftest import MakeRecord
from tests.helpers import EXAMPLE_POLICY
from tests.support.polling import wait_until

Y2023 = 1_672_531_200_000_000_000  # 2023-01-01T00:00:00Z
DAY = 86_400 * 1_000_000_000
AS_OF = "2025-06-01T00:00:00Z"  # administration (730 days) from early 2023 has expired by then
POLICY = ["--policy-dir", str(EXAMPLE_POLICY)]


def _fill(ledger: Ledger, make_record: MakeRecord, alice: str = "alice") -> None:
    """gw-0: five expired administration records, a treatment record whose text expired, an
    expired record that must wait behind it, and a recent treatment record with text."""
    rec = []
    for n in range(5):
        who = alice if n == 3 else "bob"
        rec.append(_admin(make_record, Y2023 + n * DAY, who))
    rec.append(_treat(make_record, Y2023 + 10 * DAY, alice, text="old question"))
    rec.append(_admin(make_record, Y2023 + 11 * DAY, "bob"))
    rec.append(_treat(make_record, Y2023 + 880 * DAY, alice, text="recent question"))
    rec.append(_admin(make_record, Y2023 + 12 * DAY, alice, source="gw-1"))
    rec.append(_treat(make_record, Y2023 + 13 * DAY, alice, source="gw-1"))
    ledger.append(rec)


def _admin(make_record: MakeRecord, t: int, who: str, source: str = "gw-0") -> AuditRecord:
    return make_record(
        time_ns=t, purpose="administration", department="administration",
        subject_pseudonym=who, source=source,
    )  # fmt: skip


def _treat(
    make_record: MakeRecord, t: int, who: str, source: str = "gw-0", text: str | None = None
) -> AuditRecord:
    return make_record(
        time_ns=t, purpose="treatment", department="emergency", subject_pseudonym=who,
        source=source, prompt_text=text, answer_text=None if text is None else "an answer",
    )  # fmt: skip


def _target(args: tuple[str | None, str | None]) -> list[str]:
    db, dsn = args
    return ["--db", db] if db else ["--postgres", str(dsn)]


def _verify(target: list[str], keys: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["verify", *target, "--public-key", str(keys / "checkpoint_ed25519.pub.pem")])
    return rc, capsys.readouterr().out


def _retain(target: list[str], keys: Path, *extra: str) -> int:
    return main(["retain", *target, *POLICY, "--keys-dir", str(keys), "--as-of", AS_OF, *extra])


def test_retain_prunes_the_expired_prefix_and_verify_reports_it(
    ledger_target: tuple[str | None, str | None],
    tmp_path: Path,
    make_record: MakeRecord,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ledger = open_ledger(*ledger_target)
    _fill(ledger, make_record)
    ledger.close()
    target, keys = _target(ledger_target), tmp_path / "keys"
    assert main(["checkpoint", *target, "--keys-dir", str(keys)]) == 0  # signs heads 8 and 2
    capsys.readouterr()
    assert _retain(target, keys) == 0
    out = capsys.readouterr().out
    assert "source gw-0: pruned 5 record(s) (chain index 1..5); stopped at chain index 6" in out
    assert "text of 1 record(s) expired (chain index 6..6)" in out
    assert "source gw-1: pruned 1 record(s) (chain index 1..1)" in out
    ledger = open_ledger(*ledger_target)
    try:
        left = [(r["source"], r["record_id"]) for r in ledger.query(_all())]
        texts = [r[18] for r in ledger.scan("gw-0")]
    finally:
        ledger.close()
    assert left == [("gw-0", "req-6"), ("gw-0", "req-7"), ("gw-1", "req-10"), ("gw-0", "req-8")]
    assert texts == [None, None, "recent question"]  # old text gone, the recent text kept
    rc, out = _verify(target, keys, capsys)
    assert rc == 0, out
    assert "retention: source gw-0: 5 records pruned up to chain index 5 on " in out
    assert "under register " in out and "text of 1 records expired (chain index 6..6)" in out
    # A second run has nothing more to prune: index 6 is still young; 7 waits behind it.
    assert _retain(target, keys) == 0
    assert "source gw-0: pruned 0 record(s); stopped at chain index 6" in capsys.readouterr().out
    assert _verify(target, keys, capsys)[0] == 0


def _all() -> QueryFilter:
    return QueryFilter()


@pytest.fixture
def pruned(
    tmp_path: Path, make_record: MakeRecord, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, Path]:
    db, keys = tmp_path / "ledger.db", tmp_path / "keys"
    ledger = SqliteLedger(db)
    _fill(ledger, make_record)
    ledger.close()
    assert main(["checkpoint", "--db", str(db), "--keys-dir", str(keys)]) == 0
    assert _retain(["--db", str(db)], keys) == 0
    assert _verify(["--db", str(db)], keys, capsys)[0] == 0
    return db, keys


def _sql(db: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(db)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def test_editing_a_remaining_record_is_detected(
    pruned: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, keys = pruned
    _sql(db, "UPDATE records SET body = replace(body, 'emergency', 'radiology') "
         "WHERE record_id = 'req-6'")  # fmt: skip
    rc, out = _verify(["--db", str(db)], keys, capsys)
    assert rc == 1 and "FAIL [altered]" in out and "req-6" in out


def test_deleting_the_pruning_checkpoint_is_detected(
    pruned: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, keys = pruned
    _sql(db, 'DELETE FROM retention_checkpoints WHERE payload LIKE \'%"kind":"prune"%\'')
    rc, out = _verify(["--db", str(db)], keys, capsys)
    assert rc == 1
    assert (
        "FAIL [deleted] the record(s) at chain index 1..5 were deleted before record req-6" in out
    )


def test_pruning_a_young_record_by_hand_is_detected(
    pruned: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, keys = pruned
    _sql(db, "DELETE FROM records WHERE record_id = 'req-6'")
    rc, out = _verify(["--db", str(db)], keys, capsys)
    assert rc == 1 and "FAIL [deleted] the record(s) at chain index 6..6 were deleted" in out


def test_a_pruning_checkpoint_forged_without_the_key_is_detected(
    pruned: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, keys = pruned
    conn = sqlite3.connect(db)
    (payload,) = conn.execute(
        'SELECT payload FROM retention_checkpoints WHERE payload LIKE \'%"kind":"prune"%\' '
        "AND payload LIKE '%gw-0%'"
    ).fetchone()
    (h6,) = conn.execute("SELECT hash FROM records WHERE record_id = 'req-6'").fetchone()
    conn.execute("DELETE FROM records WHERE record_id = 'req-6'")
    conn.commit()
    conn.close()
    claim = json.loads(payload)
    claim.update(first_index=6, cut_index=6, cut_hash=h6, removed=1)
    del claim["created_ns"]
    forged = sign_retention(Ed25519PrivateKey.generate(), claim, claim["as_of_ns"] + DAY)
    ledger = SqliteLedger(db)
    ledger._add_retention_checkpoint(forged)
    ledger.close()
    rc, out = _verify(["--db", str(db)], keys, capsys)
    assert rc == 1 and "signed by another key" in out
    assert "FAIL [deleted] the record(s) at chain index 6..6 were deleted" in out
    # Re-using the store's signature over an edited statement fails too.
    _sql(
        db,
        "UPDATE retention_checkpoints SET payload = replace(payload, '\"removed\":5', "
        "'\"removed\":6') WHERE payload LIKE '%\"removed\":5%'",
    )
    assert "bad signature" in _verify(["--db", str(db)], keys, capsys)[1]


def test_text_deleted_by_hand_is_not_covered_by_text_expiry(
    pruned: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, keys = pruned
    _sql(db, "DELETE FROM contents WHERE record_id = 'req-8'")  # recent: its text is kept
    rc, out = _verify(["--db", str(db)], keys, capsys)
    assert rc == 1 and "FAIL [deleted]" in out and "req-8" in out and "text was deleted" in out


def test_legal_holds_stop_the_cut_and_keep_text(
    tmp_path: Path, make_record: MakeRecord, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "pseudonym.key"
    alice = Pseudonymizer(load_or_create_key(key_file))("alice@region.dk")
    db, keys = tmp_path / "ledger.db", tmp_path / "keys"
    ledger = SqliteLedger(db)
    _fill(ledger, make_record, alice)
    ledger.close()
    target = ["--db", str(db)]
    who = ["--subject", "alice@region.dk", "--pseudonym-key", str(key_file)]
    assert main(["hold", "add", *target, *who, "--reason", "case 2025-17"]) == 0
    assert main(["hold", "add", *target, "--department", "emergency"]) == 2  # no reason
    assert main(["checkpoint", *target, "--keys-dir", str(keys)]) == 0
    capsys.readouterr()
    assert _retain(target, keys) == 0
    out = capsys.readouterr().out
    # gw-0: alice's record at index 4 stops the cut; her treatment text is kept too.
    assert "source gw-0: pruned 3 record(s) (chain index 1..3); stopped at chain index 4: " in out
    assert "legal hold" in out and "text of" not in out
    assert "source gw-1: pruned 0 record(s); stopped at chain index 1: legal hold" in out
    assert _verify(target, keys, capsys)[0] == 0
    assert main(["hold", "remove", *target, *who, "--reason", "case closed"]) == 0
    capsys.readouterr()
    assert main(["hold", "list", *target, "--all"]) == 0
    listing = capsys.readouterr().out
    assert "case 2025-17" in listing and "lifted" in listing and "case closed" in listing
    assert _retain(target, keys) == 0
    assert "source gw-0: pruned 2 record(s) (chain index 4..5)" in capsys.readouterr().out
    rc, out = _verify(target, keys, capsys)
    assert rc == 0, out
    assert "3 records pruned up to chain index 3" in out
    assert "2 records pruned up to chain index 5" in out


def test_a_department_hold_keeps_its_records(
    tmp_path: Path, make_record: MakeRecord, capsys: pytest.CaptureFixture[str]
) -> None:
    db, keys = tmp_path / "ledger.db", tmp_path / "keys"
    ledger = SqliteLedger(db)
    _fill(ledger, make_record)
    ledger.close()
    target = ["--db", str(db)]
    hold = ["--department", "administration", "--reason", "labour court"]
    assert main(["hold", "add", *target, *hold]) == 0
    assert _retain(target, keys) == 0
    assert "pruned 0 record(s); stopped at chain index 1: legal hold" in capsys.readouterr().out
    assert main(["query", *target, "--format", "csv"]) == 0
    assert capsys.readouterr().out.count("\n") == 1 + 10  # header and every record


def test_export_after_retention_returns_exactly_the_remaining_records(
    tmp_path: Path, make_record: MakeRecord
) -> None:
    key_file = tmp_path / "pseudonym.key"
    alice = Pseudonymizer(load_or_create_key(key_file))("alice@region.dk")
    db, keys = tmp_path / "ledger.db", tmp_path / "keys"
    ledger = SqliteLedger(db)
    _fill(ledger, make_record, alice)
    ledger.close()
    assert _retain(["--db", str(db)], keys) == 0
    who = ["--subject", "alice@region.dk", "--pseudonym-key", str(key_file)]
    out = tmp_path / "alice"
    assert main(["export", "--db", str(db), *who, "--out", str(out)]) == 0
    records = json.loads((out / "records.json").read_text())
    got = [(r["record_id"], r["source"], r["prompt_text"]) for r in records]
    # req-4 (gw-0) and req-9 (gw-1) were pruned; req-6's text expired; req-8 keeps its text.
    assert got == [
        ("req-6", "gw-0", None),
        ("req-10", "gw-1", None),
        ("req-8", "gw-0", "recent question"),
    ]


def test_retention_refuses_what_it_must_not_do(
    tmp_path: Path, make_record: MakeRecord, capsys: pytest.CaptureFixture[str]
) -> None:
    db, keys = tmp_path / "ledger.db", tmp_path / "keys"
    ledger = SqliteLedger(db)
    ledger.append([make_record(time_ns=Y2023, purpose="", source="gw-0")])
    ledger.close()
    target = ["--db", str(db)]
    future = ["--as-of", "2099-01-01"]
    base = ["retain", *target, *POLICY, "--keys-dir", str(keys)]
    assert main([*base, *future]) == 2
    assert "--as-of lies in the future" in capsys.readouterr().err
    assert main([*base, *future, "--dry-run"]) == 0
    assert "has no retention" in capsys.readouterr().out  # an empty purpose is kept
    assert main([*base, "--default-retention-days", "30"]) == 2
    assert "below the register's floor of 183 days" in capsys.readouterr().err
    assert main([*base, "--default-retention-days", "400", "--dry-run"]) == 0
    assert "would prune 1 record(s)" in capsys.readouterr().out
    assert SqliteLedger(db).count() == 1  # dry runs changed nothing
    assert main([*base, "--default-retention-days", "400"]) == 0
    assert main(["checkpoint", *target, "--keys-dir", str(keys)]) == 0
    assert _verify(target, keys, capsys)[0] == 0


def _count(db: Path) -> int:
    """Counted on a connection of its own: the store's is busy in its thread."""
    conn = sqlite3.connect(db)
    try:
        n: int = conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        return n
    finally:
        conn.close()


async def test_the_store_runs_retention_periodically(
    tmp_path: Path, make_record: MakeRecord
) -> None:
    db = tmp_path / "store.db"
    ledger = SqliteLedger(db)
    _fill(ledger, make_record)
    ledger.close()
    settings = AuditStoreSettings(
        keys_dir=str(tmp_path / "keys"),
        listen="127.0.0.1:0",
        db_path=str(db),
        checkpoint_interval_s=3600,
        retain_policy_dir=str(EXAMPLE_POLICY),
        retain_interval_s=3600,
    )
    handle = await serve_store(settings)
    try:
        await wait_until(lambda: _count(db) < 10, within=10.0, what="the first retention run")
    finally:
        await handle.stop(grace=0)
    copy = tmp_path / "copy.db"
    shutil.copy(db, copy)
    ledger = SqliteLedger(copy)
    try:
        # As of now (after 2025), every administration record has expired: the cut stops at
        # the first treatment record (ten years), and no text was left beyond its 30 days.
        assert [r["record_id"] for r in ledger.query(_all())] == [
            "req-6",
            "req-7",
            "req-10",
            "req-8",
        ]
        assert [r[18] for r in ledger.scan("gw-0")] == [None, None, None]
    finally:
        ledger.close()
