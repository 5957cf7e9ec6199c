"""End to end: limits enforced by gateway replicas that share one real Redis.

Every test starts its own redis-server and real gateways on 127.0.0.1:0 that trust the same dev
key and read tests/fixtures/limits_policy (one department per case), and drives them through
real gRPC channels, the way clients and a load balancer spread calls over replicas.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc
from redis.asyncio import Redis

from audit.record import AuditRecord, Outcome
from common.tokenizer import count_tokens
from gateway.auth.devkeys import dev_auth_settings
from gateway.limits.settings import LimitsSettings
from gateway.process.server import GatewayHandle
from gateway.settings import GatewaySettings
from policy.settings import PolicySettings
from tests.helpers import Metadata, StartGateway, StartWorker, bearer, wait_until
from tests.support.redis_server import BUSY_SCRIPT, RedisServer
from tests.support.rpc_status import rich_status
from workers.server import WorkerHandle
from workers.sim import SimConfig

if TYPE_CHECKING:
    from llmgateway.v1.gateway_pb2_grpc import InferenceServiceAsyncStub as Stub

pytestmark = pytest.mark.integration

LIMITS_POLICY = Path(__file__).resolve().parents[2] / "fixtures" / "limits_policy"
MODEL = "llama-3.1-8b-instruct"
PROMPT = "Summarise the ward round"
# The gateway estimates prompt tokens with the tokenizer the sim worker counts with.
PROMPT_TOKENS = count_tokens(PROMPT)
# Generous Redis bounds for the tests where Redis is healthy: two loaded cores must not turn a
# slow decision into a limiter outage and so into a refusal the test did not ask for.
HEALTHY_REDIS = {"decision_timeout_s": 1.0, "socket_timeout_s": 1.0, "connect_timeout_s": 1.0}
Auth = Metadata
StreamCall = grpc.aio.UnaryStreamCall[pb.GenerateStreamRequest, pb.GenerateStreamResponse]


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


@dataclass
class Replicas:
    """Gateways sharing one Redis, and one client stub per gateway."""

    gateways: list[GatewayHandle]
    stubs: list[Stub]
    channels: list[grpc.aio.Channel]

    def stub(self, i: int) -> Stub:
        """Round robin, as a load balancer spreads calls."""
        return self.stubs[i % len(self.stubs)]


StartReplicas = Callable[..., Awaitable[Replicas]]


@pytest.fixture
async def start_replicas(
    redis_server: RedisServer, start_test_gateway: StartGateway, data_dir: Path
) -> AsyncIterator[StartReplicas]:
    """Start `count` gateways on the same Redis, each with its own data dir (audit spool).

    Redis is requested first so that it outlives the gateways: their last completions reach it.
    """
    channels: list[grpc.aio.Channel] = []

    async def start(count: int, *workers: WorkerHandle, **limits: float) -> Replicas:
        gateways = []
        for i in range(count):
            settings = GatewaySettings(
                auth=dev_auth_settings(data_dir),  # the key `mint` signs with
                policy=PolicySettings(LIMITS_POLICY, reload_interval_s=0),
                limits=LimitsSettings(redis_url=redis_server.url, **limits),  # type: ignore[arg-type]
                data_dir=data_dir / f"replica{i}",
            )
            gateways.append(await start_test_gateway(*workers, settings=settings))
        opened = [grpc.aio.insecure_channel(g.target) for g in gateways]
        channels.extend(opened)
        return Replicas(
            gateways, [gateway_pb2_grpc.InferenceServiceStub(c) for c in opened], opened
        )

    yield start
    for channel in channels:
        await channel.close()


def unary(max_tokens: int = 4, client_request_id: str = "") -> pb.GenerateRequest:
    return pb.GenerateRequest(
        model=MODEL,
        prompt=PROMPT,
        sampling=pb.SamplingParams(max_tokens=max_tokens, seed=7),
        client_request_id=client_request_id,
    )


def streaming(max_tokens: int, client_request_id: str = "") -> pb.GenerateStreamRequest:
    return pb.GenerateStreamRequest.FromString(
        unary(max_tokens, client_request_id).SerializeToString()
    )


async def attempt(stub: Stub, auth: Auth) -> grpc.aio.AioRpcError | None:
    """One unary call: None if it succeeded, else the error."""
    try:
        await stub.Generate(unary(), metadata=auth, timeout=10)
    except grpc.aio.AioRpcError as err:
        return err
    return None


@dataclass(frozen=True)
class Refusal:
    """The google.rpc details a limits refusal carries."""

    retry_s: float
    subject: str
    violation: str
    reason: str
    domain: str


def refusal(err: grpc.aio.AioRpcError) -> Refusal:
    status = rich_status(err)
    retry, quota, info = (
        error_details_pb2.RetryInfo(),
        error_details_pb2.QuotaFailure(),
        error_details_pb2.ErrorInfo(),
    )
    for detail in status.details:
        for message in (retry, quota, info):
            if detail.Is(message.DESCRIPTOR):
                detail.Unpack(message)
    violation = quota.violations[0] if quota.violations else None
    return Refusal(
        retry_s=retry.retry_delay.ToNanoseconds() / 1e9,
        subject=violation.subject if violation else "",
        violation=violation.description if violation else "",
        reason=info.reason,
        domain=info.domain,
    )


def assert_limit_refusal(err: grpc.aio.AioRpcError, department: str, allowed: set[str]) -> str:
    """A RESOURCE_EXHAUSTED naming one of `allowed` consistently; returns the limit's name."""
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
    found = refusal(err)
    assert found.violation in allowed, found
    assert found.subject == f"department:{department}"
    assert found.reason == f"limits.{found.violation}" and found.domain == "llmgateway"
    assert found.retry_s > 0
    message = err.details() or ""
    assert found.violation in message and "retry in" in message
    return found.violation


async def test_three_replicas_admit_exactly_the_requests_per_minute(
    start_sim_worker: StartWorker, start_replicas: StartReplicas, mint: Callable[..., str]
) -> None:
    # rate: 12 requests/min for the department, 5 for each user (tokens refill one per 5 s and
    # one per 12 s, so a burst of a few seconds sees exactly the configured amounts).
    worker = await start_sim_worker()
    replicas = await start_replicas(3, worker, **HEALTHY_REDIS)
    auth = {u: bearer(mint(department="rate", subject=u)) for u in ("heavy", "u1", "u2", "u3")}
    started = time.monotonic()

    # One user alone, 10 concurrent calls over the three replicas: the user limit binds.
    first = await asyncio.gather(*(attempt(replicas.stub(i), auth["heavy"]) for i in range(10)))
    assert sum(e is None for e in first) == 5
    for err in filter(None, first):
        assert_limit_refusal(err, "rate", {"user.requests_per_minute"})

    # Then 50 concurrent calls from four users: the department's 7 remaining are admitted.
    users = ["u1", "u2", "u3", "heavy"]
    callers = [users[i % 4] for i in range(50)]
    second = await asyncio.gather(
        *(attempt(replicas.stub(i), auth[u]) for i, u in enumerate(callers))
    )
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"the burst took {elapsed:.1f} s; a request would have refilled"
    admitted = [u for u, e in zip(callers, second, strict=True) if e is None]
    assert len(admitted) == 12 - 5, admitted
    assert "heavy" not in admitted
    assert all(admitted.count(u) <= 5 for u in users)
    violations = {
        assert_limit_refusal(
            e, "rate", {"department.requests_per_minute", "user.requests_per_minute"}
        )
        for e in second
        if e is not None
    }
    assert "department.requests_per_minute" in violations
    # 60 calls, 5x the department's limit, spread over three replicas; exactly 12 served.
    assert worker.engine.load().active == 0
    assert len(worker.engine.received) == 12  # type: ignore[attr-defined]


async def open_stream(stub: Stub, auth: Auth, max_tokens: int) -> StreamCall:
    """Start a stream and wait for its first token, so that it holds a lease; raises if refused."""
    call = stub.GenerateStream(streaming(max_tokens), metadata=auth, timeout=10)
    first = await call.read()
    assert isinstance(first, pb.GenerateStreamResponse) and first.token_count > 0
    return call


async def drain(call: StreamCall) -> int:
    """Read a stream to its end; the completion tokens its summary reports."""
    last: pb.GenerateStreamResponse | None = None
    while isinstance(message := await call.read(), pb.GenerateStreamResponse):
        last = message
    assert last is not None and last.finish_reason == pb.FINISH_REASON_LENGTH
    return int(last.usage.completion_tokens)


async def test_concurrent_streams_are_limited_across_replicas(
    start_sim_worker: StartWorker,
    start_replicas: StartReplicas,
    mint: Callable[..., str],
    redis_client: Redis,
) -> None:
    # streams: at most 3 concurrent streams for the department, whichever replica runs them.
    slow = SimConfig(time_to_first_token_ms=5, inter_token_latency_ms=10, prefill_ms_per_token=0)
    workers = [await start_sim_worker(slow), await start_sim_worker(slow)]
    replicas = await start_replicas(3, *workers, **HEALTHY_REDIS)
    auth = bearer(mint(department="streams", subject="clerk"))
    streams_key = "llmgw:{dept:streams}:d:streams"

    def active() -> int:
        return sum(w.engine.load().active for w in workers)

    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, active())
            await asyncio.sleep(0.002)

    async def full_stream(i: int) -> int | grpc.aio.AioRpcError:
        try:
            return await drain(
                replicas.stub(i).GenerateStream(streaming(60), metadata=auth, timeout=10)
            )
        except grpc.aio.AioRpcError as err:
            return err

    sampler = asyncio.create_task(sample())
    # 12 streams at once over three replicas; each runs ~0.6 s, far longer than the burst.
    outcomes = await asyncio.gather(*(full_stream(i) for i in range(12)))
    sampler.cancel()
    served = [o for o in outcomes if isinstance(o, int)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert served == [60, 60, 60]
    assert len(refused) == 9
    for err in refused:
        assert assert_limit_refusal(err, "streams", {"department.concurrent_streams"})
        assert refusal(err).retry_s == pytest.approx(1.0)
    assert peak == 3  # never more than the limit on the GPUs, and the limit was reached
    assert await redis_client.zcard(streams_key) == 0  # every lease released at the end

    # Leases come back on cancel too: hold 3, the 4th is refused, cancel one, a new one runs.
    held = [await open_stream(replicas.stub(i), auth, 200) for i in range(3)]
    assert active() == 3 and await redis_client.zcard(streams_key) == 3
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await open_stream(replicas.stub(0), auth, 200)
    assert_limit_refusal(info.value, "streams", {"department.concurrent_streams"})
    held[1].cancel()

    async def released() -> bool:
        return int(await redis_client.zcard(streams_key)) == 2

    await wait_until(released, within=2, every=0.02)
    held[1] = await open_stream(replicas.stub(1), auth, 5)
    assert await drain(held[1]) == 5
    for call in (held[0], held[2]):
        call.cancel()
    await wait_until(lambda: active() == 0, within=2)

    async def none_left() -> bool:
        return int(await redis_client.zcard(streams_key)) == 0

    await wait_until(none_left, within=2, every=0.02)


@dataclass
class Sent:
    """What one client of the accounting test did and saw."""

    client_id: str
    mode: str
    max_tokens: int
    seen: int = 0
    code: grpc.StatusCode = grpc.StatusCode.OK
    usage: int | None = None


async def run_client(stub: Stub, auth: Auth, sent: Sent, rng: random.Random) -> None:
    """Stream, then finish, cancel after a few tokens, or run into a short deadline."""
    timeout = rng.uniform(0.08, 0.25) if sent.mode == "deadline" else 10.0
    cancel_after = rng.randint(1, 8)
    call = stub.GenerateStream(
        streaming(sent.max_tokens, sent.client_id), metadata=auth, timeout=timeout
    )
    try:
        async for message in call:
            sent.seen += message.token_count
            if message.finish_reason:
                sent.usage = message.usage.completion_tokens
            if sent.mode == "cancel" and sent.seen >= cancel_after:
                call.cancel()
                sent.code = grpc.StatusCode.CANCELLED
                return
    except grpc.aio.AioRpcError as err:
        sent.code = err.code()


async def budget_used(client: Redis, key: str) -> int:
    """Tokens charged to a day/month budget key (layout in gateway/limits/README.md)."""
    value = await client.hget(key, "u")
    assert value is not None, f"{key} has no usage field"
    return int(value)


async def test_tokens_charged_equal_tokens_generated(
    start_sim_worker: StartWorker,
    start_replicas: StartReplicas,
    mint: Callable[..., str],
    redis_client: Redis,
) -> None:
    # budget: daily token budgets and stream limits that never refuse; the test reads what they
    # hold after finished, cancelled and timed-out streams.
    config = SimConfig(time_to_first_token_ms=5, inter_token_latency_ms=4, prefill_ms_per_token=0)
    workers = [await start_sim_worker(config), await start_sim_worker(config)]
    replicas = await start_replicas(3, *workers, **HEALTHY_REDIS)
    users = ("nurse", "doctor")
    auth = {u: bearer(mint(department="budget", subject=u)) for u in users}
    rng = random.Random(20250615)
    sent = [
        Sent(f"acct-{i}", rng.choice(("finish", "cancel", "deadline")), rng.randint(10, 80))
        for i in range(30)
    ]
    await asyncio.gather(
        *(
            run_client(replicas.stub(i), auth[users[i % 2]], s, random.Random(i))
            for i, s in enumerate(sent)
        )
    )
    assert {s.mode for s in sent} == {"finish", "cancel", "deadline"}
    assert any(s.code == grpc.StatusCode.DEADLINE_EXCEEDED for s in sent)

    # Accounting and audit finish on the server after the client has gone: wait for all records.
    async def records() -> list[AuditRecord]:
        found: list[AuditRecord] = []
        for gateway in replicas.gateways:
            found += await gateway.pipeline.audit.spool.pending(1000)
        return found

    async def all_recorded() -> bool:
        return len(await records()) == len(sent)

    await wait_until(all_recorded, within=5, every=0.02)
    by_client = {r.client_request_id: r for r in await records()}
    for s in sent:
        record = by_client[s.client_id]
        assert record.prompt_tokens in (0, PROMPT_TOKENS)  # 0: stopped before the first token
        if s.code == grpc.StatusCode.OK:
            assert s.usage == record.completion_tokens == s.seen == s.max_tokens
            assert record.outcome is Outcome.OK
        elif record.outcome is Outcome.OK:
            # The caller's cancel or deadline struck after the gateway had sent the whole answer
            # (only the final status was lost): the server rightly recorded a complete answer.
            assert record.completion_tokens == s.max_tokens
        else:
            assert record.outcome in (Outcome.CANCELLED, Outcome.DEADLINE), record.status_code
            assert s.seen <= record.completion_tokens <= s.max_tokens
    generated = {
        u: sum(
            PROMPT_TOKENS + by_client[s.client_id].completion_tokens
            for i, s in enumerate(sent)
            if users[i % 2] == u
        )
        for u in users
    }
    # Every reservation (prompt + max_tokens) was reconciled to what was generated.
    tag = "llmgw:{dept:budget}"
    assert await budget_used(redis_client, f"{tag}:d:day") == sum(generated.values())
    for user in users:
        assert await budget_used(redis_client, f"{tag}:u:{user}:day") == generated[user]
        assert await redis_client.zcard(f"{tag}:u:{user}:streams") == 0
    assert await redis_client.zcard(f"{tag}:d:streams") == 0
    reservations = [key async for key in redis_client.scan_iter(match=f"{tag}:res:*")]
    assert len(reservations) == len(sent)
    assert all([await redis_client.hget(key, "held") == "0" for key in reservations])
    assert sum(w.engine.load().active for w in workers) == 0


async def test_remaining_quota_in_response_metadata(
    start_sim_worker: StartWorker, start_replicas: StartReplicas, mint: Callable[..., str]
) -> None:
    # quota: 100 requests/min for the department, 50,000 tokens a day for each user.
    replicas = await start_replicas(2, await start_sim_worker(), **HEALTHY_REDIS)
    auth = bearer(mint(department="quota", subject="clerk"))
    rpm_key = "llmgw-quota-remaining-department-requests-per-minute"
    day_key = "llmgw-quota-remaining-user-tokens-per-day"

    call = replicas.stub(0).Generate(unary(max_tokens=16), metadata=auth, timeout=10)
    response = await call
    assert response.usage.completion_tokens == 16
    first = {k: v for k, v in await call.initial_metadata() if k.startswith("llmgw-quota-")}
    assert first == {rpm_key: "99", day_key: str(50_000 - (PROMPT_TOKENS + 16))}

    # The other replica sees the same shared counters; streams carry the metadata as well.
    stream = replicas.stub(1).GenerateStream(streaming(32), metadata=auth, timeout=10)
    assert await drain(stream) == 32
    second = dict(await stream.initial_metadata())
    assert second[rpm_key] == "98"
    assert second[day_key] == str(50_000 - 2 * PROMPT_TOKENS - 16 - 32)


async def health_of(replicas: Replicas, service: str) -> list[int]:
    statuses = []
    for channel in replicas.channels:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
        statuses.append(reply.status)
    return statuses


async def test_redis_outage_fails_closed_or_open_then_recovers(
    start_sim_worker: StartWorker,
    start_replicas: StartReplicas,
    mint: Callable[..., str],
    redis_server: RedisServer,
    redis_client: Redis,
) -> None:
    replicas = await start_replicas(
        2,
        await start_sim_worker(),
        decision_timeout_s=0.2,
        socket_timeout_s=0.2,
        connect_timeout_s=0.2,
        retry_interval_s=0.2,
    )
    closed = bearer(mint(department="failclosed", subject="clerk"))
    opened = bearer(mint(department="failopen", subject="clerk"))
    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        (health_pb2.HealthCheckResponse.NOT_SERVING),
    )
    for i in range(2):
        assert await attempt(replicas.stub(i), closed) is None
        assert await attempt(replicas.stub(i), opened) is None
    assert await health_of(replicas, "llmgateway.limits") == [serving, serving]

    redis_server.stop()

    async def timed(stub: Stub, auth: Auth) -> tuple[grpc.aio.AioRpcError | None, float]:
        started = time.monotonic()
        err = await attempt(stub, auth)
        return err, time.monotonic() - started

    for _ in range(3):  # load across several retry intervals, so each probe of Redis fails too
        results = await asyncio.gather(
            *(timed(replicas.stub(i), closed) for i in range(20)),
            *(timed(replicas.stub(i), opened) for i in range(20)),
        )
        refused, degraded = results[:20], results[20:]
        for err, elapsed in refused:
            assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE
            assert elapsed < 1.0
            found = refusal(err)
            assert found.reason == "limits.unavailable" and found.retry_s > 0
            assert "rate limiter" in (err.details() or "")
        assert [err for err, _ in degraded] == [None] * 20
        await asyncio.sleep(0.25)

    async def limits_health_is(status: int) -> bool:
        return await health_of(replicas, "llmgateway.limits") == [status, status]

    await wait_until(lambda: limits_health_is(not_serving), within=3, every=0.02)
    # Degraded, not down: the gateway itself keeps serving.
    assert await health_of(replicas, "") == [serving, serving]

    redis_server.start()  # same port, empty: the limiters reconnect on their own

    async def recovered() -> bool:
        results = [await attempt(replicas.stub(i), closed) for i in range(2)]
        return results == [None, None]

    await wait_until(recovered, within=3, every=0.02)
    assert [await attempt(replicas.stub(i), opened) for i in range(2)] == [None, None]
    # The decisions are made in Redis again, not in the replicas' local fallback.
    assert await redis_client.exists("llmgw:{dept:failclosed}:d:rpm") == 1
    assert await redis_client.exists("llmgw:{dept:failopen}:d:rpm") == 1
    await wait_until(lambda: limits_health_is(serving), within=3, every=0.02)


async def test_deadline_during_admission_leaves_no_lease(
    start_sim_worker: StartWorker,
    start_replicas: StartReplicas,
    mint: Callable[..., str],
    redis_server: RedisServer,
    redis_client: Redis,
) -> None:
    replicas = await start_replicas(1, await start_sim_worker(), **HEALTHY_REDIS)
    auth = bearer(mint(department="budget", subject="nurse"))
    assert await attempt(replicas.stub(0), auth) is None  # loads the limiter's scripts
    tag = "llmgw:{dept:budget}"
    before = await budget_used(redis_client, f"{tag}:d:day")
    busy = asyncio.create_task(
        asyncio.to_thread(redis_server.command, "EVAL", BUSY_SCRIPT, "0", "300000")
    )
    await asyncio.sleep(0.05)  # the busy script runs; the next admission waits behind it
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await replicas.stub(0).Generate(unary(), metadata=auth, timeout=0.1)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await busy

    async def reservations() -> list[str]:
        return [key async for key in redis_client.scan_iter(match=f"{tag}:res:*")]

    async def admission_ran() -> bool:
        return len(await reservations()) == 2

    # The script sent before the deadline runs once Redis is free again: it is admitted.
    await wait_until(admission_ran, within=2, every=0.02)

    async def nothing_held() -> bool:
        leases = sum([await redis_client.zcard(f"{tag}:{s}:streams") for s in ("d", "u:nurse")])
        held = [await redis_client.hget(key, "held") for key in await reservations()]
        return leases == 0 and held == ["0", "0"]

    # Nobody will stream under that admission: its lease must go and its reservation be settled.
    await wait_until(nothing_held, within=2, every=0.02)
    assert await budget_used(redis_client, f"{tag}:d:day") - before <= PROMPT_TOKENS
