"""`python -m load_tests soak`: steady open-loop load on a real stack while faults strike; then
the invariants: every answer audited once, tokens charged = tokens delivered, no lease leaked,
gateway memory stable. Prints a table; exit status 1 if any invariant fails.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import redis
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc

from gateway.auth.devkeys import mint_dev_token
from load_tests.soak_stack import DEPARTMENT, Stack, rss_bytes, start_stack, wait_serving

MODEL = "llama-3.1-8b-instruct"
DRAIN_S = 120.0  # how long the audit spool may take to reach the store once faults stop
# How long completions that failed during the last fault may take to land: the gateway retries
# them every limits.retry_interval_s (1 s). Far below limits.lease_ttl_s (30 s), so a lease that
# is really leaked is still there when the check gives up, not expired away.
SETTLE_S = 10.0


@dataclass
class Call:
    """What the client saw of one request."""

    code: grpc.StatusCode = grpc.StatusCode.OK
    request_id: str = ""
    tokens: int = 0  # usage.total_tokens of the final message (answered calls)


@dataclass
class Soak:
    """The state of one run: calls, faults injected, memory samples."""

    stack: Stack
    seconds: float
    rate: float
    rng: random.Random
    calls: list[Call] = field(default_factory=list)
    faults: list[tuple[float, str]] = field(default_factory=list)
    memory: list[tuple[float, int]] = field(default_factory=list)
    started: float = 0.0


async def _one_call(
    stub: gateway_pb2_grpc.InferenceServiceAsyncStub, soak: Soak, token: str
) -> None:
    call = Call()
    soak.calls.append(call)
    request = pb.GenerateStreamRequest(
        model=MODEL,
        prompt="summarise the ward round " * soak.rng.randint(1, 8),
        sampling=pb.SamplingParams(max_tokens=soak.rng.randint(4, 32)),
    )
    try:
        async for message in stub.GenerateStream(
            request, metadata=(("authorization", f"Bearer {token}"),), timeout=30
        ):
            call.request_id = message.request_id or call.request_id
            if message.HasField("usage"):
                call.tokens = message.usage.total_tokens
    except grpc.aio.AioRpcError as err:
        call.code = err.code()


async def _load(soak: Soak, token: str) -> None:
    """Open loop: call i starts at i / rate whatever the earlier calls are doing."""
    tasks: set[asyncio.Task[None]] = set()
    async with grpc.aio.insecure_channel(soak.stack.target) as channel:
        stub: gateway_pb2_grpc.InferenceServiceAsyncStub = gateway_pb2_grpc.InferenceServiceStub(
            channel
        )
        index = 0
        while (due := soak.started + index / soak.rate) < soak.started + soak.seconds:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            task = asyncio.create_task(_one_call(stub, soak, token))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            index += 1
        await asyncio.gather(*tasks)


async def _faults(soak: Soak, every_s: tuple[float, float]) -> None:
    """At random times: kill -9 and restart a worker, pause Redis, stop and restart the store."""
    stack, rng = soak.stack, soak.rng
    kinds = ["worker", "redis", "store"]
    rng.shuffle(kinds)  # over a short run, each kind still comes once before any repeats
    index = 0
    while True:
        await asyncio.sleep(rng.uniform(*every_s))
        kind = kinds[index % len(kinds)] if index < len(kinds) else rng.choice(kinds)
        index += 1
        at = time.monotonic() - soak.started
        if kind == "worker":
            worker = rng.choice(stack.workers)
            soak.faults.append((at, f"SIGKILL {worker.name}, restart after 2 s"))
            await worker.restart(signal.SIGKILL, down_s=2.0)
        elif kind == "redis":
            pause = rng.uniform(1.0, 4.0)
            soak.faults.append((at, f"SIGSTOP redis for {pause:.1f} s"))
            stack.redis.send(signal.SIGSTOP)
            try:
                await asyncio.sleep(pause)
            finally:
                stack.redis.send(signal.SIGCONT)
        else:
            down = rng.uniform(2.0, 6.0)
            soak.faults.append((at, f"stop audit store, restart after {down:.1f} s"))
            await stack.store.restart(signal.SIGTERM, down_s=down)


async def _sample_memory(soak: Soak) -> None:
    while True:
        soak.memory.append((time.monotonic() - soak.started, rss_bytes(soak.stack.gateway.pid)))
        await asyncio.sleep(2.0)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


async def _wait_for_spool(stack: Stack) -> bool:
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline:
        with sqlite3.connect(f"file:{stack.spool}?mode=ro", uri=True) as db:
            if db.execute("SELECT COUNT(*) FROM spool").fetchone()[0] == 0:
                return True
        await asyncio.sleep(0.5)
    return False


def _audited_once(soak: Soak, drained: bool) -> Check:
    answered = [c for c in soak.calls if c.code == grpc.StatusCode.OK]
    with sqlite3.connect(f"file:{soak.stack.ledger}?mode=ro", uri=True) as db:
        counts = dict(
            db.execute("SELECT record_id, COUNT(*) FROM records GROUP BY record_id").fetchall()
        )
        tokens = dict(
            db.execute("SELECT record_id, prompt_tokens + completion_tokens FROM records")
        )
    missing = [c.request_id for c in answered if counts.get(c.request_id, 0) == 0]
    twice = [rid for rid, n in counts.items() if n > 1]
    wrong = [c.request_id for c in answered if tokens.get(c.request_id, c.tokens) != c.tokens]
    ok = drained and not missing and not twice and not wrong
    detail = (
        f"{len(answered)} answered, {len(counts)} ledger records; missing {len(missing)}, "
        f"duplicated {len(twice)}, tokens differing {len(wrong)}"
        + ("" if drained else f"; spool not drained within {DRAIN_S:.0f} s")
    )
    return Check("every answered request audited exactly once", ok, detail)


def _tokens(soak: Soak, client: redis.Redis) -> Check:
    charged = int(client.hget(f"llmgw:{{dept:{DEPARTMENT}}}:d:day", "u") or 0)
    with sqlite3.connect(f"file:{soak.stack.ledger}?mode=ro", uri=True) as db:
        delivered = db.execute(
            "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM records "
            "WHERE department = ?",
            (DEPARTMENT,),
        ).fetchone()[0]
    return Check(
        "tokens charged = tokens delivered",
        charged == delivered,
        f"limiter charged {charged}, ledger (answers and partial streams) {delivered}",
    )


def _leases(client: redis.Redis) -> Check:
    base = f"llmgw:{{dept:{DEPARTMENT}}}"
    leases = client.zcard(f"{base}:d:streams")
    # One read per key: a settled reservation may expire between the scan and the read, and
    # a key that is gone is not an open reservation.
    open_reservations = [
        key
        for key in client.scan_iter(match=f"{base}:res:*", count=1000)
        if (fields := client.hgetall(key)) and "used" not in fields
    ]
    return Check(
        "no concurrency lease leaked",
        leases == 0 and not open_reservations,
        f"{leases} leases held, {len(open_reservations)} reservations never completed"
        + "".join(
            f"; {key.rsplit(':', 1)[-1]}: {client.hgetall(key)}" for key in open_reservations[:3]
        ),
    )


async def _settled(soak: Soak, client: redis.Redis) -> tuple[Check, Check]:
    """The token and lease checks once they pass, or as they stand after SETTLE_S.

    A fault that ends with the load (Redis paused until the last second) leaves completions to
    be retried: they are late, not lost, and the check waits for them as long as that can take.
    """
    deadline = time.monotonic() + SETTLE_S
    while True:
        tokens, leases = _tokens(soak, client), _leases(client)
        if (tokens.ok and leases.ok) or time.monotonic() > deadline:
            return tokens, leases
        await asyncio.sleep(0.5)


def _memory(soak: Soak) -> Check:
    window = min(60.0, soak.seconds / 4)
    first = [rss for t, rss in soak.memory if t <= window]
    last = [rss for t, rss in soak.memory if t >= soak.seconds - window]
    if not first or not last:
        return Check("gateway memory stable", False, "not enough samples")
    a, b = statistics.median(first), statistics.median(last)
    allowed = max(10 * 2**20, 0.10 * a)  # 10 MB or 10 %, whichever is larger
    return Check(
        "gateway memory stable",
        b - a <= allowed,
        f"RSS median first {window:.0f} s {a / 2**20:.1f} MB, last {window:.0f} s "
        f"{b / 2**20:.1f} MB (allowed growth {allowed / 2**20:.1f} MB)",
    )


def render(soak: Soak, checks: list[Check]) -> str:
    codes = Counter(c.code.name for c in soak.calls)
    lines = [
        f"soak: {soak.seconds:.0f} s at {soak.rate:g} req/s, {len(soak.calls)} calls: "
        + ", ".join(f"{name} {n}" for name, n in codes.most_common()),
        "faults: " + ("; ".join(f"{t:.0f}s {what}" for t, what in soak.faults) or "none"),
        "",
        f"| {'invariant':<44} | result | detail",
        f"|{'-' * 46}|--------|-------",
    ]
    for check in checks:
        lines.append(f"| {check.name:<44} | {'PASS' if check.ok else 'FAIL':<6} | {check.detail}")
    return "\n".join(lines)


async def run_soak(
    seconds: float,
    *,
    rate: float = 20.0,
    seed: int | None = None,
    data_dir: Path | None = None,
    fault_every_s: tuple[float, float] = (8.0, 20.0),
) -> tuple[bool, str]:
    """Run the soak; (all invariants hold, the table).

    Raises ValueError for a `data_dir` that already holds state: the checks read the whole
    ledger and Redis, so a second run in one directory would count the first run's records.
    """
    if data_dir is not None and data_dir.exists() and any(data_dir.iterdir()):
        raise ValueError(
            f"--data-dir {data_dir} is not empty; the invariants are checked over everything "
            "in it: give a new or empty directory"
        )
    directory = data_dir or Path(tempfile.mkdtemp(prefix="llmgw-soak-"))
    stack = await start_stack(directory)
    try:
        token = mint_dev_token(directory, department=DEPARTMENT, subject="soak", ttl_s=86_400)
        soak = Soak(stack, seconds, rate, random.Random(seed), started=time.monotonic())
        helpers = [
            asyncio.create_task(_faults(soak, fault_every_s)),
            asyncio.create_task(_sample_memory(soak)),
        ]
        try:
            await _load(soak, token)
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        stack.redis.send(signal.SIGCONT)
        for component in stack.components:  # a fault cut short by the end of the load
            if component.process is None or component.process.returncode is not None:
                await component.start()
        await wait_serving(stack.target)
        drained = await _wait_for_spool(stack)
        client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
        try:
            tokens, leases = await _settled(soak, client)
            checks = [_audited_once(soak, drained), tokens, leases, _memory(soak)]
        finally:
            client.close()
        table = render(soak, checks) + f"\nstate and logs: {directory}"
        return all(c.ok for c in checks), table
    finally:
        await stack.close()
