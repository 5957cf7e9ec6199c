"""The residency guard: allowlisted networks and names, resolution, TLS rules, target forms."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Mapping, Sequence

import pytest
from prometheus_client import REGISTRY

from common.egress import EgressGuard, ResidencySettings, ResidencyViolation, Resolver
from common.settings import read


def fake_dns(table: Mapping[str, Sequence[str]]) -> Resolver:
    """A resolver answering from `table`, and failing like getaddrinfo for anything else."""

    def resolve(host: str) -> Sequence[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return resolve


DNS = fake_dns(
    {
        "worker-1.gpu.region.example": ["10.20.0.11"],
        "leaky.gpu.region.example": ["10.20.0.12", "203.0.113.7"],
        "abroad.gpu.region.example": ["198.51.100.4"],
        "redis.region.example": ["10.30.0.5"],
        "collector.svc.cluster.local": ["10.40.0.9"],
        "cdn.example.com": ["10.20.0.99"],
        "loop.region.example": ["127.0.0.1", "::1"],
    }
)


def guard(**settings: object) -> EgressGuard:
    data: dict[str, object] = {
        "allowed_networks": ["10.0.0.0/8", "fd00::/8"],
        "allowed_host_suffixes": ["region.example", ".svc.cluster.local"],
    }
    data.update(settings)
    return EgressGuard(read(ResidencySettings, data, "residency"), resolver=DNS)


def refused(g: EgressGuard, target: str, *, what: str = "worker", tls: bool = True) -> str:
    with pytest.raises(ResidencyViolation) as info:
        g.check(target, what=what, tls=tls)
    return info.value.message


def test_address_outside_the_allowed_networks_is_refused_with_address_and_rule() -> None:
    message = refused(guard(), "https://203.0.113.50:4317", what="audit endpoint")
    assert message.startswith("audit endpoint 203.0.113.50:4317 refused")
    assert "residency.allowed_networks" in message
    assert "10.0.0.0/8" in message


def test_plaintext_http_off_loopback_is_refused_even_inside_the_allowlist() -> None:
    message = refused(guard(), "http://10.1.2.3:4318/v1/traces", what="OTLP endpoint")
    assert "OTLP endpoint 10.1.2.3:4318" in message
    assert "residency.allow_plaintext" in message
    guard().check("https://10.1.2.3:4318/v1/traces", what="OTLP endpoint", tls=False)


def test_redis_scheme_decides_tls_not_the_caller() -> None:
    message = refused(guard(), "redis://redis.region.example:6379/0", what="redis", tls=True)
    assert "redis redis.region.example:6379" in message and "plaintext" in message
    guard().check("rediss://redis.region.example:6380/0", what="redis", tls=False)


def test_name_under_an_allowed_suffix_that_resolves_outside_is_refused() -> None:
    message = refused(guard(), "abroad.gpu.region.example:50051")
    assert "abroad.gpu.region.example:50051" in message
    assert "resolves to 198.51.100.4" in message
    assert "residency.allowed_networks" in message


def test_every_resolved_address_is_checked_not_just_the_first() -> None:
    message = refused(guard(), "dns:///leaky.gpu.region.example:50051")
    assert "resolves to 203.0.113.7" in message


def test_name_outside_the_allowed_suffixes_is_refused_even_if_it_resolves_inside() -> None:
    message = refused(guard(), "https://cdn.example.com/jwks.json", what="JWKS URL")
    assert "JWKS URL cdn.example.com refused" in message
    assert "residency.allowed_host_suffixes" in message


def test_unresolvable_name_is_refused_with_the_real_resolver() -> None:
    g = EgressGuard(ResidencySettings(allowed_host_suffixes=("invalid",)))
    with pytest.raises(ResidencyViolation) as info:
        g.check("https://nonexistent.invalid/keys", what="JWKS URL", tls=True)
    assert "JWKS URL nonexistent.invalid" in info.value.message
    assert "does not resolve" in info.value.message


def test_loopback_is_allowed_and_may_be_plaintext_with_the_real_resolver() -> None:
    g = EgressGuard(ResidencySettings())  # the default: loopback only
    for target in ("localhost:50051", "127.0.0.1:6379", "[::1]:4317", "http://localhost:4318"):
        g.check(target, what="worker", tls=False)
    g.check("unix:///run/llm/worker.sock", what="worker", tls=False)
    g.check("unix-abstract:llm-worker", what="worker", tls=False)
    message = refused(g, "192.0.2.1:50051")
    assert "192.0.2.1:50051" in message and "plus loopback" in message


def test_literal_ip_inside_the_allowed_networks_is_accepted_with_the_real_resolver() -> None:
    g = EgressGuard(read(ResidencySettings, {"allowed_networks": ["192.0.2.0/24"]}, "residency"))
    g.check("192.0.2.10:50051", what="worker", tls=True)
    g.check("ipv4:192.0.2.10:50051,192.0.2.11:50051", what="worker", tls=True)
    message = refused(g, "ipv4:192.0.2.10:50051,198.51.100.1:50051")
    assert "198.51.100.1:50051" in message


def test_allowed_names_and_networks_are_accepted() -> None:
    g = guard()
    g.check("worker-1.gpu.region.example:50051", what="worker", tls=True)
    g.check("dns:///worker-1.gpu.region.example:50051", what="worker", tls=True)
    g.check("ipv6:[fd00::5]:50051", what="worker", tls=True)
    g.check("loop.region.example:1", what="worker", tls=False)
    g.check("postgresql://audit@10.30.0.6:5432/ledger", what="PostgreSQL", tls=True)


def test_messages_never_echo_credentials_from_urls() -> None:
    message = refused(
        guard(), "postgresql://audit:s3cret-pw@203.0.113.9:5432/ledger", what="PostgreSQL"
    )
    assert "PostgreSQL 203.0.113.9:5432" in message
    assert "s3cret" not in message and "audit:" not in message
    message = refused(guard(), "redis://:tok3n@10.30.0.5:6379/0", what="redis")
    assert "tok3n" not in message


def test_postgresql_without_tls_off_loopback_is_refused() -> None:
    message = refused(
        guard(), "postgresql://audit@10.30.0.6:5432/ledger", what="PostgreSQL", tls=False
    )
    assert "plaintext" in message


def test_ipv4_mapped_ipv6_is_judged_as_the_ipv4_address_it_reaches() -> None:
    g = guard()
    g.check("[::ffff:10.20.0.11]:50051", what="worker", tls=True)
    assert "::ffff:203.0.113.1" in refused(g, "[::ffff:203.0.113.1]:50051")


def test_plaintext_can_be_allowed_by_host_pattern_cidr_or_flag() -> None:
    by_pattern = guard(allow_plaintext=["*.svc.cluster.local"])
    by_pattern.check("collector.svc.cluster.local:4317", what="OTLP endpoint", tls=False)
    refused(by_pattern, "worker-1.gpu.region.example:50051", tls=False)
    by_cidr = guard(allow_plaintext=["10.20.0.0/16"])
    by_cidr.check("worker-1.gpu.region.example:50051", what="worker", tls=False)
    refused(by_cidr, "redis://redis.region.example:6379")
    everywhere = guard(allow_plaintext=True)
    everywhere.check("redis://redis.region.example:6379", what="redis", tls=False)
    # Allowing plaintext never widens where data may go.
    refused(everywhere, "http://203.0.113.5:80", tls=False)


def test_unsupported_forms_are_refused() -> None:
    assert "DNS server authority" in refused(guard(), "dns://8.8.8.8/worker-1.gpu.region.example:1")
    assert "unsupported URL scheme 'ftp'" in refused(guard(), "ftp://10.1.1.1/x")
    assert "invalid port" in refused(guard(), "10.1.1.1:99999")
    assert "empty address" in refused(guard(), "  ")


def test_refusals_are_counted_by_purpose() -> None:
    def count() -> float:
        value = REGISTRY.get_sample_value(
            "llmgw_residency_refusals_total", {"what": "count-test endpoint"}
        )
        return value or 0.0

    before = count()
    refused(guard(), "203.0.113.1:1", what="count-test endpoint")
    guard().check("10.1.1.1:1", what="count-test endpoint", tls=True)
    assert count() == before + 1


async def test_async_check_does_not_block_the_event_loop() -> None:
    def slow_dns(host: str) -> Sequence[str]:
        time.sleep(0.3)  # a slow DNS server
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    g = EgressGuard(ResidencySettings(), resolver=slow_dns)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    with pytest.raises(ResidencyViolation, match="does not resolve"):
        await g.check_async("slow.example:1", what="worker", tls=True)
    task.cancel()
    assert ticks >= 10


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"allowed_network": []}, r"residency: unknown key\(s\) allowed_network;"),
        ({"allowed_networks": "10.0.0.0/8"}, "residency.allowed_networks: expected a list"),
        ({"allowed_networks": [10]}, "residency.allowed_networks: expected a list of strings"),
        ({"allowed_networks": ["10.0.0.1/8"]}, r"residency.allowed_networks\[0\]: expected a CIDR"),
        ({"allowed_host_suffixes": ["."]}, r"residency.allowed_host_suffixes\[0\]: expected a DNS"),
        ({"allow_plaintext": "yes"}, "residency.allow_plaintext: expected true, false or a list"),
    ],
)
def test_settings_errors_name_the_key(data: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        read(ResidencySettings, data, "residency")


def test_settings_parse_and_default_to_loopback_only() -> None:
    assert read(ResidencySettings, {}, "residency") == ResidencySettings()
    assert read(ResidencySettings, None, "residency") == ResidencySettings()
    parsed = read(
        ResidencySettings,
        {"allowed_host_suffixes": [".Region.Example"], "allow_plaintext": ["*.local"]},
        "residency",
    )
    assert parsed.allowed_host_suffixes == ("region.example",)
    assert parsed.allow_plaintext == ("*.local",)
