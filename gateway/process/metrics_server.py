"""The Prometheus metrics endpoint: the `prometheus_client` registry over HTTP, on loopback."""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from common.settings import SettingsError, setting

DEFAULT_LISTEN = "127.0.0.1:9464"


def _listen(value: str | None, key: str) -> None:
    if value is not None:
        try:
            parse_listen(value)
        except ValueError as err:
            raise SettingsError(f"{key}: {err}") from None


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """The metrics endpoint (the section present enables it).

    The default is loopback: metrics name departments and models, so exposing them beyond the
    host (`0.0.0.0:9464` for a Prometheus scraping the pod) is an explicit choice.
    """

    listen: str | None = setting(
        DEFAULT_LISTEN,
        doc="HOST:PORT (IP address) of /metrics, /healthz and /readyz; null disables it",
        expect="a string such as 127.0.0.1:9464, or null",
        check=_listen,
    )


def parse_listen(listen: str) -> tuple[str, int]:
    """Split `host:port` or `[v6]:port` into an IP address and a port (0 picks a free one)."""
    host, sep, port_text = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"expected host:port such as 127.0.0.1:9464, got {listen!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"expected an IP address to listen on, got {host!r}") from None
    return host, int(port_text)


class MetricsServer:
    """A running metrics endpoint (a daemon thread); `stop` closes its socket and joins it."""

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
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(listen: str, *, registry: CollectorRegistry = REGISTRY) -> MetricsServer:
    """Serve `registry` in Prometheus text format on `listen` (e.g. `127.0.0.1:9464`)."""
    host, port = parse_listen(listen)
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread)
