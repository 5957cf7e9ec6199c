"""`llm-audit register-report` and `query`'s digest column against a real SQLite ledger."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from audit.cli import main
from audit.ledger import QueryFilter
from audit.record import Outcome
from audit.sqlite_ledger import SqliteLedger
from policy import load_directory
from tests.audit.conftest import MakeRecord
from tests.helpers import EXAMPLE_POLICY

LLAMA = "llama-3.1-8b-instruct"
QWEN = "qwen2.5-7b-instruct"
JAN = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
DAY = 86_400 * 1_000_000_000
OLD_BUILD = "sha256:" + "1" * 64


@pytest.fixture
def ledger_file(tmp_path: Path, make_record: MakeRecord) -> Path:
    models = load_directory(EXAMPLE_POLICY).register.models
    assert models is not None
    digest = {m: e.weights_digest for m, e in models.items()}
    db = tmp_path / "audit.db"
    ledger = SqliteLedger(str(db))
    rows = [
        (JAN + 1 * DAY, "emergency", LLAMA, "treatment", Outcome.OK, digest[LLAMA]),
        (JAN + 2 * DAY, "emergency", LLAMA, "treatment", Outcome.OK, OLD_BUILD),
        (JAN + 3 * DAY, "emergency", QWEN, "administration", Outcome.OK, digest[QWEN]),
        (JAN + 4 * DAY, "administration", QWEN, "administration", Outcome.OK, digest[QWEN]),
        (JAN + 5 * DAY, "research", LLAMA, "research", Outcome.OK, digest[LLAMA]),
        (JAN + 6 * DAY, "research", LLAMA, "", Outcome.DENIED, ""),
        (JAN + 40 * DAY, "research", LLAMA, "research", Outcome.OK, digest[LLAMA]),  # outside
    ]
    ledger.append(
        [
            make_record(
                time_ns=t, department=d, model=m, purpose=p, outcome=o, model_digest=g, sequence=i
            )
            for i, (t, d, m, p, o, g) in enumerate(rows, 1)
        ]
    )
    ledger.close()
    return db


def test_query_shows_the_digest(ledger_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", "--db", str(ledger_file), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[1]["model_digest"] == OLD_BUILD
    assert rows[5]["model_digest"] == ""


def test_report_totals_match_the_ledger(ledger_file: Path, tmp_path: Path) -> None:
    out_csv, out_md = tmp_path / "report.csv", tmp_path / "report.md"
    args = ["--db", str(ledger_file), "--from", "2026-01-01", "--to", "2026-02-01"]
    outputs = ["--csv", str(out_csv), "--markdown", str(out_md)]
    assert main(["register-report", *args, "--policy-dir", str(EXAMPLE_POLICY), *outputs]) == 0
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    ledger = SqliteLedger(str(ledger_file))
    try:
        records = ledger.query(QueryFilter(since_ns=JAN, until_ns=JAN + 31 * DAY))
    finally:
        ledger.close()
    assert sum(int(r["requests"]) for r in rows) == len(records) == 6
    assert sum(int(r["prompt_tokens"]) for r in rows) == sum(r["prompt_tokens"] for r in records)
    assert sum(int(r["completion_tokens"]) for r in rows) == sum(
        r["completion_tokens"] for r in records
    )
    treatment = [r for r in rows if r["purpose"] == "treatment"]
    assert {(r["legal_basis_art6"], r["legal_basis_art9"]) for r in treatment} == {
        ("public_task", "health_care")
    }
    assert {r["retention_records_days"] for r in treatment} == {"3650"}
    markdown = out_md.read_text()
    assert "Requests: 6; prompt tokens" in markdown
    assert OLD_BUILD[:19] in markdown and "(1 answers)" in markdown
    assert "DPIA-2026-014" in markdown
    assert "| research | public_task / research_statistics" in markdown
