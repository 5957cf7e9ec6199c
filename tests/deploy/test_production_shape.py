"""The shipped production configuration, run on loopback: 2 replicas x 2 processes, end to end.

deploy/gateway.yaml is rendered with only its addresses, paths and key files replaced (mTLS on the
client ports, gRPC and the OpenAI door, with a CA made here, Redis over TLS, the PostgreSQL audit
store over TLS, 2 simulated workers over mutual TLS, JWKS from a file) and each replica runs as
`llm-gateway serve`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc
from openai.types.chat import ChatCompletion
from prometheus_client.parser import text_string_to_metric_families

from audit.ledger import Ledger, QueryFilter
from audit.pseudonym import Pseudonymizer, load_key
from audit.settings import AuditStoreSettings
from audit.store import open_ledger, serve_store
from tests.audit.conftest import postgres_dsn, postgres_server  # noqa: F401  # fixtures
from tests.deploy.loopback import (
    BIN,
    SHIPPED_CONFIG,
    SHIPPED_POLICY,
    IdentityProvider,
    Pki,
    Replica,
    render_for_loopback,
    secret_mode,
    start_replica,
    start_worker,
)
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(170)]

MODEL = "llama-3.1-8b-instruct"
REPLICAS = ("llm-gateway-0", "llm-gateway-1")
SUBJECTS = ("alice", "bob", "carol")
REQUESTS_PER_REPLICA = 12  # each on its own connection: the kernel spreads them over processes
STREAMS_AT_SIGTERM = 3  # per replica, one subject each (user.concurrent_streams allows 4)
STREAM_TOKENS = 40  # about 1 s of tokens at 25 ms each: still streaming when SIGTERM arrives


@dataclass
class Deployment:
    replicas: list[Replica]
    pki: Pki
    idp: IdentityProvider
    ledger: Ledger
    dsn: str
    key_file: Path


@pytest.fixture
async def deployment(tmp_path: Path, postgres_dsn: str) -> AsyncIterator[Deployment]:  # noqa: F811
    pki = Pki.create(tmp_path / "tls")
    shipped = yaml.safe_load(SHIPPED_CONFIG.read_text())
    idp = IdentityProvider.for_config(shipped)
    idp.write_jwks(tmp_path / "jwks.json")
    key_file = tmp_path / "audit-secret" / "pseudonym.key"
    key_file.parent.mkdir()
    key_file.write_bytes(__import__("secrets").token_bytes(32))
    secret_mode(key_file)
    redis_tls_port = free_port()
    redis = RedisServer(
        extra_args=(
            "--tls-port", str(redis_tls_port),
            "--tls-cert-file", pki.path("redis.crt"), "--tls-key-file", pki.path("redis.key"),
            "--tls-ca-cert-file", pki.path("internal-ca.crt"), "--tls-auth-clients", "yes",
        )
    )  # fmt: skip
    redis.start()
    store = await serve_store(
        AuditStoreSettings(
            keys_dir=str(tmp_path / "store-keys"),
            listen="127.0.0.1:0",
            postgres_dsn=postgres_dsn,
            checkpoint_interval_s=3600,
            tls_cert_file=pki.path("audit.crt"),
            tls_key_file=pki.path("audit.key"),
        )
    )
    workers = [await start_worker(pki, tmp_path / f"worker-{i}.log") for i in range(2)]
    tls = pki.path
    redis_query = (
        f"ssl_ca_certs={tls('internal-ca.crt')}&ssl_certfile={tls('gateway-client.crt')}"
        f"&ssl_keyfile={tls('gateway-client.key')}"
    )
    replicas: list[Replica] = []
    ledger = open_ledger(None, postgres_dsn)
    try:
        for name in REPLICAS:
            home = tmp_path / name
            config = render_for_loopback(
                shipped,
                {
                    "data_dir": str(home / "data"),
                    "server.listen": f"127.0.0.1:{free_port()}",
                    "http.listen": f"127.0.0.1:{free_port()}",
                    "auth.jwks_file": str(tmp_path / "jwks.json"),
                    "auth.mtls.server_cert_file": tls("gateway.crt"),
                    "auth.mtls.server_key_file": tls("gateway.key"),
                    "auth.mtls.client_ca_file": tls("clients-ca.crt"),
                    "policy.directory": str(SHIPPED_POLICY),
                    "routing.dns_names": [f"127.0.0.1:{port}" for _, port in workers],
                    "routing.tls.ca_file": tls("internal-ca.crt"),
                    "routing.tls.cert_file": tls("gateway-client.crt"),
                    "routing.tls.key_file": tls("gateway-client.key"),
                    "limits.redis_url": f"rediss://127.0.0.1:{redis_tls_port}/0?{redis_query}",
                    "audit.spool_path": str(home / "data" / "audit-spool.db"),
                    "audit.store_target": f"127.0.0.1:{store.port}",
                    "audit.pseudonym_key_file": str(key_file),
                    "audit.tls_ca_file": tls("internal-ca.crt"),
                    # Nothing listens there: spans are dropped, as when the collector is down.
                    "telemetry.otlp_endpoint": f"https://127.0.0.1:{free_port()}",
                    "telemetry.ca_file": tls("internal-ca.crt"),
                    "metrics.listen": f"127.0.0.1:{free_port()}",
                },
            )
            assert config["production"] is True and config["server"]["processes"] == 2
            assert config["auth"]["mtls"]["require_client_cert"] is True
            replicas.append(await start_replica(name, config, home))
        await asyncio.gather(*(r.wait_ready() for r in replicas))
        yield Deployment(replicas, pki, idp, ledger, postgres_dsn, key_file)
    finally:
        for replica in replicas:
            if replica.process.returncode is None:
                replica.process.kill()
                await replica.process.wait()
        for process, _ in workers:
            process.terminate()
            await process.wait()
        await store.stop(grace=0)
        redis.close()
        ledger.close()


def channel(deployment: Deployment, replica: Replica) -> grpc.aio.Channel:
    """A new mTLS connection (no subchannel shared with other channels of this process)."""
    root, key, cert = deployment.pki.client_credentials()
    return grpc.aio.secure_channel(
        f"127.0.0.1:{replica.port}",
        grpc.ssl_channel_credentials(root, key, cert),
        options=[("grpc.use_local_subchannel_pool", 1)],
    )


def request(max_tokens: int) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        model=MODEL,
        prompt="Summarise the ward round",
        classification="internal",
        sampling=pb.SamplingParams(max_tokens=max_tokens),
    )


def bearer(deployment: Deployment, subject: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {deployment.idp.token(subject)}"),)


async def generate(deployment: Deployment, replica: Replica, subject: str) -> None:
    async with channel(deployment, replica) as ch:
        stub = gateway_pb2_grpc.InferenceServiceStub(ch)
        await stub.Generate(request(4), metadata=bearer(deployment, subject), timeout=30)


async def openai_chat(
    deployment: Deployment, replica: Replica, subject: str, *, with_certificate: bool
) -> ChatCompletion:
    """One chat completion through the replica's OpenAI door with the official client."""
    assert replica.http_port is not None
    context = ssl.create_default_context(cafile=deployment.pki.path("internal-ca.crt"))
    if with_certificate:
        context.load_cert_chain(deployment.pki.path("alice.crt"), deployment.pki.path("alice.key"))
    async with (
        openai.DefaultAsyncHttpxClient(verify=context) as http,
        openai.AsyncOpenAI(
            base_url=f"https://127.0.0.1:{replica.http_port}/v1",
            api_key=deployment.idp.token(subject),
            http_client=http,
            max_retries=0,
            timeout=30,
        ) as client,
    ):
        return await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Summarise the ward round"}],
            max_tokens=4,
            extra_body={"classification": "internal"},
        )


async def stream_through_sigterm(
    deployment: Deployment, replica: Replica, subject: str, started: asyncio.Event
) -> int:
    """A stream that is in flight when SIGTERM arrives; the number of chunks it received."""
    chunks = 0
    async with channel(deployment, replica) as ch:
        stub = gateway_pb2_grpc.InferenceServiceStub(ch)
        streaming = pb.GenerateStreamRequest.FromString(request(STREAM_TOKENS).SerializeToString())
        async for _ in stub.GenerateStream(
            streaming, metadata=bearer(deployment, subject), timeout=60
        ):
            chunks += 1
            started.set()
    return chunks


def metric_sum(text: str, name: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


async def ledger_count(ledger: Ledger, expected: int, within: float = 30.0) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (count := ledger.count()) < expected and loop.time() < deadline:
        await asyncio.sleep(0.2)
    return count


def log_entries(replica: Replica) -> Iterator[dict[str, Any]]:
    for line in replica.log_lines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"{replica.name}: a log line is not JSON: {line!r}") from None
        assert isinstance(entry, dict), line
        yield entry


async def test_production_shape_on_loopback(deployment: Deployment) -> None:
    replicas = deployment.replicas
    # Probes on the plaintext port; gRPC health through mutual TLS on the client port.
    for replica in replicas:
        assert replica.http("/healthz")[0] == 200
        assert replica.http("/readyz")[0] == 200
        async with channel(deployment, replica) as ch:
            health = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING

    # Requests over new connections, every subject on every replica. The kernel spreads new
    # connections over a replica's processes (SO_REUSEPORT): send further rounds, at most three
    # in all, until every process has served alice, so the checks below do not hang on chance.
    sent: Counter[str] = Counter()
    by_subject: Counter[str] = Counter()
    expected_sources = {f"{name}-p{i}" for name in REPLICAS for i in range(2)}
    pseudonymize = Pseudonymizer(load_key(deployment.key_file))
    alice = pseudonymize("alice")
    for _round in range(3):
        for i in range(REQUESTS_PER_REPLICA):
            subject = SUBJECTS[i % len(SUBJECTS)]
            await asyncio.gather(*(generate(deployment, r, subject) for r in replicas))
            by_subject[subject] += len(replicas)
            sent.update(r.name for r in replicas)
        total = sum(sent.values())
        assert await ledger_count(deployment.ledger, total) == total
        records = deployment.ledger.query(QueryFilter())
        if {r["source"] for r in records if r["subject"] == alice} == expected_sources:
            break

    # Every process of every replica served some and wrote its own chain.
    sources = set(deployment.ledger.sources())
    assert sources == expected_sources

    # One pseudonym per subject, whichever of the 4 processes served them.
    assert Counter(r["subject"] for r in records) == {
        pseudonymize(s): n for s, n in by_subject.items()
    }
    assert len({r["source"] for r in records if r["subject"] == alice}) == 4

    # Each replica's one metrics endpoint counts what all its processes served.
    for replica in replicas:
        status, text = replica.http("/metrics")
        assert status == 200
        assert metric_sum(text, "llmgw_audit_spool_appends_total") == sent[replica.name]
        assert metric_sum(text, "llmgw_process_serving") == 2

    # Erasure by subject reaches every record of alice, whoever wrote it.
    erased = await asyncio.to_thread(
        subprocess.run,
        [str(BIN / "llm-audit"), "erase", "--postgres", deployment.dsn, "--subject", "alice",
         "--pseudonym-key", str(deployment.key_file)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert f"of {by_subject['alice']} record(s)" in erased.stdout
    after = deployment.ledger.query(QueryFilter())
    assert alice not in {r["subject"] for r in after}
    assert sum(r["subject"] == "(erased)" for r in after) == by_subject["alice"]

    # The OpenAI door of each replica, under the same mutual TLS: the official client gets an
    # answer with a certificate from the clients' CA, and no TLS session without one.
    for replica in replicas:
        answer = await openai_chat(deployment, replica, "carol", with_certificate=True)
        assert answer.choices[0].message.content and answer.usage is not None
        with pytest.raises(openai.APIConnectionError):
            await openai_chat(deployment, replica, "carol", with_certificate=False)
    total += len(replicas)

    # SIGTERM with streams in flight: every process drains, nothing lost.
    streams = []
    for replica in replicas:
        for subject in ("dave", "erin", "frank")[:STREAMS_AT_SIGTERM]:
            started = asyncio.Event()
            task = asyncio.create_task(
                stream_through_sigterm(deployment, replica, subject, started)
            )
            streams.append((task, started))
    await asyncio.wait_for(asyncio.gather(*(s.wait() for _, s in streams)), 30)
    codes = await asyncio.gather(*(r.terminate() for r in replicas))
    chunks = await asyncio.gather(*(task for task, _ in streams))
    assert codes == [0, 0]
    assert all(n >= STREAM_TOKENS // 4 for n in chunks), chunks
    total += len(streams)
    assert await ledger_count(deployment.ledger, total) == total

    # Every process logged, one JSON line per event.
    for replica in replicas:
        entries = list(log_entries(replica))
        listening = Counter(
            (e["process"], e["pid"])
            for e in entries
            if e["message"].startswith("gateway listening")
        )
        assert sorted(p for p, _ in listening) == ["gw-0", "gw-1"], listening
        assert set(listening.values()) == {1}
        stopped = Counter(
            (e["process"], e["pid"]) for e in entries if e["message"] == "gateway stopped"
        )
        assert stopped == listening
        lines = replica.log_lines()
        assert len(lines) == len(set(lines)), "a log line appears twice"
