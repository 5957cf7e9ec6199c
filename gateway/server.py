"""Builds and runs a gateway process: components, interceptors, gRPC services, shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from llmgateway.v1 import gateway_pb2, gateway_pb2_grpc

from gateway.interceptors import build_interceptors
from gateway.pipeline import Pipeline
from gateway.routing.registry import StaticRegistry
from gateway.routing.router import Router
from gateway.servicer import InferenceServicer
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)
SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name


@dataclass
class GatewayHandle:
    """A running gateway."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    registry: StaticRegistry
    pipeline: Pipeline
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING first (load balancers stop sending), then let in-flight calls finish."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(
            grace if grace is not None else self.pipeline.settings.server.shutdown_grace_s
        )
        await self.registry.close()


async def start_gateway(settings: GatewaySettings) -> GatewayHandle:
    """Start every component and the server; returns once the port accepts calls."""
    registry = StaticRegistry(settings.routing)
    await registry.start()
    pipeline = Pipeline(settings, Router(registry))
    server = grpc.aio.server(
        interceptors=build_interceptors(),
        options=[
            ("grpc.max_receive_message_length", settings.server.max_request_bytes),
            ("grpc.so_reuseport", int(settings.server.processes > 1)),
        ],
    )
    gateway_pb2_grpc.add_InferenceServiceServicer_to_server(InferenceServicer(pipeline), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(settings.server.listen)
    if port == 0:
        await registry.close()
        raise OSError(f"cannot listen on {settings.server.listen} (server.listen)")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("gateway listening on port %d", port)
    return GatewayHandle(server, health_servicer, registry, pipeline, port)


async def wait_for_shutdown_signal() -> None:
    """Return when SIGTERM or SIGINT arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve(settings: GatewaySettings) -> None:
    """Run a gateway until SIGTERM/SIGINT, then shut down gracefully."""
    handle = await start_gateway(settings)
    await wait_for_shutdown_signal()
    log.info("shutting down: NOT_SERVING, draining for %.0f s", settings.server.shutdown_grace_s)
    await handle.stop()
