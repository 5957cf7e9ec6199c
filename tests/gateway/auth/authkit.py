"""Test kit for identity tests: token signers, an echo servicer, an error mapper, a JWKS server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives import serialization
from llmgateway.v1 import gateway_pb2, gateway_pb2_grpc

from gateway.auth.keys import public_key_to_jwk
from gateway.request.call import CallContext
from gateway.request.decoding import Undecodable
from tests.helpers import bearer as bearer  # re-exported for the auth suites

Context = grpc.aio.ServicerContext[Any, Any]
ISSUER = "https://idp.region.example/realms/staff"
AUDIENCE = "llm-gateway"


class EchoPrincipalServicer:
    """Reports the verified principal back: department as the model name, subject as its pool.

    It runs behind the gateway's own call stack (`gateway.request.stack.build_call_stack`), so
    authentication and the error-to-status mapping are the production ones.
    """

    async def Generate(
        self,
        request: gateway_pb2.GenerateRequest | Undecodable,
        call: CallContext,
        context: Context,
    ) -> gateway_pb2.GenerateResponse:
        return gateway_pb2.GenerateResponse(text=call.authenticated().department)

    async def ListModels(
        self,
        request: gateway_pb2.ListModelsRequest | Undecodable,
        call: CallContext,
        context: Context,
    ) -> gateway_pb2.ListModelsResponse:
        principal = call.authenticated()
        pools = [principal.subject, *sorted(principal.roles)]
        return gateway_pb2.ListModelsResponse(
            models=[gateway_pb2.ModelInfo(name=principal.department, pools=pools)]
        )

    async def GenerateStream(
        self,
        request: gateway_pb2.GenerateStreamRequest | Undecodable,
        call: CallContext,
        context: Context,
    ) -> AsyncIterator[gateway_pb2.GenerateStreamResponse]:
        for _ in range(3):
            principal = call.authenticated()
            yield gateway_pb2.GenerateStreamResponse(text=principal.department)


@dataclass
class Signer:
    """A private key and how tokens signed with it look."""

    private_key: Any
    algorithm: str
    kid: str | None

    @property
    def public_pem(self) -> bytes:
        pem: bytes = self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem

    def jwk(self) -> dict[str, Any]:
        data = public_key_to_jwk(self.private_key.public_key())
        if self.kid is not None:
            data["kid"] = self.kid
        data["alg"] = self.algorithm
        data["use"] = "sig"
        return data

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "alice",
            "department": "oncology",
            "roles": ["clinician"],
            "iat": now,
            "exp": now + 600,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, headers: dict[str, Any] | None = None, **overrides: Any) -> str:
        all_headers = {"kid": self.kid} if self.kid else {}
        all_headers.update(headers or {})
        claims = self.claims(**overrides)
        return jwt.encode(claims, self.private_key, algorithm=self.algorithm, headers=all_headers)


def jwks_document(*signers: Signer) -> dict[str, Any]:
    return {"keys": [s.jwk() for s in signers]}


@dataclass
class RunningServer:
    address: str
    server: grpc.aio.Server
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def stub(
        self, channel: grpc.aio.Channel | None = None
    ) -> gateway_pb2_grpc.InferenceServiceAsyncStub:
        if channel is None:
            channel = grpc.aio.insecure_channel(self.address)
            self.channels.append(channel)
        return gateway_pb2_grpc.InferenceServiceStub(channel)


StartServer = Callable[..., Awaitable[RunningServer]]


class JwksServer:
    """A local HTTP server serving a JWKS document; it can be switched off and counts fetches."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.fetches = 0
        self.up = True
        self.redirect_to: str | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                if outer.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", outer.redirect_to)
                    self.end_headers()
                    return
                if not outer.up:
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/jwks.json"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
