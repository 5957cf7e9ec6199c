"""The embedded ledger backend: one SQLite file in WAL mode."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from audit.ledger import SqlLedger, schema


class SqliteLedger(SqlLedger):
    """A `Ledger` in a SQLite file (the default for one machine and `llm-gateway dev`).

    Commits fsync (synchronous=FULL); `secure_delete` overwrites erased side-table rows so that
    an erased pseudonym does not linger in free pages. Use from one thread at a time.
    """

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        for ddl in schema("INTEGER PRIMARY KEY AUTOINCREMENT"):
            conn.execute(ddl)
        super().__init__(conn)

    def _begin(self) -> None:
        self._x("BEGIN IMMEDIATE")

    def _scrub(self) -> None:
        # Erased rows may still sit in the WAL: fold it into the main file and truncate it.
        self._x("PRAGMA wal_checkpoint(TRUNCATE)")
