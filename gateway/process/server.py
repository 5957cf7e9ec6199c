"""Builds and runs a gateway process: components, the call stack, gRPC services, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import _async as reflection_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from llmgateway.v1 import gateway_pb2
from prometheus_client import Gauge

from common.egress import EgressGuard
from common.eventloop import wait_for_shutdown_signal
from common.settings import SettingsError
from common.settings_checks import parse_listen
from common.telemetry import check_otlp_egress, start_tracing
from gateway.auth.authenticator import Authenticator
from gateway.auth.tls import server_credentials
from gateway.auth.verifier import JwtVerifier
from gateway.http.server import HttpServer, server_ssl_context, start_http_server
from gateway.limits.factory import build_limiter
from gateway.process.metrics_server import MetricsServer, start_metrics_server
from gateway.request.anonymous import WINDOW_S as ANONYMOUS_WINDOW_S
from gateway.request.anonymous import AnonymousRefusals
from gateway.request.auditing import AuditTrail
from gateway.request.decoding import add_guarded
from gateway.request.pipeline import Pipeline
from gateway.request.servicer import InferenceServicer
from gateway.request.stack import build_call_stack
from gateway.routing.factory import build_registry
from gateway.routing.registry import WorkerRegistry
from gateway.routing.router import Router
from gateway.settings import GatewaySettings
from policy.store import PolicyStore

log = logging.getLogger(__name__)
SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
REFLECTED = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Per-component health: NOT_SERVING means degraded (the gateway as a whole may still serve).
COMPONENTS = ("llmgateway.policy", "llmgateway.limits", "llmgateway.audit")
HEALTH_REFRESH_S = 1.0
# gRPC core cancels new calls once 1,000 are waiting for the application to accept them: a burst
# of streams (a ward's clients reconnecting at once) would see CANCELLED. Queue them instead.
MAX_METADATA_BYTES = 256 * 1024
BURST_OPTIONS = (
    ("grpc.server.max_pending_requests", 10_000),
    ("grpc.server.max_pending_requests_hard_limit", 20_000),
)
# With several processes the replica is ready when this sums to `server.processes` over the live
# ones (prometheus_client's multiprocess mode; without it, the one process's own value).
PROCESS_SERVING = Gauge(
    "llmgw_process_serving",
    "1 while a gateway process is SERVING (grpc.health.v1, overall), 0 while it drains.",
    multiprocess_mode="livesum",
)


@dataclass
class GatewayHandle:
    """A running gateway and everything it started, stopped in reverse order."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    registry: WorkerRegistry
    pipeline: Pipeline
    verifier: JwtVerifier
    port: int
    metrics: MetricsServer | None = None
    http: HttpServer | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    serving: bool = False

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def component_health(self) -> dict[str, str]:
        """Every component's health details (policy version and errors, limiter, audit)."""
        details = {f"policy.{k}": v for k, v in self.pipeline.policy.health().items()}
        details.update({f"limits.{k}": v for k, v in self.pipeline.limiter.health().items()})
        details.update(self.pipeline.audit.health())
        details.update(self.pipeline.router.health())
        return details

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING first (load balancers stop sending), then let in-flight calls finish."""
        self.serving = False
        PROCESS_SERVING.set(0)
        await self.health.enter_graceful_shutdown()
        grace = grace if grace is not None else self.pipeline.settings.server.shutdown_grace_s
        stopping = [self.server.stop(grace)]
        if self.http is not None:
            stopping.append(self.http.stop(grace))
        await asyncio.gather(*stopping)
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.registry.close()
        await self.pipeline.limiter.close()
        await self.pipeline.anonymous.flush(self.pipeline.audit, everything=True)
        await self.pipeline.audit.close()
        await self.verifier.close()
        self.pipeline.tracing.shutdown()
        if self.metrics is not None:
            self.metrics.stop()


def check_egress(settings: GatewaySettings, guard: EgressGuard) -> None:
    """Refuse to start when any address data would go to is outside the residency allowlist."""
    checks: list[tuple[str, str, bool]] = []
    for target in settings.routing.egress_targets():
        if target.startswith(("redis://", "rediss://")):
            checks.append((target, "worker registry", target.startswith("rediss://")))
        else:
            checks.append((target, "worker", settings.routing.tls is not None))
    if settings.auth is not None:
        checks += [
            (url, "JWKS URL", url.startswith("https://")) for url in settings.auth.egress_urls()
        ]
    checks += [(url, "redis", url.startswith("rediss://")) for url in settings.limits.egress_urls()]
    if settings.audit is not None:
        tls = settings.audit.tls_ca_file is not None
        checks.append((settings.audit.store_target, "audit endpoint", tls))
    for target, what, tls in checks:
        guard.check(target, what=what, tls=tls)
    check_otlp_egress(settings.telemetry, guard)


def check_production(settings: GatewaySettings) -> None:
    """A production configuration never trusts the development key."""
    if settings.auth is None:
        raise SettingsError("auth: required; configure pinned keys, a JWKS file or a JWKS URL")
    if settings.policy is None:
        raise SettingsError("policy.directory: required; point it at the policy directory")
    if (settings.production or settings.auth.production) and settings.auth.dev_key_file:
        raise SettingsError(
            "auth.dev_key_file: the development key is configured in a production "
            "configuration; remove it and configure the identity provider's keys"
        )
    if settings.production and (settings.audit is None or not settings.audit.pseudonym_key_file):
        raise SettingsError(
            "audit.pseudonym_key_file: required in a production configuration: one secret "
            "(>= 32 random bytes, a mounted Secret) shared by every replica and process, so that "
            "each person has one pseudonym; create it with `head -c 32 /dev/urandom` "
            "(docs/deploy.md)"
        )


async def start_gateway(settings: GatewaySettings) -> GatewayHandle:
    """Start every component and the server; returns once the port accepts calls."""
    check_production(settings)
    assert settings.auth is not None and settings.policy is not None
    guard = EgressGuard(settings.residency)
    check_egress(settings, guard)
    policy = PolicyStore(settings.policy.directory)
    policy.load()
    verifier = JwtVerifier.from_settings(settings.auth)
    await verifier.start()
    registry = build_registry(settings.routing, guard=guard)
    await registry.start()
    pipeline = Pipeline(
        settings=settings,
        router=Router(registry),
        policy=policy,
        limiter=build_limiter(settings.limits),
        audit=await AuditTrail.open(settings.audit, settings.data_dir),
        tracing=start_tracing(settings.telemetry, guard),
        anonymous=AnonymousRefusals(
            settings.audit.anonymous_window_s if settings.audit else ANONYMOUS_WINDOW_S
        ),
    )
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.server.max_request_bytes),
            # Far above gRPC's 8 KiB soft limit and above the largest auth.max_token_bytes, so
            # that an oversized token gets the verifier's own UNAUTHENTICATED, not gRPC's
            # RESOURCE_EXHAUSTED; the hard limit is set equal so that none is refused at random.
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            *BURST_OPTIONS,
            ("grpc.so_reuseport", int(settings.server.processes > 1)),
        ],
    )
    authenticator = Authenticator(verifier, mtls=settings.auth.mtls)
    stack = build_call_stack(
        InferenceServicer(pipeline),
        authenticator,
        default_deadline_s=settings.server.default_deadline_s,
    )
    server.add_generic_rpc_handlers((stack,))
    health_servicer = health.aio.HealthServicer()
    # Open without a token: guarded too, so that junk bodies cannot flood the log.
    add_guarded(health_pb2_grpc.add_HealthServicer_to_server, health_servicer, server)
    add_guarded(
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server,
        reflection_aio.ReflectionServicer(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
        ),
        server,
    )
    credentials = server_credentials(settings.auth)
    if credentials is not None:
        port = server.add_secure_port(settings.server.listen, credentials)
    else:
        port = server.add_insecure_port(settings.server.listen)
    if port == 0:
        await registry.close()
        raise OSError(f"cannot listen on {settings.server.listen} (server.listen)")
    await server.start()
    for name in ("", SERVICE_NAME, *COMPONENTS):
        await health_servicer.set(name, SERVING)
    handle = GatewayHandle(server, health_servicer, registry, pipeline, verifier, port)
    if settings.http.listen is not None:
        host, http_port = parse_listen(settings.http.listen)
        try:
            handle.http = await start_http_server(
                host,
                http_port,
                pipeline,
                authenticator,
                ssl_context=server_ssl_context(settings.auth),
                reuse_port=settings.server.processes > 1,
            )
        except BaseException:
            await handle.stop(grace=0)
            raise
        log.info("OpenAI-compatible HTTP door on port %d", handle.http.port)
    handle.serving = True
    PROCESS_SERVING.set(1)
    if settings.policy.reload_interval_s > 0:
        handle.tasks.append(
            asyncio.create_task(policy.run_reloader(settings.policy.reload_interval_s))
        )
    handle.tasks.append(asyncio.create_task(_report_component_health(handle)))
    handle.tasks.append(asyncio.create_task(pipeline.anonymous.run(pipeline.audit)))
    if settings.metrics is not None and settings.metrics.listen:
        handle.metrics = start_metrics_server(settings.metrics.listen, ready=lambda: handle.serving)
    log.info("gateway listening on port %d (policy %s)", port, policy.current().version[:12])
    return handle


async def _report_component_health(handle: GatewayHandle) -> None:
    """Mirror each component's state into grpc.health.v1 (NOT_SERVING = degraded)."""
    checks: dict[str, Callable[[], bool]] = {
        "llmgateway.policy": lambda: handle.pipeline.policy.health().get("status") == "ok",
        "llmgateway.limits": lambda: (
            not any("degraded" in v for v in handle.pipeline.limiter.health().values())
        ),
        "llmgateway.audit": lambda: not handle.pipeline.audit.problem(),
    }
    while True:
        for name, healthy in checks.items():
            await handle.health.set(name, SERVING if healthy() else NOT_SERVING)
        await asyncio.sleep(HEALTH_REFRESH_S)


async def serve(settings: GatewaySettings) -> None:
    """Run a gateway until SIGTERM/SIGINT, then shut down gracefully."""
    handle = await start_gateway(settings)
    await wait_for_shutdown_signal()
    log.info(
        "shutting down: NOT_SERVING, draining for up to %.0f s", settings.server.shutdown_grace_s
    )
    await handle.stop()
    log.info("gateway stopped")
