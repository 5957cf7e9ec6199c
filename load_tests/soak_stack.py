"""The soak's real stack as processes: redis-server, audit store, two sim workers, one gateway.

Each component is a child process on a fixed loopback port, so that a fault (SIGKILL, SIGSTOP,
SIGTERM) and a restart on the same port look to the others exactly as they would in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.auth.devkeys import ensure_dev_key
from gateway.auth.settings import DEV_AUDIENCE, DEV_ISSUER

ROOT = Path(__file__).resolve().parents[1]
POLICY = Path(__file__).resolve().parent / "soak_policy"
DEPARTMENT = "soak"
SOURCE = "soak-gw"
STARTUP_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Component:
    """One child process, restartable on the same command line (and so the same port)."""

    name: str
    command: list[str]
    log: Path
    port: int
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                *self.command, cwd=ROOT, stdout=out, stderr=out, env=_environment()
            )
        await _wait_for_port(self.port, self)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def send(self, number: signal.Signals) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(number)

    async def stop(self, number: signal.Signals = signal.SIGTERM, grace_s: float = 15.0) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(number)
        try:
            await asyncio.wait_for(self.process.wait(), grace_s)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    async def restart(self, number: signal.Signals, down_s: float) -> None:
        await self.stop(number)
        await asyncio.sleep(down_s)
        await self.start()
        self.restarts += 1


def _environment() -> dict[str, str]:
    # The stack's own settings only: no proxy, OTLP or gateway variables from the caller's shell.
    return {k: v for k, v in os.environ.items() if not k.startswith(("LLMGW_", "OTEL_"))}


async def _wait_for_port(port: int, component: Component) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        assert component.process is not None
        if component.process.returncode is not None:
            raise RuntimeError(f"{component.name} exited at start; see {component.log}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{component.name} did not listen on {port} within {STARTUP_S:.0f} s")


@dataclass
class Stack:
    """The started components and where their state lives."""

    data_dir: Path
    redis: Component
    store: Component
    workers: list[Component]
    gateway: Component
    metrics_port: int
    components: list[Component] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"

    @property
    def ledger(self) -> Path:
        return self.data_dir / "audit.db"

    @property
    def spool(self) -> Path:
        return self.data_dir / "audit-spool.db"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis.port}/0"

    async def close(self) -> None:
        self.redis.send(signal.SIGCONT)  # a paused Redis cannot exit
        for component in reversed(self.components):
            await component.stop()


def _script(name: str, *args: str) -> list[str]:
    """A console script of this installation (beside the running interpreter)."""
    return [str(Path(sys.executable).parent / name), *args]


async def start_stack(data_dir: Path, *, workers: int = 2) -> Stack:
    """Start every component and wait until the gateway reports SERVING."""
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    redis_port, store_port, gateway_port, metrics_port = (free_port() for _ in range(4))
    redis = Component(
        "redis",
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        logs / "redis.log",
        redis_port,
    )  # fmt: skip
    store = Component(
        "audit-store",
        _script("llm-audit", "serve", "--listen", f"127.0.0.1:{store_port}",
                "--db", str(data_dir / "audit.db"), "--keys-dir", str(data_dir / "store-keys")),
        logs / "store.log",
        store_port,
    )  # fmt: skip
    sims = []
    for index in range(workers):
        port = free_port()
        sims.append(
            Component(
                f"worker-{index}",
                _script("llm-worker", "serve", "--engine", "sim", "--listen", f"127.0.0.1:{port}",
                        "--pool", "onprem-gpu", "--ttft-ms", "20", "--itl-ms", "5",
                        "--grace", "1"),
                logs / f"worker-{index}.log",
                port,
            )
        )  # fmt: skip
    config = data_dir / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(data_dir),
                "server": {"listen": f"127.0.0.1:{gateway_port}", "shutdown_grace_s": 5},
                "routing": {"workers": [f"127.0.0.1:{w.port}" for w in sims]},
                "auth": {
                    "issuer": DEV_ISSUER,
                    "audience": DEV_AUDIENCE,
                    "algorithms": ["EdDSA"],
                    "dev_key_file": str(ensure_dev_key(data_dir)),
                },
                "policy": {"directory": str(POLICY), "reload_interval_s": 0},
                "limits": {"redis_url": f"redis://127.0.0.1:{redis_port}/0"},
                "audit": {
                    "spool_path": str(data_dir / "audit-spool.db"),
                    "source": SOURCE,
                    "store_target": f"127.0.0.1:{store_port}",
                },
                "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
            }
        )
    )
    gateway = Component(
        "gateway",
        _script("llm-gateway", "serve", "--config", str(config)),
        logs / "gateway.log",
        gateway_port,
    )
    stack = Stack(data_dir, redis, store, sims, gateway, metrics_port)
    for component in (redis, store, *sims, gateway):
        await component.start()
        stack.components.append(component)
    await wait_serving(stack.target)
    return stack


async def wait_serving(target: str, within_s: float = STARTUP_S) -> None:
    """Wait until the gateway's overall health is SERVING."""
    deadline = time.monotonic() + within_s
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"gateway {target} not SERVING within {within_s:.0f} s")


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
