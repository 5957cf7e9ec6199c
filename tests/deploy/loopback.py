"""The shipped deploy/gateway.yaml rendered for loopback, and the files and processes it needs."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.pki import Ca

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CONFIG = ROOT / "deploy" / "gateway.yaml"
SHIPPED_POLICY = ROOT / "deploy" / "k8s" / "overlays" / "health-region" / "policy"
BIN = Path(sys.executable).parent
WORKER_SERVER_NAME = "llm-workers.inference.svc.cluster.local"  # routing.tls.server_name

# What rendering may change: addresses, file paths and key files. Everything else is shipped as is.
REPLACEABLE = frozenset(
    {
        "data_dir",
        "server.listen",
        "http.listen",
        "auth.jwks_file",
        "auth.mtls.server_cert_file",
        "auth.mtls.server_key_file",
        "auth.mtls.client_ca_file",
        "policy.directory",
        "routing.dns_names",
        "routing.tls.ca_file",
        "routing.tls.cert_file",
        "routing.tls.key_file",
        "limits.redis_url",
        "audit.spool_path",
        "audit.store_target",
        "audit.pseudonym_key_file",
        "audit.tls_ca_file",
        "telemetry.otlp_endpoint",
        "telemetry.ca_file",
        "metrics.listen",
    }
)


def _parent(tree: dict[str, Any], dotted: str) -> tuple[dict[str, Any], str]:
    *path, last = dotted.split(".")
    node = tree
    for key in path:
        node = node[key]
    assert last in node, f"{dotted}: not in the shipped configuration"
    return node, last


def render_for_loopback(shipped: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """`shipped` with the settings in `values` replaced; refuses to touch anything else."""
    assert set(values) <= REPLACEABLE, sorted(set(values) - REPLACEABLE)
    rendered = copy.deepcopy(shipped)
    for dotted, value in values.items():
        node, last = _parent(rendered, dotted)
        node[last] = value
    redis_old, redis_new = (
        urlsplit(shipped["limits"]["redis_url"]),
        urlsplit(rendered["limits"]["redis_url"]),
    )
    assert redis_new.scheme == redis_old.scheme == "rediss", "Redis stays on TLS"
    assert set(parse_qs(redis_new.query)) == set(parse_qs(redis_old.query))
    restored = copy.deepcopy(rendered)
    for dotted in values:
        node, last = _parent(restored, dotted)
        original, key = _parent(shipped, dotted)
        node[last] = original[key]
    assert restored == shipped, "rendering changed more than addresses, paths and key files"
    return rendered


@dataclass
class Pki:
    """Two CAs as in docs/deploy.md (clients, internal) and the files each component mounts."""

    directory: Path
    clients_ca: Ca
    internal_ca: Ca

    @classmethod
    def create(cls, directory: Path) -> Pki:
        directory.mkdir(parents=True, exist_ok=True)
        pki = cls(directory, Ca(), Ca())
        (directory / "clients-ca.crt").write_bytes(pki.clients_ca.pem)
        (directory / "internal-ca.crt").write_bytes(pki.internal_ca.pem)
        for name, names in (
            ("gateway", ()),
            ("gateway-client", ()),
            ("workers", (WORKER_SERVER_NAME,)),
            ("audit", ()),
            ("redis", ()),
        ):
            pki.internal_ca.write(directory, name, server=True, dns_names=names)
        pki.clients_ca.write(directory, "alice")
        for path in directory.iterdir():
            secret_mode(path)
        return pki

    def path(self, name: str) -> str:
        return str(self.directory / name)

    def client_credentials(self) -> tuple[bytes, bytes, bytes]:
        """(root CA, client key, client certificate) for a client of the gateway."""
        return (
            self.internal_ca.pem,
            (self.directory / "alice.key").read_bytes(),
            (self.directory / "alice.crt").read_bytes(),
        )


def secret_mode(path: Path) -> None:
    """As Kubernetes mounts a secret: mode 0440, group = the pod's fsGroup (here: ours)."""
    os.chown(path, -1, os.getegid())
    path.chmod(0o440)


@dataclass
class IdentityProvider:
    """An RS256 signing key; its JWKS goes into a file (auth.jwks_file)."""

    key: rsa.RSAPrivateKey
    issuer: str
    audience: str
    claims: dict[str, str]

    @classmethod
    def for_config(cls, config: dict[str, Any]) -> IdentityProvider:
        auth = config["auth"]
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(key, auth["issuer"], auth["audience"], auth["claims"])

    def write_jwks(self, path: Path) -> None:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update(kid="k1", alg="RS256", use="sig")
        path.write_text(json.dumps({"keys": [jwk]}))
        secret_mode(path)

    def token(self, subject: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "exp": now + 600,
            self.claims["department"]: "emergency",
            self.claims["roles"]: ["clinician"],
            self.claims["clearance"]: "health",
            self.claims["purpose"]: "treatment",
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "k1"})


_LISTENING = re.compile(rb"listening on port (\d+)")


async def start_worker(pki: Pki, log: Path) -> tuple[asyncio.subprocess.Process, int]:
    """`llm-worker serve --engine sim` under mutual TLS (clients from the internal CA)."""
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            str(BIN / "llm-worker"), "serve", "--engine", "sim", "--listen", "127.0.0.1:0",
            "--pool", "onprem-gpu", "--model", "llama-3.1-8b-instruct",
            "--ttft-ms", "5", "--itl-ms", "25", "--grace", "5",
            "--tls-cert", pki.path("workers.crt"), "--tls-key", pki.path("workers.key"),
            "--tls-client-ca", pki.path("internal-ca.crt"),
            stdout=asyncio.subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
    assert process.stdout is not None
    async with asyncio.timeout(60):
        while line := await process.stdout.readline():
            if match := _LISTENING.search(line):
                return process, int(match.group(1))
    raise AssertionError(f"worker did not start:\n{log.read_text()[-3000:]}")


@dataclass
class Replica:
    """One `llm-gateway serve` (a pod): its client ports (gRPC, OpenAI HTTP), probe port, log."""

    name: str
    process: asyncio.subprocess.Process
    port: int
    metrics_port: int
    log: Path
    http_port: int | None = None

    def http(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # loopback probe port
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()
        except OSError:
            return 0, ""

    async def wait_ready(self, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while (await asyncio.to_thread(self.http, "/readyz"))[0] != 200:
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready:\n{self.log.read_text()[-4000:]}")
            await asyncio.sleep(0.2)

    async def terminate(self, within: float = 60.0) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(within):
            return await self.process.wait()

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines()


async def start_replica(name: str, config: dict[str, Any], directory: Path) -> Replica:
    """Write the settings and run `llm-gateway serve`, with the pod's name as audit source when
    they have an audit section."""
    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / "gateway.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LLMGW_", "OTEL_", "PROMETHEUS_"))
    }
    if "audit" in config:  # the downward API's metadata.name in Kubernetes names the chains
        env["LLMGW_AUDIT_SOURCE"] = name
    log = directory / "gateway.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            str(BIN / "llm-gateway"), "serve", "--config", str(config_file),
            env=env, stdout=out, stderr=asyncio.subprocess.STDOUT, cwd=directory,
        )  # fmt: skip
    port = int(config["server"]["listen"].rpartition(":")[2])
    http = config.get("http", {}).get("listen")
    metrics_port = int(config["metrics"]["listen"].rpartition(":")[2])
    return Replica(name, process, port, metrics_port, log, http and int(http.rpartition(":")[2]))
