"""The `Ledger` port (append-only, hash-chained per source) and the SQL shared by its backends."""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from audit.chain import (
    ChainHead,
    Link,
    content_commitment,
    make_link,
    new_salt,
    subject_commitment,
)
from audit.checkpoint import Checkpoint
from audit.ledger_reads import LedgerReads
from audit.record import AuditRecord
from audit.retention_sql import Hold, RetentionStore, retention_schema


@dataclass(frozen=True, slots=True)
class AppendResult:
    stored: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class QueryFilter:
    """Which records `query` and `usage` look at; None means no restriction. Times in unix ns."""

    since_ns: int | None = None
    until_ns: int | None = None
    department: str | None = None
    model: str | None = None
    outcome: str | None = None
    subject_pseudonym: str | None = None


@dataclass(frozen=True, slots=True)
class UsageRow:
    department: str
    model: str
    purpose: str
    outcome: str
    requests: int
    prompt_tokens: int
    completion_tokens: int


QUERY_COLUMNS = (
    "time_ns",
    "record_id",
    "source",
    "sequence",
    "department",
    "model",
    "purpose",
    "outcome",
    "status_code",
    "prompt_tokens",
    "completion_tokens",
    "subject",
    "model_digest",
    "interface",
)


# Columns copied out of the hashed body so queries can index them; verify compares them.
DENORMALISED = (
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
)


class Ledger(Protocol):
    """The audit store's storage port: SQLite (embedded) or PostgreSQL.

    Contract: `append` is idempotent by record_id (a record delivered twice is stored once) and
    chains each source's records in arrival order; erasure deletes only from the side tables
    (pseudonym links and content); retention deletes only a chain's prefix, or whole text rows,
    each time with a signed statement (`audit.retention`).
    """

    def append(self, records: Sequence[AuditRecord]) -> AppendResult: ...
    def heads(self) -> dict[str, ChainHead]: ...
    def links(self, source: str) -> Iterator[Link]: ...
    def sources(self) -> list[str]: ...
    def count(self) -> int: ...
    def add_checkpoint(self, checkpoint: Checkpoint) -> None: ...
    def checkpoints(self) -> list[Checkpoint]: ...
    def iter_checkpoints(self, after_ns: int | None = None) -> Iterator[tuple[int, Checkpoint]]: ...
    def newest_checkpoint(self) -> Checkpoint | None: ...
    def delete_checkpoints(self, ids: Sequence[int]) -> int: ...
    def scan(self, source: str, from_index: int = 0) -> Generator[tuple[Any, ...], None, None]: ...
    def orphan_side_rows(self, limit: int = 10) -> list[tuple[str, str]]: ...
    def subject_rows(self, pseudonym: str) -> Generator[tuple[Any, ...], None, None]: ...
    def chain_rows(self, source: str) -> Generator[tuple[Any, ...], None, None]: ...
    def text_rows(self, source: str) -> Generator[tuple[Any, ...], None, None]: ...
    def prune_prefix(self, source: str, cut_index: int, checkpoint: Checkpoint) -> int: ...
    def expire_text(self, record_ids: Sequence[str], checkpoint: Checkpoint) -> int: ...
    def iter_retention_checkpoints(self) -> Iterator[Checkpoint]: ...
    def add_hold(self, kind: str, value: str, reason: str) -> int: ...
    def lift_hold(self, kind: str, value: str, reason: str) -> int: ...
    def holds(self, include_lifted: bool = False) -> list[Hold]: ...
    def erase_subject(self, pseudonym: str) -> int: ...
    def subject_of(self, record_id: str) -> str | None: ...
    def denormalised(self, record_id: str) -> dict[str, Any]: ...
    def query(self, flt: QueryFilter, limit: int = 10_000) -> list[dict[str, Any]]: ...
    def usage(self, flt: QueryFilter) -> list[UsageRow]: ...
    def close(self) -> None: ...


class SqlLedger(LedgerReads, RetentionStore):
    """The ledger logic over a DB-API connection; subclasses give the DDL and head locking.

    SQL is written with `?` placeholders; `PARAM` is what the driver wants instead.
    """

    PARAM = "?"
    LOCK_HEAD = ""  # appended to the head SELECT (PostgreSQL: FOR UPDATE)

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def _x(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql.replace("?", self.PARAM), tuple(params))

    def _begin(self) -> None:
        self._x("BEGIN")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        self._begin()
        try:
            yield
            self._x("COMMIT")
        except BaseException:
            self._x("ROLLBACK")
            raise

    def append(self, records: Sequence[AuditRecord]) -> AppendResult:
        by_source: dict[str, list[AuditRecord]] = {}
        for r in records:
            by_source.setdefault(r.source, []).append(r)
        stored = dups = 0
        for source, recs in by_source.items():
            s, d = self._append_source(source, recs)
            stored += s
            dups += d
        return AppendResult(stored, dups)

    def _append_source(self, source: str, records: list[AuditRecord]) -> tuple[int, int]:
        # One transaction per source, locking only that source's head: gateways never wait
        # on each other's chains (PostgreSQL); SQLite has a single writer anyway.
        with self._transaction():
            self._x(
                "INSERT INTO heads (source, chain_index, hash) VALUES (?, 0, '') "
                "ON CONFLICT (source) DO NOTHING",
                (source,),
            )
            row = self._x(
                "SELECT chain_index, hash FROM heads WHERE source = ?" + self.LOCK_HEAD, (source,)
            ).fetchone()
            head = ChainHead(row[0], row[1]) if row[0] else None
            stored = dups = 0
            for rec in records:
                if self._x(
                    "SELECT 1 FROM records WHERE record_id = ?", (rec.record_id,)
                ).fetchone():
                    dups += 1
                    continue
                salt = new_salt()
                content = None
                if rec.prompt_text is not None or rec.answer_text is not None:
                    content = content_commitment(salt, rec.prompt_text, rec.answer_text)
                commitment = subject_commitment(salt, rec.subject_pseudonym)
                link = make_link(rec, head, commitment, content)
                self._insert(rec, link, salt)
                head = ChainHead(link.chain_index, link.hash)
                stored += 1
            if head is not None:
                self._x(
                    "UPDATE heads SET chain_index = ?, hash = ? WHERE source = ?",
                    (head.chain_index, head.hash, source),
                )
        return stored, dups

    def _insert(self, rec: AuditRecord, link: Link, salt: bytes) -> None:
        self._x(
            "INSERT INTO records (source, chain_index, record_id, sequence, time_ns, department, "
            "model, purpose, outcome, status_code, prompt_tokens, completion_tokens, body, "
            "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rec.source,
                link.chain_index,
                rec.record_id,
                rec.sequence,
                rec.time_ns,
                rec.department,
                rec.model,
                rec.purpose,
                rec.outcome.value,
                rec.status_code,
                rec.prompt_tokens,
                rec.completion_tokens,
                link.body,
                link.prev_hash,
                link.hash,
            ),
        )
        self._x(
            "INSERT INTO subject_links (record_id, subject_pseudonym, salt) VALUES (?, ?, ?)",
            (rec.record_id, rec.subject_pseudonym, salt.hex()),
        )
        if rec.prompt_text is not None or rec.answer_text is not None:
            self._x(
                "INSERT INTO contents (record_id, prompt_text, answer_text) VALUES (?, ?, ?)",
                (rec.record_id, rec.prompt_text, rec.answer_text),
            )

    def heads(self) -> dict[str, ChainHead]:
        rows = self._x("SELECT source, chain_index, hash FROM heads WHERE chain_index > 0")
        return {s: ChainHead(i, h) for s, i, h in rows.fetchall()}

    def links(self, source: str) -> Iterator[Link]:
        rows = self._x(
            "SELECT source, chain_index, record_id, body, prev_hash, hash FROM records "
            "WHERE source = ? ORDER BY chain_index, id",
            (source,),
        ).fetchall()
        for row in rows:
            yield Link(*row)

    def denormalised(self, record_id: str) -> dict[str, Any]:
        """The queryable columns of one record, which verify checks against its hashed body."""
        cols = DENORMALISED
        row = self._x(
            f"SELECT {', '.join(cols)} FROM records WHERE record_id = ?", (record_id,)
        ).fetchone()
        return dict(zip(cols, row, strict=True)) if row else {}

    def sources(self) -> list[str]:
        rows = self._x("SELECT DISTINCT source FROM records ORDER BY source").fetchall()
        names = {r[0] for r in rows} | set(self.heads())
        return sorted(names)

    def count(self) -> int:
        n: int = self._x("SELECT COUNT(*) FROM records").fetchone()[0]
        return n

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        self._x(
            "INSERT INTO checkpoints (created_ns, payload, signature, public_key) "
            "VALUES (?, ?, ?, ?)",
            (
                checkpoint.created_ns,
                checkpoint.payload,
                checkpoint.signature,
                checkpoint.public_key,
            ),
        )

    def checkpoints(self) -> list[Checkpoint]:
        rows = self._x(
            "SELECT created_ns, payload, signature, public_key FROM checkpoints ORDER BY id"
        ).fetchall()
        return [Checkpoint(*row) for row in rows]

    def erase_subject(self, pseudonym: str) -> int:
        with self._transaction():
            self._x(
                "DELETE FROM contents WHERE record_id IN "
                "(SELECT record_id FROM subject_links WHERE subject_pseudonym = ?)",
                (pseudonym,),
            )
            n: int = self._x(
                "DELETE FROM subject_links WHERE subject_pseudonym = ?", (pseudonym,)
            ).rowcount
        self._scrub()
        return n

    def _scrub(self) -> None:
        """Make deleted side-table rows unrecoverable from the database files."""

    def subject_of(self, record_id: str) -> str | None:
        row = self._x(
            "SELECT subject_pseudonym FROM subject_links WHERE record_id = ?", (record_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    def _where(self, flt: QueryFilter) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        # With a subject, its index drives the query: the unary + keeps the planner off the
        # time index, so a subject with no records costs one index probe, not a scan.
        t = "+r.time_ns" if flt.subject_pseudonym is not None else "r.time_ns"
        for col, op, val in (
            ("l.subject_pseudonym", "=", flt.subject_pseudonym),
            (t, ">=", flt.since_ns),
            (t, "<", flt.until_ns),
            ("department", "=", flt.department),
            ("model", "=", flt.model),
            ("outcome", "=", flt.outcome),
        ):
            if val is not None:
                clauses.append(f"{col if '.' in col else 'r.' + col} {op} ?")
                params.append(val)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def query(self, flt: QueryFilter, limit: int = 10_000) -> list[dict[str, Any]]:
        where, params = self._where(flt)
        order = "r.time_ns, r.record_id"
        if flt.subject_pseudonym is not None:
            order = "+r.time_ns, r.record_id"
        rows = self._x(
            "SELECT r.time_ns, r.record_id, r.source, r.sequence, r.department, r.model, "
            "r.purpose, r.outcome, r.status_code, r.prompt_tokens, r.completion_tokens, "
            "l.subject_pseudonym, r.body FROM records r "
            "LEFT JOIN subject_links l ON l.record_id = r.record_id"
            f"{where} ORDER BY {order} LIMIT ?",
            [*params, limit],
        ).fetchall()
        out = []
        for row in rows:
            d = dict(zip(QUERY_COLUMNS[:-2], row[:-1], strict=True))
            # Digest and door live only in the hashed body; older records have no digest, and
            # those written before the door was recorded came through gRPC.
            body = json.loads(row[-1])
            d["model_digest"] = body.get("model_digest", "")
            d["interface"] = body.get("interface", "grpc")
            d["subject"] = d["subject"] if d["subject"] is not None else "(erased)"
            out.append(d)
        return out

    def usage(self, flt: QueryFilter) -> list[UsageRow]:
        where, params = self._where(flt)
        join = ""
        if flt.subject_pseudonym is not None:
            join = " JOIN subject_links l ON l.record_id = r.record_id"
        rows = self._x(
            "SELECT r.department, r.model, r.purpose, r.outcome, COUNT(*), "
            "COALESCE(SUM(r.prompt_tokens), 0), COALESCE(SUM(r.completion_tokens), 0) "
            f"FROM records r{join}{where} GROUP BY r.department, r.model, r.purpose, r.outcome "
            "ORDER BY r.department, r.model, r.purpose, r.outcome",
            params,
        ).fetchall()
        return [UsageRow(d, m, p, o, int(n), int(pt), int(ct)) for d, m, p, o, n, pt, ct in rows]

    def close(self) -> None:
        self._conn.close()


def schema(id_column: str) -> list[str]:
    """The ledger's tables; `id_column` is the backend's auto-increment primary key."""
    return [
        f"""CREATE TABLE IF NOT EXISTS records (
            id {id_column},
            source TEXT NOT NULL,
            chain_index BIGINT NOT NULL,
            record_id TEXT NOT NULL UNIQUE,
            sequence BIGINT NOT NULL,
            time_ns BIGINT NOT NULL,
            department TEXT NOT NULL,
            model TEXT NOT NULL,
            purpose TEXT NOT NULL,
            outcome TEXT NOT NULL,
            status_code TEXT NOT NULL,
            prompt_tokens BIGINT NOT NULL,
            completion_tokens BIGINT NOT NULL,
            body TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS records_chain ON records (source, chain_index)",
        "CREATE INDEX IF NOT EXISTS records_time ON records (time_ns)",
        """CREATE TABLE IF NOT EXISTS heads (
            source TEXT PRIMARY KEY, chain_index BIGINT NOT NULL, hash TEXT NOT NULL)""",
        # Erasable side tables: nothing in them is hashed into the chain.
        """CREATE TABLE IF NOT EXISTS subject_links (
            record_id TEXT PRIMARY KEY, subject_pseudonym TEXT NOT NULL, salt TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS subject_links_p ON subject_links (subject_pseudonym)",
        """CREATE TABLE IF NOT EXISTS contents (
            record_id TEXT PRIMARY KEY, prompt_text TEXT, answer_text TEXT)""",
        f"""CREATE TABLE IF NOT EXISTS checkpoints (
            id {id_column}, created_ns BIGINT NOT NULL, payload TEXT NOT NULL,
            signature TEXT NOT NULL, public_key TEXT NOT NULL)""",
        *retention_schema(id_column),
    ]
