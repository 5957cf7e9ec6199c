"""Starts and stops the HTTP door on the running event loop, with the gRPC port's mTLS."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from aiohttp import web

from common.settings import SettingsError
from gateway.auth.authenticator import Authenticator
from gateway.auth.settings import AuthSettings
from gateway.http.app import OpenAIDoor
from gateway.request.pipeline import Pipeline


@dataclass
class HttpServer:
    """A running HTTP door: its runner and the port it is bound to."""

    runner: web.AppRunner
    port: int
    tls: bool

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/v1"

    async def stop(self, grace: float) -> None:
        """Close the port, wait up to `grace` seconds for in-flight calls, cancel the rest."""
        # aiohttp takes the grace when the runner is built; a stop may ask for another one
        # (tests and the dev stack stop at once), and cleanup reads it only here.
        self.runner._shutdown_timeout = grace
        await self.runner.cleanup()


def server_ssl_context(settings: AuthSettings) -> ssl.SSLContext | None:
    """The TLS context of `auth.mtls` (the gRPC port's certificate and client CA), or None.

    With `require_client_cert` the handshake refuses clients without a certificate signed by
    the client CA; without it such clients connect and only the token identifies them.
    """
    mtls = settings.mtls
    if mtls is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(mtls.server_cert_file, mtls.server_key_file)
    except (OSError, ssl.SSLError) as err:
        raise SettingsError(
            f"auth.mtls.server_cert_file/server_key_file: cannot load ({err.__class__.__name__})"
        ) from None
    try:
        context.load_verify_locations(cafile=mtls.client_ca_file)
    except (OSError, ssl.SSLError) as err:
        raise SettingsError(
            f"auth.mtls.client_ca_file: cannot load {mtls.client_ca_file} "
            f"({err.__class__.__name__})"
        ) from None
    context.verify_mode = ssl.CERT_REQUIRED if mtls.require_client_cert else ssl.CERT_OPTIONAL
    return context


async def start_http_server(
    host: str,
    port: int,
    pipeline: Pipeline,
    authenticator: Authenticator,
    *,
    ssl_context: ssl.SSLContext | None,
    reuse_port: bool = False,
) -> HttpServer:
    """Serve the door on `host:port` (0 picks a free port) on the running event loop."""
    app = OpenAIDoor(pipeline, authenticator).application()
    runner = web.AppRunner(
        app,
        handler_cancellation=True,  # a client that disconnects cancels its handler
        access_log=None,
        shutdown_timeout=pipeline.settings.server.shutdown_grace_s,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_port=reuse_port or None)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    return HttpServer(runner, int(bound), tls=ssl_context is not None)
