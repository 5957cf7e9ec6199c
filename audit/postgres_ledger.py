"""The ledger backend at scale: PostgreSQL through psycopg 3."""

from __future__ import annotations

import psycopg

from audit.ledger import SqlLedger, schema


class PostgresLedger(SqlLedger):
    """A `Ledger` in PostgreSQL, shared by several store processes.

    Appends lock only their source's row in `heads` (SELECT ... FOR UPDATE), so gateways'
    chains grow in parallel without a global lock. Erasure VACUUMs the side tables so that
    deleted pseudonyms do not survive as dead tuples.
    """

    PARAM = "%s"
    LOCK_HEAD = " FOR UPDATE"

    def __init__(self, dsn: str) -> None:
        conn = psycopg.connect(dsn, autocommit=True)
        for ddl in schema("BIGSERIAL PRIMARY KEY"):
            conn.execute(ddl.encode())
        super().__init__(conn)

    def _scrub(self) -> None:
        self._x("VACUUM subject_links")
        self._x("VACUUM contents")
