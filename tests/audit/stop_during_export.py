"""Stop the audit store (grace 0) while large Exports are in flight, ROUNDS times, then say ok.

Run as a child process by `test_store_stop_during_export.py`: before the ledger thread, a stop
closed the SQLite connection under an append still running in its thread, and this crashed the
process (SIGSEGV) within a few rounds. `python -m tests.audit.stop_during_export ROUNDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from audit.otlp import export_request
from audit.record import AuditRecord, Outcome
from audit.settings import AuditStoreSettings
from audit.store import serve_store
from tests.support.ports import free_port

BATCH = 800  # records per Export: large enough that appends are running when the stop comes


def _record(n: int) -> AuditRecord:
    return AuditRecord(
        record_id=f"r{n}", time_ns=1_767_225_600_000_000_000 + n, subject_pseudonym="p",
        department="d", outcome=Outcome.OK, status_code="OK", source="gw", sequence=n,
        model="m", purpose="care", prompt_tokens=1, completion_tokens=1,
    )  # fmt: skip


async def _round(i: int, base: Path) -> None:
    directory = Path(tempfile.mkdtemp(dir=base))
    port = free_port()
    store = await serve_store(
        AuditStoreSettings(
            keys_dir=str(directory / "keys"),
            listen=f"127.0.0.1:{port}",
            db_path=str(directory / "ledger.db"),
        )
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]

        async def send(k: int) -> None:
            first = (i * 10 + k) * BATCH
            request = export_request([_record(first + j) for j in range(BATCH)], "gw")
            with contextlib.suppress(grpc.aio.AioRpcError):  # cut short by the stop, as meant
                await stub.Export(request, timeout=5)

        sends = [asyncio.create_task(send(k)) for k in range(6)]
        await asyncio.sleep(0.02 + (i % 5) * 0.01)
        await store.stop(grace=0)
        await asyncio.gather(*sends)


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as base:
        for i in range(rounds):
            await _round(i, Path(base))
    print(f"ok {rounds}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
