"""Smoke run of the ledger benchmark: a small ledger filled, every row of the table reported."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from audit.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_ledger_benchmark_reports_every_row_and_keeps_the_ledger(tmp_path: Path) -> None:
    db = tmp_path / "bench.db"
    done = subprocess.run(
        [sys.executable, "-m", "load_tests.bench_ledger", "--records", "600", "--db", str(db)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    labels = (
        "fill (OTLP decode + append)",
        "bytes per record",
        "verify, 1 checkpoint",
        "verify, ",
        "verify --jobs 2",
        "verify --from-checkpoint, 60 new",
        "report, one month",
        "query --subject, heaviest",
        "query --subject, no records",
        "coarsen checkpoints",
        "erase heaviest subject",
        "verify after coarsening and erasure",
    )
    for label in labels:
        line = next((x for x in out.splitlines() if x.startswith(label)), None)
        assert line is not None, f"no row {label!r} in:\n{out}"
        numbers = [
            float(n.replace(",", "")) for n in re.findall(r"\d[\d,]*\.?\d*", line[len(label) :])
        ]
        assert numbers and all(n >= 0 for n in numbers), line
    assert re.search(r"verify, 2\d checkpoints \(1 per 25 records\)", out), out
    pub = Path(str(db) + ".keys") / "checkpoint_ed25519.pub.pem"
    assert main(["verify", "--db", str(db), "--public-key", str(pub)]) == 0
