"""Audit ledger at scale: fill through the store's path, then time verify, report, query, erase.

Run: `.venv/bin/python -m load_tests.bench_ledger --records N [--checkpoint-every K]
[--postgres DSN] [--db PATH]`. Records go the way the store takes them: OTLP spans decoded, then
`Ledger.append` in the shipper's batches of 256, over several sources and subjects. `verify` runs
as `llm-audit verify` in a child process, so its time and peak RSS are the command's own. With
`--db` the filled SQLite ledger stays at PATH with its keys in PATH.keys/ (`llm-audit verify --db
PATH --public-key PATH.keys/checkpoint_ed25519.pub.pem`).
"""

from __future__ import annotations

import argparse
import itertools
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from audit.chain import ChainHead
from audit.checkpoint import (
    PUBLIC_KEY_FILE,
    Checkpoint,
    load_or_create_signing_key,
    sign_checkpoint,
)
from audit.coarsen import coarsen_checkpoints
from audit.ledger import Ledger, QueryFilter
from audit.otlp import audit_spans, decode_all, export_request
from audit.pseudonym import Pseudonymizer, load_or_create_key
from audit.record import AuditRecord, Outcome, Timings
from audit.store import open_ledger

BATCH = 256
DAY_NS = 86_400 * 1_000_000_000
DEPARTMENTS = ("radiology", "oncology", "emergency", "administration", "cardiology", "research")
T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


class Filler:
    """Makes records like the gateway's and appends them through OTLP decoding in batches."""

    def __init__(self, ledger: Ledger, sources: int, subjects: list[str], start_ns: int) -> None:
        self.ledger, self.subjects, self.start_ns = ledger, subjects, start_ns
        self.sources = [f"gateway-{i}-0" for i in range(sources)]
        self.seq = dict.fromkeys(self.sources, 0)
        self.n = 0
        self.rng = random.Random(7)
        # A few heavy users, many light ones (Zipf weights), as in a real department.
        self.weights = list(itertools.accumulate(1 / (i + 1) for i in range(len(subjects))))

    def record(self, time_ns: int) -> AuditRecord:
        self.n += 1
        source = self.sources[self.n % len(self.sources)]
        self.seq[source] += 1
        who = self.rng.choices(self.subjects, cum_weights=self.weights)[0]
        text = self.n % 20 == 0  # departments with `content: full`
        return AuditRecord(
            record_id=f"{self.n:08x}-{self.rng.getrandbits(64):016x}",
            time_ns=time_ns,
            subject_pseudonym=who,
            department=DEPARTMENTS[self.n % len(DEPARTMENTS)],
            outcome=Outcome.OK if self.n % 17 else Outcome.DENIED,
            status_code="OK" if self.n % 17 else "PERMISSION_DENIED",
            source=source,
            sequence=self.seq[source],
            trace_id=f"{self.rng.getrandbits(128):032x}",
            span_id=f"{self.rng.getrandbits(64):016x}",
            roles=("clinician",),
            purpose="diagnosis-support",
            classification="internal",
            model="llama-3.1-8b-instruct",
            worker=f"worker-{self.n % 4}",
            policy_version="sha256:" + "ab" * 32,
            rules_fired=("allow-model", "classification-internal"),
            redactions={"cpr": self.n % 3},
            prompt_hmac=f"{self.rng.getrandbits(256):064x}",
            answer_hmac=f"{self.rng.getrandbits(256):064x}",
            prompt_text="Summarise the ward round for bed 12. " * 4 if text else None,
            answer_text="The patient is stable; continue the current plan. " * 4 if text else None,
            prompt_tokens=100 + self.n % 900,
            completion_tokens=50 + self.n % 400,
            timings=Timings(1.5, 120.0, 900.0 + self.n % 1000),
        )

    def append(self, count: int, time_of: Callable[[int], int]) -> float:
        """Append `count` records; returns seconds spent in the store's path (decode + append)."""
        spent = 0.0
        for first in range(0, count, BATCH):
            batch = [self.record(time_of(first + i)) for i in range(min(BATCH, count - first))]
            wire = export_request(batch, "bench").SerializeToString()
            started = time.perf_counter()
            spans, _ = audit_spans(ExportTraceServiceRequest.FromString(wire))
            records, errors = decode_all(spans)
            assert not errors, errors
            self.ledger.append(records)
            spent += time.perf_counter() - started
        return spent


# A child's peak RSS as Linux reports it includes the memory of the process it was forked from
# (the high-water mark survives exec), so the benchmark's own size would leak into the figure:
# a small launcher starts each command and reports the command's own peak.
_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
cpu = usage.ru_utime + usage.ru_stime
sys.stderr.write(f"maxrss_kb={usage.ru_maxrss} cpu_s={cpu}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_cli(args: list[str]) -> tuple[float, float, str]:
    """`llm-audit ARGS` in a child: (seconds, peak RSS in MB, CPU seconds as text).

    CPU time is reported beside wall time: on a shared machine it is the steadier figure.
    """
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, sys.executable, "-m", "audit.cli", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"llm-audit {args[0]} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    rss_kb = int(done.stderr.rsplit("maxrss_kb=", 1)[1].split()[0])
    cpu_s = float(done.stderr.rsplit("cpu_s=", 1)[1].split()[0])
    return elapsed, rss_kb / 1024, f"{cpu_s:.2f}"


def seed_checkpoints(target: tuple[str | None, str | None], rows: list[Any]) -> None:
    """Store a checkpoint history in one transaction (the timer stores one a minute)."""
    sql = "INSERT INTO checkpoints (created_ns, payload, signature, public_key) VALUES "
    db, dsn = target
    if db is not None:
        import sqlite3

        with sqlite3.connect(db) as conn:
            conn.executemany(sql + "(?, ?, ?, ?)", rows)
        conn.close()
    else:
        import psycopg

        with psycopg.connect(dsn or "") as pg, pg.cursor() as cur:
            cur.executemany((sql + "(%s, %s, %s, %s)").encode(), rows)


def dense_history(
    ledger: Ledger, signer: Ed25519PrivateKey, every: int, start_ns: int, step_ns: int
) -> list[tuple[int, str, str, str]]:
    """Checkpoints as the timer would have signed them every `every` records of the fill.

    Sources take turns, so after m records each source's head is at about m / sources; the
    hashes at those indexes are read back from the chains.
    """
    sources = ledger.sources()
    per = max(every // len(sources), 1)
    at: dict[str, list[str]] = {}
    for s in sources:
        at[s] = [row[4] for row in ledger.scan(s) if row[0] % per == 0]
    rows = []
    cp: Checkpoint | None = None  # each links to the one before, as the store signs them
    for j in range(min(len(v) for v in at.values())):
        heads = {s: ChainHead((j + 1) * per, at[s][j]) for s in sources}
        cp = sign_checkpoint(signer, heads, start_ns + (j + 1) * per * len(sources) * step_ns, cp)
        rows.append((cp.created_ns, cp.payload, cp.signature, cp.public_key))
    return rows


def sign_now(ledger: Ledger, signer: Ed25519PrivateKey) -> None:
    """Sign the heads now, linked to the newest checkpoint, as the store's timer does."""
    heads, newest = ledger.heads(), ledger.newest_checkpoint()
    ledger.add_checkpoint(sign_checkpoint(signer, heads, time.time_ns(), newest))


def history_aside(target: tuple[str | None, str | None], aside: bool) -> None:
    """Move every checkpoint but the newest into a side table (aside) or back (not aside)."""
    keep = "(SELECT MAX(id) FROM checkpoints)"
    if aside:
        steps = [
            "CREATE TABLE IF NOT EXISTS bench_history AS SELECT * FROM checkpoints WHERE 1 = 0",
            f"INSERT INTO bench_history SELECT * FROM checkpoints WHERE id < {keep}",
            f"DELETE FROM checkpoints WHERE id < {keep}",
        ]
    else:
        steps = [
            "CREATE TABLE IF NOT EXISTS bench_history AS SELECT * FROM checkpoints WHERE 1 = 0",
            "INSERT INTO checkpoints SELECT * FROM bench_history",
            "DROP TABLE bench_history",
        ]
    db, dsn = target
    if db is not None:
        import sqlite3

        with sqlite3.connect(db) as conn:
            for sql in steps:
                conn.execute(sql)
        conn.close()
    else:
        import psycopg

        with psycopg.connect(dsn or "") as pg:
            for sql in steps:
                pg.execute(sql.encode())


def ledger_bytes(ledger: Ledger, db: str | None) -> int:
    if db is not None:
        return sum(p.stat().st_size for p in Path(db).parent.glob(Path(db).name + "*"))
    row = ledger._x(  # type: ignore[attr-defined]
        "SELECT SUM(pg_total_relation_size(c.oid)) FROM pg_class c "
        "WHERE c.relname IN ('records', 'subject_links', 'contents', 'checkpoints', 'heads')"
    ).fetchone()
    return int(row[0])


def bench(args: argparse.Namespace, db: str | None, keys: Path) -> list[tuple[str, str]]:
    target = (db, args.postgres)
    ledger = open_ledger(*target)
    signer = load_or_create_signing_key(keys)
    pseudo = Pseudonymizer(load_or_create_key(keys / "pseudonym.key"))
    subjects = [pseudo(f"user-{i}@region.example") for i in range(args.subjects)]
    now = time.time_ns()
    start = now - 365 * DAY_NS
    step = 365 * DAY_NS // max(args.records, 1)
    filler = Filler(ledger, args.sources, subjects, start)
    rows: list[tuple[str, str]] = []
    spent = filler.append(args.records, lambda i: start + i * step)
    sign_now(ledger, signer)
    n = args.records
    rows.append(("fill (OTLP decode + append)", f"{n / spent:,.0f} records/s"))
    if db is not None:
        ledger._x("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[attr-defined]
    rows.append(("bytes per record", f"{ledger_bytes(ledger, db) / n:,.0f}"))
    where = ["--db", db] if db else ["--postgres", args.postgres]
    pub = ["--public-key", str(keys / PUBLIC_KEY_FILE)]
    dense = dense_history(ledger, signer, args.checkpoint_every, start, step)
    # The history goes in before a final checkpoint: verify wants checkpoints in signing order.
    ledger.delete_checkpoints([i for i, _ in ledger.iter_checkpoints()])
    seed_checkpoints(target, dense)
    sign_now(ledger, signer)
    # Alternate runs without and with the history (moved aside and back) and keep the best of
    # each: on a shared machine only figures taken side by side compare.
    best: dict[bool, tuple[float, float, float]] = {}
    state = keys / "verify.state"
    for _ in range(args.repeat):
        for with_history in (False, True):
            history_aside(target, not with_history)
            s, rss, cpu_text = run_cli(["verify", *where, *pub, "--state", str(state)])
            cpu = float(cpu_text)
            old = best.get(with_history, (s, cpu, rss))
            best[with_history] = (min(s, old[0]), min(cpu, old[1]), max(rss, old[2]))
    label = f"verify, {len(dense) + 1:,} checkpoints (1 per {args.checkpoint_every} records)"
    for with_history, name in ((False, "verify, 1 checkpoint"), (True, label)):
        s, cpu, rss = best[with_history]
        rows.append((name, f"{s:.2f} s, {cpu:.2f} s CPU, {rss:,.0f} MB peak RSS"))
    ratio = best[True][1] / best[False][1]
    rows.append(("  ratio dense / 1 checkpoint", f"{ratio:.2f} x (CPU time)"))
    s, rss, cpu_text = run_cli(["verify", *where, *pub, "--jobs", "2"])
    rows.append(("verify --jobs 2, dense checkpoints", f"{s:.2f} s, {rss:,.0f} MB peak RSS"))
    more = min(10_000, max(n // 10, 1))
    filler.append(more, lambda i: now + i)
    sign_now(ledger, signer)
    s, rss, cpu_text = run_cli(["verify", *where, *pub, "--state", str(state), "--from-checkpoint"])
    rows.append(
        (f"verify --from-checkpoint, {more:,} new", f"{s:.2f} s, {cpu_text} s CPU, {rss:,.0f} MB")
    )
    month = QueryFilter(since_ns=start + 150 * DAY_NS, until_ns=start + 180 * DAY_NS)
    _, s = timed(lambda: ledger.usage(month))
    rows.append(("report, one month", f"{s * 1000:,.0f} ms"))
    heaviest = subjects[0]
    found, s = timed(lambda: ledger.query(QueryFilter(subject_pseudonym=heaviest), n))
    rows.append((f"query --subject, heaviest ({len(found):,} rows)", f"{s * 1000:,.0f} ms"))
    _, s = timed(lambda: ledger.query(QueryFilter(subject_pseudonym=pseudo("nobody"))))
    rows.append(("query --subject, no records", f"{s * 1000:,.1f} ms"))
    dropped, s = timed(lambda: coarsen_checkpoints(ledger, time.time_ns()))
    rows.append((f"coarsen checkpoints ({dropped:,} removed)", f"{s:.2f} s"))
    erased, s = timed(lambda: ledger.erase_subject(heaviest))
    rows.append((f"erase heaviest subject ({erased:,} records)", f"{s * 1000:,.0f} ms"))
    ledger.close()  # a closed writer leaves no WAL behind for the next reader
    s, rss, cpu_text = run_cli(["verify", *where, *pub])
    rows.append(
        ("verify after coarsening and erasure", f"{s:.2f} s, {cpu_text} s CPU, {rss:,.0f} MB")
    )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--checkpoint-every", type=int, default=25, metavar="K")
    ap.add_argument("--sources", type=int, default=6)
    ap.add_argument("--subjects", type=int, default=400)
    ap.add_argument("--repeat", type=int, default=2, help="alternated verify runs (best kept)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--db", metavar="PATH", help="keep the SQLite ledger here (must not exist)")
    g.add_argument("--postgres", metavar="DSN", help="an empty PostgreSQL database")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        db = args.db or (None if args.postgres else str(Path(tmp) / "ledger.db"))
        if db is not None and Path(db).exists():
            raise SystemExit(f"{db}: exists; give a new path")
        keys = Path(args.db + ".keys") if args.db else Path(tmp) / "keys"
        rows = bench(args, db, keys)
    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(f"ledger benchmark: {args.records:,} records, {args.sources} sources, "
          f"{args.subjects} subjects, {backend}")  # fmt: skip
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    if args.db:
        print(f"kept: {args.db} (keys in {keys})")


if __name__ == "__main__":
    main()
