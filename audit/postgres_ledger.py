"""The ledger backend at scale: PostgreSQL through psycopg 3."""

from __future__ import annotations

import itertools
from collections.abc import Generator, Sequence
from typing import Any

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
        self._cursors = itertools.count()

    def _stream(
        self, sql: str, params: Sequence[Any] = ()
    ) -> Generator[tuple[Any, ...], None, None]:
        # A named (server-side) cursor fetches `itersize` rows at a time, so a chain of any
        # length streams in bounded memory; it needs a transaction, which also pins a snapshot.
        name = f"llmgw_stream_{next(self._cursors)}"
        with self._conn.transaction(), self._conn.cursor(name=name) as cur:
            cur.itersize = 2000
            cur.execute(sql.replace("?", self.PARAM).encode(), tuple(params))
            yield from cur

    def _scrub(self) -> None:
        self._x("VACUUM subject_links")
        self._x("VACUUM contents")
