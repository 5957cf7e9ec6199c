"""Process settings of a gateway: read once at start from a YAML file and the environment.

The result is one frozen `GatewaySettings` passed explicitly to whatever needs it. Environment
variables (listed in `ENVIRONMENT`) override single keys of the file; nothing else in the code
reads the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from audit.settings import AuditSpoolSettings
from common.egress import ResidencySettings
from common.settings import SettingsError, load_file, read, setting
from common.settings_checks import ip_listen, positive
from common.telemetry import TelemetrySettings
from gateway.auth.settings import AuthSettings
from gateway.limits.settings import LimitsSettings
from gateway.process.logging_setup import LoggingSettings
from gateway.process.metrics_server import MetricsSettings
from gateway.routing.settings import RoutingSettings
from policy.settings import PolicySettings

ENVIRONMENT = {
    "LLMGW_LISTEN": "server.listen",
    "LLMGW_HTTP_LISTEN": "http.listen",
    "LLMGW_WORKERS": "routing.workers (comma-separated host:port targets)",
    "LLMGW_DATA_DIR": "data_dir",
    "LLMGW_AUDIT_SOURCE": "audit.source (in Kubernetes the pod name, from the downward API)",
}


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The public listener and request limits."""

    listen: str = setting("127.0.0.1:50051", doc="HOST:PORT for client gRPC traffic")
    shutdown_grace_s: float = setting(
        10.0, doc="on SIGTERM, how long running calls may finish", check=positive
    )
    max_request_bytes: int = setting(
        1024 * 1024, doc="largest request message accepted", check=positive
    )
    max_prompt_tokens: int = setting(32_768, doc="longest prompt accepted", check=positive)
    max_output_tokens: int = setting(8_192, doc="largest max_tokens accepted", check=positive)
    default_max_tokens: int = setting(
        256, doc="max_tokens of a request that sets none", check=positive
    )
    default_deadline_s: float = setting(
        600.0,
        doc="the deadline of a call that brings none (every HTTP call, a gRPC call without "
        "one): past it the call ends DEADLINE_EXCEEDED (HTTP 504), audited as `deadline`, and its "
        "worker generation is cancelled, so a hung worker cannot hold a call and its lease forever",
        check=positive,
    )
    processes: int = setting(
        1, doc="gateway processes sharing the port (SO_REUSEPORT), one per core", check=positive
    )


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The OpenAI-compatible HTTP door: `listen` (`host:port`), off when absent.

    It serves the same calls as the gRPC port, under the same `auth.mtls` (TLS with client
    certificates) when that is configured.
    """

    listen: str | None = setting(
        None,
        doc="HOST:PORT (IP address) of the OpenAI-compatible HTTP door; null: no HTTP door",
        check=ip_listen,
    )


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Everything a gateway process is configured with (`llm-gateway serve --config FILE`).

    `auth` and `policy` have no safe defaults: a gateway refuses to start without them. Without
    `audit` the records stay in the local spool (nothing is shipped); `limits` without a Redis
    URL is the in-process limiter of a single replica.
    """

    server: ServerSettings = setting(factory=ServerSettings, doc="the public listener")
    http: HttpSettings = setting(
        factory=HttpSettings, doc="the OpenAI-compatible HTTP door; off unless http.listen is set"
    )
    routing: RoutingSettings = setting(factory=RoutingSettings, doc="finding workers")
    auth: AuthSettings | None = setting(None, doc="who callers are (required to serve)")
    policy: PolicySettings | None = setting(None, doc="who may do what (required to serve)")
    limits: LimitsSettings = setting(factory=LimitsSettings, doc="quotas and concurrency")
    audit: AuditSpoolSettings | None = setting(
        None, doc="ship audit records to the audit store; without it they stay in the spool"
    )
    telemetry: TelemetrySettings = setting(factory=TelemetrySettings, doc="tracing")
    residency: ResidencySettings = setting(factory=ResidencySettings, doc="where data may be sent")
    metrics: MetricsSettings | None = setting(
        None, doc="the Prometheus endpoint; absent: no endpoint"
    )
    logging: LoggingSettings = setting(factory=LoggingSettings, doc="log lines")
    data_dir: Path = setting(Path(".data"), doc="local state: the audit spool by default")
    production: bool = setting(False, doc="refuse development keys, issuers and shortcuts")


def load_settings(
    config_file: Path | None, environ: Mapping[str, str] | None = None
) -> GatewaySettings:
    """Read the YAML file (if any), then apply the `ENVIRONMENT` overrides."""
    if config_file is None:
        settings = read(GatewaySettings, {})
    else:
        settings = load_file(GatewaySettings, config_file)
    env = environ or {}
    if listen := env.get("LLMGW_LISTEN"):
        settings = replace(settings, server=replace(settings.server, listen=listen))
    if http_listen := env.get("LLMGW_HTTP_LISTEN"):
        settings = replace(settings, http=read(HttpSettings, {"listen": http_listen}, "http"))
    if workers := env.get("LLMGW_WORKERS"):
        targets = tuple(w.strip() for w in workers.split(",") if w.strip())
        settings = replace(settings, routing=replace(settings.routing, workers=targets))
    if data_dir := env.get("LLMGW_DATA_DIR"):
        settings = replace(settings, data_dir=Path(data_dir))
    if source := env.get("LLMGW_AUDIT_SOURCE"):
        if settings.audit is None:
            raise SettingsError("LLMGW_AUDIT_SOURCE is set but the settings have no audit section")
        settings = replace(settings, audit=replace(settings.audit, source=source))
    return settings
