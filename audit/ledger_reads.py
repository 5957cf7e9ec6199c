"""The ledger's streaming reads for verification, checkpoint coarsening and per-person queries."""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from typing import Any

from audit.checkpoint import Checkpoint

# The columns `scan` yields, in order: the link, the queryable copies that verify compares with
# the hashed body (same order as ledger.DENORMALISED), then the side tables (NULL when absent).
SCAN_COLUMNS = (
    "chain_index",
    "record_id",
    "body",
    "prev_hash",
    "hash",
    "source",
    "sequence",
    "time_ns",
    "department",
    "model",
    "purpose",
    "outcome",
    "status_code",
    "prompt_tokens",
    "completion_tokens",
    "subject_pseudonym",
    "salt",
    "content_record_id",
    "prompt_text",
    "answer_text",
)

_SCAN_SQL = (
    "SELECT r.chain_index, r.record_id, r.body, r.prev_hash, r.hash, r.source, r.sequence, "
    "r.time_ns, r.department, r.model, r.purpose, r.outcome, r.status_code, r.prompt_tokens, "
    "r.completion_tokens, l.subject_pseudonym, l.salt, c.record_id, c.prompt_text, c.answer_text "
    "FROM records r LEFT JOIN subject_links l ON l.record_id = r.record_id "
    "LEFT JOIN contents c ON c.record_id = r.record_id "
    "WHERE r.source = ? AND r.chain_index >= ? ORDER BY r.chain_index, r.id"
)


class SqlAccess:
    """How the mixins of `SqlLedger` run SQL: `_x` with `?` placeholders, and `_stream`, which
    iterates a query without materialising it (SQLite steps its cursor; PostgreSQL uses a
    server-side cursor). `SqlLedger` and its backends implement them."""

    def _x(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def _stream(
        self, sql: str, params: Sequence[Any] = ()
    ) -> Generator[tuple[Any, ...], None, None]:
        yield from self._x(sql, params)


class LedgerReads(SqlAccess):
    """Reads that stream: memory stays bounded whatever the ledger's size. Mixed into
    `SqlLedger`."""

    def scan(self, source: str, from_index: int = 0) -> Generator[tuple[Any, ...], None, None]:
        """One chain in chain order from `from_index` on, joined with its side-table rows.

        Rows are tuples in `SCAN_COLUMNS` order. One statement, so one consistent snapshot.
        """
        return self._stream(_SCAN_SQL, (source, from_index))

    def iter_checkpoints(self, after_ns: int | None = None) -> Iterator[tuple[int, Checkpoint]]:
        """(row id, checkpoint) in insertion order; only those created after `after_ns` if given."""
        sql = "SELECT id, created_ns, payload, signature, public_key FROM checkpoints"
        params: list[Any] = []
        if after_ns is not None:
            sql += " WHERE created_ns > ?"
            params.append(after_ns)
        for row in self._stream(sql + " ORDER BY id", params):
            created = row[1] if isinstance(row[1], int) else -1  # verify reports the mismatch
            yield int(row[0]), Checkpoint(created, row[2], row[3], row[4])

    def newest_checkpoint(self) -> Checkpoint | None:
        row = self._x(
            "SELECT created_ns, payload, signature, public_key FROM checkpoints "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else Checkpoint(int(row[0]), row[1], row[2], row[3])

    def delete_checkpoints(self, ids: Sequence[int]) -> int:
        """Delete checkpoints by row id (coarsening decides which); returns how many went."""
        n = 0
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ", ".join("?" for _ in chunk)
            n += self._x(f"DELETE FROM checkpoints WHERE id IN ({marks})", chunk).rowcount
        return n

    def subject_rows(self, pseudonym: str) -> Generator[tuple[Any, ...], None, None]:
        """(body, prompt_text, answer_text) of a subject's records in time order, by its index."""
        return self._stream(
            "SELECT r.body, c.prompt_text, c.answer_text FROM subject_links l "
            "JOIN records r ON r.record_id = l.record_id "
            "LEFT JOIN contents c ON c.record_id = l.record_id "
            "WHERE l.subject_pseudonym = ? ORDER BY +r.time_ns, r.record_id",
            (pseudonym,),
        )

    def orphan_side_rows(self, limit: int = 10) -> list[tuple[str, str]]:
        """(table, record_id) of text rows whose record is not in the ledger.

        A `subject_links` row left behind by a deleted record is not listed: it holds no claim
        of its own, and the record's deletion is what verify reports.
        """
        out: list[tuple[str, str]] = []
        for table in ("contents",):
            rows = self._x(
                f"SELECT t.record_id FROM {table} t LEFT JOIN records r "
                "ON r.record_id = t.record_id WHERE r.record_id IS NULL LIMIT ?",
                (limit,),
            ).fetchall()
            out.extend((table, str(r[0])) for r in rows)
        return out
