"""The ledger's retention SQL: a chain's prefix streamed and pruned, text expired, legal holds."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from audit.checkpoint import Checkpoint
from audit.ledger_reads import SqlAccess


@dataclass(frozen=True, slots=True)
class Hold:
    """A legal hold: `kind` is "subject" (value: pseudonym) or "department" (value: its name)."""

    id: int
    kind: str
    value: str
    reason: str
    placed_ns: int
    lifted_ns: int | None
    lifted_reason: str | None


def retention_schema(id_column: str) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS retention_checkpoints (
            id {id_column}, created_ns BIGINT NOT NULL, payload TEXT NOT NULL,
            signature TEXT NOT NULL, public_key TEXT NOT NULL)""",
        # Holds are never deleted: lifting one stamps it, so the table is its own history.
        f"""CREATE TABLE IF NOT EXISTS legal_holds (
            id {id_column}, kind TEXT NOT NULL, value TEXT NOT NULL, reason TEXT NOT NULL,
            placed_ns BIGINT NOT NULL, lifted_ns BIGINT, lifted_reason TEXT)""",
    ]


class RetentionStore(SqlAccess):
    """Mixed into `SqlLedger`: the reads and deletions retention needs, each source on its own."""

    def _transaction(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _scrub(self) -> None:
        raise NotImplementedError

    def chain_rows(self, source: str) -> Generator[tuple[Any, ...], None, None]:
        """(chain_index, record_id, body, prev_hash, hash, pseudonym) of a chain, oldest first."""
        return self._stream(
            "SELECT r.chain_index, r.record_id, r.body, r.prev_hash, r.hash, l.subject_pseudonym "
            "FROM records r LEFT JOIN subject_links l ON l.record_id = r.record_id "
            "WHERE r.source = ? ORDER BY r.chain_index, r.id",
            (source,),
        )

    def text_rows(self, source: str) -> Generator[tuple[Any, ...], None, None]:
        """(chain_index, record_id, body, pseudonym, salt, prompt, answer) of kept text."""
        return self._stream(
            "SELECT r.chain_index, r.record_id, r.body, l.subject_pseudonym, l.salt, "
            "c.prompt_text, c.answer_text FROM contents c "
            "JOIN records r ON r.record_id = c.record_id "
            "LEFT JOIN subject_links l ON l.record_id = c.record_id "
            "WHERE r.source = ? ORDER BY r.chain_index",
            (source,),
        )

    def prune_prefix(self, source: str, cut_index: int, checkpoint: Checkpoint) -> int:
        """Delete a chain's records up to `cut_index` with their side rows, store the statement."""
        pick = "SELECT record_id FROM records WHERE source = ? AND chain_index <= ?"
        with self._transaction():
            for table in ("contents", "subject_links"):
                self._x(f"DELETE FROM {table} WHERE record_id IN ({pick})", (source, cut_index))
            n: int = self._x(
                "DELETE FROM records WHERE source = ? AND chain_index <= ?", (source, cut_index)
            ).rowcount
            self._add_retention_checkpoint(checkpoint)
        self._scrub()
        return n

    def expire_text(self, record_ids: Sequence[str], checkpoint: Checkpoint) -> int:
        """Delete whole `contents` rows and store the statement that accounts for them."""
        n = 0
        with self._transaction():
            for start in range(0, len(record_ids), 500):
                chunk = list(record_ids[start : start + 500])
                marks = ", ".join("?" for _ in chunk)
                n += self._x(f"DELETE FROM contents WHERE record_id IN ({marks})", chunk).rowcount
            self._add_retention_checkpoint(checkpoint)
        self._scrub()
        return n

    def _add_retention_checkpoint(self, cp: Checkpoint) -> None:
        self._x(
            "INSERT INTO retention_checkpoints (created_ns, payload, signature, public_key) "
            "VALUES (?, ?, ?, ?)",
            (cp.created_ns, cp.payload, cp.signature, cp.public_key),
        )

    def iter_retention_checkpoints(self) -> Iterator[Checkpoint]:
        """Retention statements in the order they were stored."""
        for row in self._stream(
            "SELECT created_ns, payload, signature, public_key FROM retention_checkpoints "
            "ORDER BY id"
        ):
            created = row[0] if isinstance(row[0], int) else -1  # verify reports the mismatch
            yield Checkpoint(created, row[1], row[2], row[3])

    def add_hold(self, kind: str, value: str, reason: str) -> int:
        self._x(
            "INSERT INTO legal_holds (kind, value, reason, placed_ns) VALUES (?, ?, ?, ?)",
            (kind, value, reason, time.time_ns()),
        )
        return len(self.holds())

    def lift_hold(self, kind: str, value: str, reason: str) -> int:
        """Mark the active holds on (kind, value) lifted; returns how many were."""
        n: int = self._x(
            "UPDATE legal_holds SET lifted_ns = ?, lifted_reason = ? "
            "WHERE kind = ? AND value = ? AND lifted_ns IS NULL",
            (time.time_ns(), reason, kind, value),
        ).rowcount
        return n

    def holds(self, include_lifted: bool = False) -> list[Hold]:
        sql = "SELECT id, kind, value, reason, placed_ns, lifted_ns, lifted_reason FROM legal_holds"
        if not include_lifted:
            sql += " WHERE lifted_ns IS NULL"
        return [Hold(*row) for row in self._x(sql + " ORDER BY id").fetchall()]
