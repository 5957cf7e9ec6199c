"""`llm-audit export`: one person's records across sources, as JSON and a table; then erasure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit.cli import main
from audit.pseudonym import Pseudonymizer, load_or_create_key
from audit.sqlite_ledger import SqliteLedger
from tests.audit.conftest import MakeRecord


def test_export_then_erase(
    tmp_path: Path, make_record: MakeRecord, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "pseudonym.key"
    alice = Pseudonymizer(load_or_create_key(key_file))("alice@region.dk")
    db = tmp_path / "ledger.db"
    ledger = SqliteLedger(db)
    ledger.append(
        [
            make_record(subject_pseudonym=alice, source="gw-0", prompt_text="her question"),
            make_record(subject_pseudonym="someone-else", source="gw-0"),
            make_record(subject_pseudonym=alice, source="gw-1", department="oncology"),
        ]
    )
    ledger.close()
    who = ["--subject", "alice@region.dk", "--pseudonym-key", str(key_file)]
    out = tmp_path / "alice"
    assert main(["export", "--db", str(db), *who, "--out", str(out)]) == 0
    assert "exported 2 record(s)" in capsys.readouterr().out
    records = json.loads((out / "records.json").read_text())
    assert [(r["record_id"], r["source"]) for r in records] == [
        ("req-1", "gw-0"),
        ("req-3", "gw-1"),
    ]
    assert records[0]["prompt_text"] == "her question" and records[1]["prompt_text"] is None
    assert "subject_commitment" not in records[0] and "someone-else" not in json.dumps(records)
    table = (out / "records.txt").read_text().splitlines()
    assert table[0].startswith("2 audit record(s) of this person")
    assert table[2].split()[:2] == ["time", "source"]
    assert "2026-01-01 00:00:01  gw-0    oncology" in table[3]
    assert table[4].split()[-1] == "no" and table[3].split()[-1] == "yes"
    assert main(["erase", "--db", str(db), *who]) == 0
    again = tmp_path / "again"
    assert main(["export", "--db", str(db), *who, "--out", str(again)]) == 0
    assert json.loads((again / "records.json").read_text()) == []
    assert main(["verify", "--db", str(db)]) == 0


def test_parallel_verify_on_postgres(
    postgres_dsn: str, make_record: MakeRecord, capsys: pytest.CaptureFixture[str]
) -> None:
    from audit.postgres_ledger import PostgresLedger

    ledger = PostgresLedger(postgres_dsn)
    ledger.append([make_record(source=f"gw-{n % 3}") for n in range(30)])
    ledger.close()
    assert main(["verify", "--postgres", postgres_dsn, "--jobs", "2"]) == 0
    assert "OK: 30 records in 3 chain(s)" in capsys.readouterr().out
