"""The metrics endpoint serves Prometheus text over real HTTP and stops cleanly."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from common.settings import read
from gateway.process.metrics_server import MetricsSettings, parse_listen, start_metrics_server


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback test server
        body: bytes = response.read()
        return body.decode()


def test_counter_is_served_over_http_and_stop_closes_the_port() -> None:
    registry = CollectorRegistry()
    requests = Counter(
        "llmgw_test_requests", "Requests seen by the test.", ["outcome"], registry=registry
    )
    requests.labels(outcome="ok").inc(3)
    server = start_metrics_server("127.0.0.1:0", registry=registry)
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        first = fetch(server.url)
        assert 'llmgw_test_requests_total{outcome="ok"} 3.0' in first
        requests.labels(outcome="ok").inc()
        assert 'llmgw_test_requests_total{outcome="ok"} 4.0' in fetch(server.url)
    finally:
        server.stop()
    with pytest.raises(urllib.error.URLError):
        fetch(server.url)


def test_default_registry_exposes_the_gateway_metrics() -> None:
    import common.egress  # noqa: F401  # registers llmgw_residency_refusals_total

    server = start_metrics_server("[::1]:0")
    try:
        assert server.url.startswith("http://[::1]:")
        assert "# TYPE llmgw_residency_refusals_total counter" in fetch(server.url)
    finally:
        server.stop()


def test_listen_parsing() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen("0.0.0.0:9464") == ("0.0.0.0", 9464)
    for bad in ("localhost:9464", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000"):
        with pytest.raises(ValueError, match="expected"):
            parse_listen(bad)


def test_settings_default_to_loopback_and_name_the_key() -> None:
    assert read(MetricsSettings, {}, "metrics").listen == "127.0.0.1:9464"
    assert read(MetricsSettings, {"listen": None}, "metrics").listen is None
    assert read(MetricsSettings, {"listen": "0.0.0.0:9100"}, "metrics").listen == "0.0.0.0:9100"
    with pytest.raises(ValueError, match=r"metrics: unknown key\(s\) port"):
        read(MetricsSettings, {"port": 9464}, "metrics")
    with pytest.raises(ValueError, match=r"metrics\.listen: expected a string"):
        read(MetricsSettings, {"listen": 9464}, "metrics")
    with pytest.raises(ValueError, match=r"metrics\.listen: expected an IP address"):
        read(MetricsSettings, {"listen": "metrics.local:9464"}, "metrics")
