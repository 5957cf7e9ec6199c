"""Audit fixtures: records, SQLite and real PostgreSQL ledgers, a real store on 127.0.0.1:0."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from audit.ledger import Ledger
from audit.record import AuditRecord, Outcome, Timings
from audit.settings import AuditStoreSettings
from audit.sqlite_ledger import SqliteLedger
from audit.store import AuditStoreHandle, serve_store
from tests.support.ports import free_port

MakeRecord = Callable[..., AuditRecord]


@pytest.fixture
def make_record() -> MakeRecord:
    """Records with distinct ids; keyword arguments override any field."""
    counter = iter(range(1, 1_000_000))

    def make(**kw: object) -> AuditRecord:
        n = next(counter)
        fields: dict[str, object] = {
            "record_id": f"req-{n}",
            "time_ns": 1_767_225_600_000_000_000 + n * 1_000_000_000,  # 2026-01-01 onwards
            "subject_pseudonym": f"pseud-{n % 3}",
            "department": ("radiology", "oncology")[n % 2],
            "outcome": Outcome.OK,
            "status_code": "OK",
            "source": "gw-0",
            "sequence": n,
            "trace_id": f"{n:032x}",
            "span_id": f"{n:016x}",
            "roles": ("clinician",),
            "purpose": "diagnosis-support",
            "classification": "internal",
            "model": "llama-3.1-8b",
            "worker": "sim-0",
            "policy_version": "v7",
            "rules_fired": ("allow-model",),
            "redactions": {"cpr": n % 2},
            "prompt_hmac": "ab" * 32,
            "answer_hmac": "cd" * 32,
            "prompt_tokens": 10 + n,
            "completion_tokens": 20 + n,
            "timings": Timings(1.0, 5.5, 40.25),
        }
        fields.update(kw)
        return AuditRecord(**fields)  # type: ignore[arg-type]

    return make


def _as_postgres_user() -> list[str]:
    # PostgreSQL refuses to run as root; CI needs an unprivileged `postgres` account then.
    return ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[tuple[str, int]]:
    """A real PostgreSQL in a temp dir on a Unix socket: (socket dir, port)."""
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.fail("PostgreSQL (initdb, pg_ctl) is required for the ledger suite")
    base = Path(tempfile.mkdtemp(prefix="llmgw-pg-"))
    data = base / "data"
    if os.getuid() == 0:
        shutil.chown(base, "postgres")
    base.chmod(0o700)
    run = _as_postgres_user()
    subprocess.run(
        [*run, "initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    opts = f"-k {base} -p {port} -c listen_addresses='' -F"
    subprocess.run(
        [*run, "pg_ctl", "-D", str(data), "-w", "-l", str(base / "log"), "-o", opts, "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield str(base), port
    finally:
        subprocess.run(
            [*run, "pg_ctl", "-D", str(data), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_dsn(postgres_server: tuple[str, int]) -> Iterator[str]:
    """A fresh database per test on the session's PostgreSQL server."""
    import psycopg

    host, port = postgres_server
    name = f"t{time.time_ns()}"
    admin = f"host={host} port={port} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    yield f"host={host} port={port} user=postgres dbname={name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)".encode())


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str | None, str | None]:
    """(db_path, postgres_dsn) for each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "ledger.db"), None
    dsn: str = request.getfixturevalue("postgres_dsn")
    return None, dsn


@pytest.fixture
def ledger(ledger_target: tuple[str | None, str | None]) -> Iterator[Ledger]:
    from audit.store import open_ledger

    led = open_ledger(*ledger_target)
    yield led
    led.close()


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    led = SqliteLedger(tmp_path / "ledger.db")
    yield led
    led.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AuditStoreHandle]:
    """A real audit store (SQLite) on 127.0.0.1:0."""
    settings = AuditStoreSettings(
        keys_dir=str(tmp_path / "keys"),
        listen="127.0.0.1:0",
        db_path=str(tmp_path / "store.db"),
        checkpoint_interval_s=3600,
    )
    handle = await serve_store(settings)
    yield handle
    await handle.stop(grace=0)
