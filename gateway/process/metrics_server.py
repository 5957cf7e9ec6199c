"""The plaintext HTTP endpoint: Prometheus metrics, and the liveness and readiness probes."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
from prometheus_client.multiprocess import MultiProcessCollector

from common.settings import setting
from common.settings_checks import ip_listen, parse_listen

log = logging.getLogger(__name__)
DEFAULT_LISTEN = "127.0.0.1:9464"
_READ_ATTEMPTS = 5
_T = TypeVar("_T")
HEALTHZ = "/healthz"
READYZ = "/readyz"

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Where the metrics and probe endpoint listens (`host:port`, `[v6]:port`); None disables it.

    The default is loopback: metrics name departments and models, so exposing them beyond the
    host (`0.0.0.0:9464` for a Prometheus scraping the pod) is an explicit choice.
    """

    listen: str | None = setting(
        DEFAULT_LISTEN,
        doc="HOST:PORT (IP address) of /metrics, /healthz and /readyz; null disables it",
        expect="a string such as 127.0.0.1:9464, or null",
        check=ip_listen,
    )


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per request, so that a slow scrape never delays a probe."""

    daemon_threads = True


class _ThreadingServerV6(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: it would break the one-JSON-object-per-line log stream."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsServer:
    """A running endpoint (a daemon thread); `stop` closes its socket and joins it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def probe_app(metrics: WsgiApp, ready: Callable[[], bool]) -> WsgiApp:
    """`/healthz` 200 while the process runs, `/readyz` 200 or 503 by `ready()`, else metrics."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        try:
            return route(path, environ, start_response)
        except Exception:
            # Through logging (one JSON line), not wsgiref's traceback on stderr.
            log.exception("metrics endpoint: %s failed", path)
            return _plain(start_response, "500 Internal Server Error", b"failed, retry\n")

    def route(path: str, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        if path == HEALTHZ:
            return _plain(start_response, "200 OK", b"ok\n")
        if path == READYZ:
            if ready():
                return _plain(start_response, "200 OK", b"ready\n")
            return _plain(start_response, "503 Service Unavailable", b"not serving\n")
        return _retrying_read(lambda: list(metrics(environ, start_response)))

    return app


def _plain(start_response: StartResponse, status: str, body: bytes) -> list[bytes]:
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response(status, headers)
    return [body]


def start_metrics_server(
    listen: str,
    *,
    registry: CollectorRegistry = REGISTRY,
    ready: Callable[[], bool] = lambda: True,
) -> MetricsServer:
    """Serve `registry` in Prometheus text format and the probes on `listen` (plaintext HTTP)."""
    host, port = parse_listen(listen)
    server_class = _ThreadingServerV6 if ":" in host else _ThreadingServer
    server = make_server(
        host,
        port,
        probe_app(make_wsgi_app(registry), ready),
        server_class=server_class,
        handler_class=_QuietHandler,
    )
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return MetricsServer(server, thread)


def multiprocess_registry(directory: Path) -> CollectorRegistry:
    """A registry that sums the metrics every process wrote under `directory`.

    Counters and histograms are summed; gauges follow their own `multiprocess_mode` (the default
    `all` keeps one series per process, with a `pid` label).
    """
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return registry


def sample_sum(registry: CollectorRegistry, name: str) -> float:
    """The sum of the samples named `name`, all labels (0 when there are none yet)."""
    return _retrying_read(
        lambda: sum(
            sample.value
            for family in registry.collect()
            for sample in family.samples
            if sample.name == name
        )
    )


def _retrying_read(read: Callable[[], _T]) -> _T:
    """`read()` of the metrics files, again when one was caught half-created.

    prometheus_client creates a process's file empty and then sizes it; a read in between fails
    with struct.error, and succeeds a moment later. (The metrics app builds its whole output
    before it calls start_response, so a retry never answers twice.)
    """
    for _ in range(_READ_ATTEMPTS - 1):
        try:
            return read()
        except struct.error:
            time.sleep(0.01)
    return read()
