"""Process settings of a gateway: read once at start from a YAML file and the environment.

The result is one frozen `GatewaySettings` passed explicitly to whatever needs it. Environment
variables (listed in `ENVIRONMENT`) override single keys of the file; nothing else in the code
reads the environment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from audit.settings import AuditSpoolSettings
from common import yamlsafe
from common.egress import ResidencySettings
from common.settings import SettingsError, mapping, optional_str, positive, section, typed
from common.telemetry import TelemetrySettings
from gateway.auth.settings import AuthSettings
from gateway.limits.settings import LimitsSettings
from gateway.process.logging_setup import LoggingSettings
from gateway.process.metrics_server import MetricsSettings, parse_listen
from gateway.routing.settings import RoutingSettings
from policy.settings import PolicySettings

_S = TypeVar("_S")

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

    listen: str = "127.0.0.1:50051"
    shutdown_grace_s: float = 10.0
    max_request_bytes: int = 1024 * 1024
    max_prompt_tokens: int = 32_768
    max_output_tokens: int = 8_192
    default_max_tokens: int = 256
    processes: int = 1

    @classmethod
    def from_mapping(cls, data: object, path: str = "server") -> ServerSettings:
        d = section(data, path, ("listen", "shutdown_grace_s", "max_request_bytes",
                                 "max_prompt_tokens", "max_output_tokens", "default_max_tokens",
                                 "processes"))  # fmt: skip
        base = cls()
        return cls(
            listen=typed(d, "listen", path, str, base.listen),
            shutdown_grace_s=positive(
                typed(d, "shutdown_grace_s", path, float, base.shutdown_grace_s),
                f"{path}.shutdown_grace_s",
            ),
            max_request_bytes=positive(
                typed(d, "max_request_bytes", path, int, base.max_request_bytes),
                f"{path}.max_request_bytes",
            ),
            max_prompt_tokens=positive(
                typed(d, "max_prompt_tokens", path, int, base.max_prompt_tokens),
                f"{path}.max_prompt_tokens",
            ),
            max_output_tokens=positive(
                typed(d, "max_output_tokens", path, int, base.max_output_tokens),
                f"{path}.max_output_tokens",
            ),
            default_max_tokens=positive(
                typed(d, "default_max_tokens", path, int, base.default_max_tokens),
                f"{path}.default_max_tokens",
            ),
            processes=positive(
                typed(d, "processes", path, int, base.processes), f"{path}.processes"
            ),
        )


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The OpenAI-compatible HTTP door: `listen` (`host:port`), off when absent.

    It serves the same calls as the gRPC port, under the same `auth.mtls` (TLS with client
    certificates) when that is configured.
    """

    listen: str | None = None

    @classmethod
    def from_mapping(cls, data: object, path: str = "http") -> HttpSettings:
        d = section(data, path, ("listen",))
        listen = optional_str(d, "listen", path)
        if listen is not None:
            try:
                parse_listen(listen)
            except ValueError as err:
                raise SettingsError(f"{path}.listen: {err}") from None
        return cls(listen)


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Everything a gateway process is configured with.

    `auth` and `policy` have no safe defaults: a gateway refuses to start without them. Without
    `audit` the records stay in the local spool (nothing is shipped); `limits` without a Redis
    URL is the in-process limiter of a single replica.
    """

    server: ServerSettings = field(default_factory=ServerSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    auth: AuthSettings | None = None
    policy: PolicySettings | None = None
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    audit: AuditSpoolSettings | None = None
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    residency: ResidencySettings = field(default_factory=ResidencySettings)
    metrics: MetricsSettings | None = None
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    data_dir: Path = Path(".data")
    production: bool = False

    @classmethod
    def from_mapping(cls, data: object, path: str = "") -> GatewaySettings:
        where = path or "settings"
        d = section(data, where, _SECTIONS)
        prefix = f"{path}." if path else ""
        data_dir = optional_str(d, "data_dir", where)

        def sub(key: str) -> Mapping[str, object]:
            return mapping(d.get(key), f"{prefix}{key}")

        def optional_section(
            key: str, build: Callable[[Mapping[str, object], str], _S]
        ) -> _S | None:
            """An optional section: built when present, else None."""
            return build(sub(key), f"{prefix}{key}") if key in d else None

        try:
            return cls(
                server=ServerSettings.from_mapping(d.get("server"), f"{prefix}server"),
                http=HttpSettings.from_mapping(sub("http"), f"{prefix}http"),
                routing=RoutingSettings.from_mapping(d.get("routing"), f"{prefix}routing"),
                auth=optional_section("auth", AuthSettings.from_mapping),
                policy=optional_section("policy", PolicySettings.from_mapping),
                limits=LimitsSettings.from_mapping(sub("limits"), f"{prefix}limits"),
                audit=optional_section("audit", AuditSpoolSettings.from_mapping),
                telemetry=TelemetrySettings.from_mapping(sub("telemetry"), f"{prefix}telemetry"),
                residency=ResidencySettings.from_mapping(sub("residency"), f"{prefix}residency"),
                metrics=optional_section("metrics", MetricsSettings.from_mapping),
                logging=LoggingSettings.from_mapping(sub("logging"), f"{prefix}logging"),
                data_dir=Path(data_dir) if data_dir else Path(".data"),
                production=typed(d, "production", where, bool, False),
            )
        except SettingsError:
            raise
        except ValueError as exc:  # sections that report with ValueError name their key too
            raise SettingsError(str(exc)) from exc


_SECTIONS = (
    "server", "http", "routing", "auth", "policy", "limits", "audit", "telemetry", "residency",
    "metrics", "logging", "data_dir", "production",
)  # fmt: skip


def load_settings(
    config_file: Path | None, environ: Mapping[str, str] | None = None
) -> GatewaySettings:
    """Read the YAML file (if any), then apply the `ENVIRONMENT` overrides."""
    data: object = {}
    if config_file is not None:
        try:
            data = yamlsafe.load(config_file.read_text(encoding="utf-8"), str(config_file)) or {}
        except OSError as exc:
            raise SettingsError(
                f"{config_file}: cannot read settings file: {exc.strerror}"
            ) from exc
        except UnicodeDecodeError:
            raise SettingsError(f"{config_file}: not valid UTF-8; save it as UTF-8") from None
        except yamlsafe.YamlProblem as problem:
            where = f"{config_file}:{problem.line}" if problem.line else str(config_file)
            raise SettingsError(f"{where}: {problem.message}") from None
    settings = GatewaySettings.from_mapping(data)
    env = environ or {}
    if listen := env.get("LLMGW_LISTEN"):
        settings = replace(settings, server=replace(settings.server, listen=listen))
    if http_listen := env.get("LLMGW_HTTP_LISTEN"):
        settings = replace(settings, http=HttpSettings.from_mapping({"listen": http_listen}))
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
