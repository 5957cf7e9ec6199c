"""The gateway's durable local audit spool: SQLite in WAL mode, fsync per group commit."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge

from audit.record import AuditRecord

log = logging.getLogger(__name__)

SPOOL_APPENDS = Counter(
    "llmgw_audit_spool_appends_total", "Audit records made durable in the spool"
)
SPOOL_COMMITS = Counter("llmgw_audit_spool_commits_total", "Spool commits (one fsync each)")
SPOOL_PENDING_BYTES = Gauge("llmgw_audit_spool_pending_bytes", "Undelivered bytes in the spool")
SPOOL_FULL_REFUSALS = Counter(
    "llmgw_audit_spool_full_total", "Appends refused: spool quota reached"
)
SPOOL_ANONYMOUS_REFUSALS = Counter(
    "llmgw_audit_spool_anonymous_full_total",
    "Records without an authenticated subject refused: their share of the quota is used up",
)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: never reused after delivery
    record_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    size INTEGER NOT NULL,
    anonymous INTEGER NOT NULL DEFAULT 0  -- 1: no authenticated subject (counts in its share)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class SpoolFull(Exception):
    """The spool reached its quota: the gateway must refuse requests whose audit is required."""


class _Append:
    __slots__ = ("anonymous", "future", "loop", "record")

    def __init__(
        self, record: AuditRecord, loop: asyncio.AbstractEventLoop, anonymous: bool
    ) -> None:
        self.record = record
        self.anonymous = anonymous
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()


class _Call:
    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        self.fn = fn
        self.future: Future[Any] = Future()


class AuditSpool:
    """Append-only local store of audit records not yet acknowledged by the audit store.

    Contract: `await append(record)` returns only after the record is committed with fsync
    (WAL, synchronous=FULL), so it survives a SIGKILL or power loss from then on. One writer
    thread owns the database; appends that arrive while it is committing are committed
    together (group commit: one fsync for the group). The spool assigns `source` and a
    strictly increasing `sequence`. Delivered records are deleted; `is_full` is true once the
    undelivered bytes reach `quota_bytes`, and `append` then raises `SpoolFull`. Records appended
    as `anonymous` (no authenticated subject: anyone can cause them) may hold at most
    `anonymous_share` of the quota, so that they can never fill the spool for authenticated
    callers.
    `max_batch=1` turns group commit off (one fsync per record; for the benchmark).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        quota_bytes: int,
        source: str,
        max_batch: int = 1024,
        anonymous_share: float = 0.1,
    ) -> None:
        if quota_bytes <= 0:
            raise ValueError("audit spool quota_bytes must be positive")
        if not 0.0 <= anonymous_share <= 1.0:
            raise ValueError("audit spool anonymous_share must be between 0 and 1")
        if not source:
            raise ValueError("audit spool source (the gateway replica id) must not be empty")
        self.path = Path(path)
        self.source = source
        self.quota_bytes = quota_bytes
        self.anonymous_quota_bytes = int(quota_bytes * anonymous_share)
        self.max_batch = max_batch
        self.commits = 0
        self.appends = 0
        self._queue: queue.SimpleQueue[_Append | _Call | None] = queue.SimpleQueue()
        self._listeners: list[Callable[[], None]] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(spool)")}
        if "anonymous" not in columns:  # a spool written by an older version
            self._conn.execute("ALTER TABLE spool ADD COLUMN anonymous INTEGER NOT NULL DEFAULT 0")
        try:
            self._check_source()
        except ValueError:
            self._conn.close()
            raise
        row = self._conn.execute(
            "SELECT COALESCE(SUM(size), 0), COALESCE(SUM(size * anonymous), 0) FROM spool"
        ).fetchone()
        self._pending_bytes: int = row[0]
        self._anonymous_bytes: int = row[1]
        SPOOL_PENDING_BYTES.set(self._pending_bytes)
        self._thread = threading.Thread(target=self._run, name="audit-spool-writer", daemon=True)
        self._thread.start()

    def _check_source(self) -> None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'source'").fetchone()
        if row is None:
            self._conn.execute("INSERT INTO meta VALUES ('source', ?)", (self.source,))
        elif row[0] != self.source:
            raise ValueError(
                f"{self.path}: spool belongs to source {row[0]!r}, not {self.source!r}; "
                "give each gateway replica its own spool file"
            )

    @property
    def is_full(self) -> bool:
        return self._pending_bytes >= self.quota_bytes

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from the writer thread) after each commit that added records."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        self._listeners.remove(callback)

    @property
    def anonymous_bytes(self) -> int:
        return self._anonymous_bytes

    async def append(self, record: AuditRecord, *, anonymous: bool = False) -> None:
        """Make `record` durable; raises SpoolFull when the quota (or, for an `anonymous`
        record, the anonymous share of it) is reached."""
        if self.is_full:
            SPOOL_FULL_REFUSALS.inc()
            raise SpoolFull(
                f"audit spool {self.path} holds {self._pending_bytes} undelivered bytes "
                f"(quota {self.quota_bytes}); the audit store must catch up first"
            )
        if anonymous and self._anonymous_bytes >= self.anonymous_quota_bytes:
            SPOOL_ANONYMOUS_REFUSALS.inc()
            raise SpoolFull(
                f"audit spool {self.path} holds {self._anonymous_bytes} undelivered bytes of "
                f"unauthenticated calls (their share: {self.anonymous_quota_bytes})"
            )
        item = _Append(record, asyncio.get_running_loop(), anonymous)
        self._queue.put(item)
        # A cancelled wait cancels only `item.future`: the writer commits every queued record
        # regardless, so a cancelled request still gets its record written.
        await item.future

    async def pending(self, limit: int) -> list[AuditRecord]:
        """Up to `limit` undelivered records, oldest first, with source and sequence set."""
        rows: list[tuple[int, str]] = await self._call(
            lambda c: c.execute(
                "SELECT sequence, body FROM spool ORDER BY sequence LIMIT ?", (limit,)
            ).fetchall()
        )
        return [
            replace(AuditRecord.from_dict(json.loads(body)), source=self.source, sequence=seq)
            for seq, body in rows
        ]

    async def pending_count(self) -> int:
        count: int = await self._call(
            lambda c: c.execute("SELECT COUNT(*) FROM spool").fetchone()[0]
        )
        return count

    async def mark_delivered(self, sequences: Sequence[int]) -> None:
        """Forget records the audit store acknowledged."""
        seqs = list(sequences)

        def delete(c: sqlite3.Connection) -> None:
            c.execute("BEGIN IMMEDIATE")
            freed = anonymous = 0
            for seq in seqs:
                row = c.execute(
                    "DELETE FROM spool WHERE sequence = ? RETURNING size, anonymous", (seq,)
                )
                got = row.fetchone()
                if got:
                    freed += got[0]
                    anonymous += got[0] * got[1]
            c.execute("COMMIT")
            self._pending_bytes -= freed
            self._anonymous_bytes -= anonymous
            SPOOL_PENDING_BYTES.set(self._pending_bytes)

        await self._call(delete)

    async def close(self) -> None:
        """Finish queued work, stop the writer thread and close the database."""
        if not self._thread.is_alive():
            return
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        self._conn.close()

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        item = _Call(fn)
        self._queue.put(item)
        result: T = await asyncio.wrap_future(item.future)
        return result

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            batch = [first]
            # Everything that queued up while the previous fsync ran joins this commit.
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            appends = [i for i in batch if isinstance(i, _Append)]
            if appends:
                self._commit(appends)
            for item in batch:
                if item is None:
                    stop = True
                elif isinstance(item, _Call) and item.future.set_running_or_notify_cancel():
                    try:
                        item.future.set_result(item.fn(self._conn))
                    except Exception as err:  # handed to the awaiting coroutine
                        if self._conn.in_transaction:
                            self._conn.execute("ROLLBACK")
                        item.future.set_exception(err)

    def _commit(self, appends: list[_Append]) -> None:
        added = anonymous = 0
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for item in appends:
                body = json.dumps(item.record.to_dict(), separators=(",", ":"))
                # A record appended twice (a retried request) is stored once.
                cur = self._conn.execute(
                    "INSERT INTO spool (record_id, body, size, anonymous) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(record_id) DO NOTHING",
                    (item.record.record_id, body, len(body), int(item.anonymous)),
                )
                if cur.rowcount:
                    added += len(body)
                    anonymous += len(body) if item.anonymous else 0
            self._conn.execute("COMMIT")
        except sqlite3.Error as err:
            log.error("audit spool commit failed: %s", err)
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            _settle(appends, err)
            return
        self.commits += 1
        self.appends += len(appends)
        self._pending_bytes += added
        self._anonymous_bytes += anonymous
        SPOOL_COMMITS.inc()
        SPOOL_APPENDS.inc(len(appends))
        SPOOL_PENDING_BYTES.set(self._pending_bytes)
        _settle(appends, None)
        for callback in list(self._listeners):
            try:
                callback()
            except Exception:  # a listener must never stop the writer thread
                log.exception("audit spool listener failed")


def _settle(appends: list[_Append], error: BaseException | None) -> None:
    """Resolve the appenders' futures (from the writer thread) after a commit.

    One `call_soon_threadsafe` per event loop and commit, not one per record: each wakes the
    loop through its self-pipe, and at high concurrency a commit holds dozens of records.
    """
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for item in appends:
        by_loop.setdefault(item.loop, []).append(item.future)
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, futures, error)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            log.warning("audit spool: %d appenders' event loop closed", len(futures))


def _resolve(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():  # the appender was cancelled; its record is committed all the same
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
