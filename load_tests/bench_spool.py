"""Audit spool throughput: appends/s with group commit vs one fsync per record, as a table.

Run: `.venv/bin/python -m load_tests.bench_spool [--records N] [--dir DIR]`. Use a directory on
the disk the spool will live on (tmpfs makes fsync free and the comparison meaningless).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from audit.record import AuditRecord, Outcome
from audit.spool import AuditSpool


def _record(n: int) -> AuditRecord:
    return AuditRecord(
        record_id=f"bench-{n}",
        time_ns=time.time_ns(),
        subject_pseudonym="0" * 64,
        department="radiology",
        outcome=Outcome.OK,
        status_code="OK",
        model="llama-3.1-8b",
        prompt_hmac="a" * 64,
        answer_hmac="b" * 64,
        prompt_tokens=120,
        completion_tokens=300,
    )


async def _run(path: Path, concurrency: int, records: int, max_batch: int) -> tuple[float, int]:
    spool = AuditSpool(path, quota_bytes=1 << 40, source="bench", max_batch=max_batch)
    counter = iter(range(records))

    async def appender() -> None:
        for n in counter:  # shared iterator: appenders split the records between them
            await spool.append(_record(n))

    started = time.perf_counter()
    await asyncio.gather(*(appender() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    commits = spool.commits
    await spool.close()
    return records / elapsed, commits


async def bench(directory: Path, records: int, concurrencies: list[int]) -> list[str]:
    lines = [f"{'appenders':>9}  {'mode':<16} {'appends/s':>10} {'fsyncs':>7} {'per fsync':>9}"]
    for concurrency in concurrencies:
        for mode, max_batch in (("one fsync/record", 1), ("group commit", 1024)):
            path = directory / f"spool-{concurrency}-{max_batch}.db"
            rate, commits = await _run(path, concurrency, records, max_batch)
            lines.append(
                f"{concurrency:>9}  {mode:<16} {rate:>10.0f} {commits:>7} {records / commits:>9.1f}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--dir", type=Path, default=None, help="where to put the spool files")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for line in asyncio.run(bench(Path(tmp), args.records, args.concurrency)):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
