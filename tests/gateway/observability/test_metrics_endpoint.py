"""The metrics endpoint serves Prometheus text over real HTTP and stops cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from common.settings import read
from common.settings_checks import parse_listen
from gateway.process.metrics_server import (
    MetricsSettings,
    multiprocess_registry,
    sample_sum,
    start_metrics_server,
)


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


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # loopback test server
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_probes_answer_beside_the_metrics() -> None:
    ready = [False]
    server = start_metrics_server(
        "127.0.0.1:0", registry=CollectorRegistry(), ready=lambda: ready[0]
    )
    try:
        assert status_of(f"{server.base_url}/healthz") == 200
        assert status_of(f"{server.base_url}/readyz") == 503
        ready[0] = True
        assert status_of(f"{server.base_url}/readyz") == 200
        assert status_of(server.url) == 200
    finally:
        server.stop()


def test_a_failing_readiness_check_is_a_500_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    server = start_metrics_server("127.0.0.1:0", registry=CollectorRegistry(), ready=broken)
    try:
        assert status_of(f"{server.base_url}/readyz") == 500
    finally:
        server.stop()
    assert [r.getMessage() for r in caplog.records] == ["metrics endpoint: /readyz failed"]


CHILD = """
import sys
from prometheus_client import Counter, Gauge
from prometheus_client.multiprocess import mark_process_dead
import os
Counter("llmgw_test_served", "Requests.").inc(int(sys.argv[1]))
serving = Gauge("llmgw_test_serving", "Serving.", multiprocess_mode="livesum")
serving.set(1)
if sys.argv[2] == "exit":
    mark_process_dead(os.getpid())
"""


def test_one_endpoint_sums_every_process(tmp_path: Path) -> None:
    """Real processes write under PROMETHEUS_MULTIPROC_DIR; the endpoint serves their sum, and a
    process marked dead leaves its counters but not its live gauge."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for served, end in ((3, "stay"), (4, "exit")):
        subprocess.run([sys.executable, "-c", CHILD, str(served), end], env=env, check=True)
    registry = multiprocess_registry(tmp_path)
    assert sample_sum(registry, "llmgw_test_served_total") == 7
    assert sample_sum(registry, "llmgw_test_serving") == 1
    server = start_metrics_server("127.0.0.1:0", registry=registry)
    try:
        assert "llmgw_test_served_total 7.0" in fetch(server.url)
    finally:
        server.stop()
