"""`llm-audit` commands on a real SQLite ledger: verify, query, report, erase, checkpoints."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest

from audit.cli import main
from audit.pseudonym import Pseudonymizer, load_or_create_key
from audit.settings import AuditSpoolSettings, AuditStoreSettings
from audit.sqlite_ledger import SqliteLedger
from common.settings import read
from tests.audit.conftest import MakeRecord


@pytest.fixture
def ledger_file(tmp_path: Path, make_record: MakeRecord) -> Path:
    path = tmp_path / "ledger.db"
    ledger = SqliteLedger(path)
    key = load_or_create_key(tmp_path / "pseudonym.key")
    alice = Pseudonymizer(key)("alice@region.dk")
    ledger.append(
        [
            make_record(department="radiology", model="m1", subject_pseudonym=alice),
            make_record(department="radiology", model="m2"),
            make_record(department="oncology", model="m1", prompt_tokens=100),
        ]
    )
    ledger.close()
    return path


def test_verify_exit_codes_and_named_record(
    ledger_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    assert main(["checkpoint", "--db", str(ledger_file), "--keys-dir", str(keys)]) == 0
    pub = str(keys / "checkpoint_ed25519.pub.pem")
    assert main(["verify", "--db", str(ledger_file), "--public-key", pub]) == 0
    assert "OK: 3 records in 1 chain(s), 1 checkpoint(s)" in capsys.readouterr().out
    with sqlite3.connect(ledger_file) as conn:
        conn.execute("UPDATE records SET model = 'other' WHERE record_id = 'req-2'")
    conn.close()
    assert main(["verify", "--db", str(ledger_file), "--public-key", pub]) == 1
    out = capsys.readouterr().out
    assert "FAIL [altered] record req-2 (sequence 2" in out


def test_checkpoints_exported_to_a_witness_catch_a_wiped_checkpoint_table(
    ledger_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    witness = tmp_path / "witness.jsonl"
    main(["checkpoint", "--db", str(ledger_file), "--keys-dir", str(tmp_path / "keys")])
    assert main(["export-checkpoints", "--db", str(ledger_file), "--out", str(witness)]) == 0
    main(["export-checkpoints", "--db", str(ledger_file), "--out", str(witness)])
    assert len(witness.read_text().splitlines()) == 1  # only new ones are appended
    with sqlite3.connect(ledger_file) as conn:
        conn.execute("DELETE FROM checkpoints")
        conn.execute("DELETE FROM records WHERE record_id = 'req-3'")
    conn.close()
    assert main(["verify", "--db", str(ledger_file)]) == 0  # the store alone cannot tell
    capsys.readouterr()
    assert main(["verify", "--db", str(ledger_file), "--witness", str(witness)]) == 1
    assert "[truncated]" in capsys.readouterr().out


def test_query_formats_and_filters(ledger_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", "--db", str(ledger_file), "--model", "m1", "--format", "json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["record_id"] for r in rows] == ["req-1", "req-3"]
    main(["query", "--db", str(ledger_file), "--department", "oncology", "--format", "csv"])
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["record_id"], r["prompt_tokens"]) for r in table] == [("req-3", "100")]
    main(["query", "--db", str(ledger_file), "--since", "2026-01-01T00:00:02"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["time_ns", "record_id"]
    assert [line.split()[1] for line in lines[1:]] == ["req-2", "req-3"]


def test_report_table_csv_and_png(
    ledger_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_csv, out_png = tmp_path / "r.csv", tmp_path / "r.png"
    args = ["report", "--db", str(ledger_file), "--period", "2026-01"]
    assert main([*args, "--csv", str(out_csv), "--png", str(out_png)]) == 0
    assert "radiology" in capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    by = {(r["department"], r["model"]): r for r in rows}
    assert by[("radiology", "m1")]["requests"] == "1"
    assert by[("oncology", "m1")]["prompt_tokens"] == "100"
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    main(["report", "--db", str(ledger_file), "--period", "2025-12", "--csv", str(out_csv)])
    assert list(csv.DictReader(io.StringIO(out_csv.read_text()))) == []


def test_erase_by_subject_and_key_keeps_verify_passing(
    ledger_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = str(tmp_path / "pseudonym.key")
    args = ["erase", "--db", str(ledger_file), "--subject", "alice@region.dk"]
    assert main([*args, "--pseudonym-key", key]) == 0
    assert "1 record(s)" in capsys.readouterr().out
    assert main(["verify", "--db", str(ledger_file)]) == 0
    capsys.readouterr()
    main(["query", "--db", str(ledger_file), "--format", "json"])
    subjects = [json.loads(x)["subject"] for x in capsys.readouterr().out.splitlines()]
    assert subjects[0] == "(erased)"
    assert subjects[1] != "(erased)"


def test_missing_ledger_file_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", "--db", str(tmp_path / "nope.db")]) == 2
    assert "no such ledger file" in capsys.readouterr().err


def test_settings_reject_unknown_keys_and_wrong_types() -> None:
    with pytest.raises(
        ValueError, match=r"audit\.store: unknown key\(s\) lisen; allowed: keys_dir, listen,"
    ):
        read(AuditStoreSettings, {"keys_dir": "k", "db_path": "x", "lisen": "a"}, "audit.store")
    with pytest.raises(ValueError, match=r"audit\.store\.listen: expected a string"):
        read(AuditStoreSettings, {"keys_dir": "k", "db_path": "x", "listen": 5}, "audit.store")
    with pytest.raises(ValueError, match="exactly one of db_path and postgres_dsn"):
        read(AuditStoreSettings, {"keys_dir": "k"}, "audit.store")
    with pytest.raises(ValueError, match=r"audit\.spool\.quota_bytes: expected a positive integer"):
        read(
            AuditSpoolSettings,
            {"spool_path": "s", "source": "g", "store_target": "h:1", "quota_bytes": "1"},
            "audit.spool",
        )
    ok = read(
        AuditSpoolSettings,
        {"spool_path": "s", "source": "g", "store_target": "h:1", "flush_timeout_s": 2},
        "audit.spool",
    )
    assert ok.flush_timeout_s == 2.0


def test_check_config_names_the_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "audit.yaml"
    config.write_text("keys_dir: keys\ndb_path: ledger.db\ncheckpoint_interval_s: 30\n")
    assert main(["check-config", "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith(f"{config}: OK (SQLite ledger.db ledger")
    config.write_text("keys_dir: keys\ndb_path: ledger.db\ncheckpoint_interval: 30\n")
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}: settings: unknown key(s) checkpoint_interval; allowed: keys_dir," in err
    assert "Traceback" not in err


def test_serve_flags_override_the_file(tmp_path: Path) -> None:
    from audit.cli import _parser, store_settings

    config = tmp_path / "audit.yaml"
    config.write_text("keys_dir: keys\ndb_path: ledger.db\nlisten: 127.0.0.1:4317\n")
    args = _parser().parse_args(["serve", "--config", str(config), "--listen", "127.0.0.1:0"])
    settings = store_settings(args)
    assert (settings.listen, settings.db_path, settings.keys_dir) == (
        "127.0.0.1:0",
        "ledger.db",
        "keys",
    )
    flags_only = _parser().parse_args(["serve", "--db", "l.db", "--keys-dir", "k"])
    assert store_settings(flags_only) == AuditStoreSettings(keys_dir="k", db_path="l.db")
