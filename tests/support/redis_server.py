"""A real `redis-server` on a free loopback port in a temp dir, with stop()/start() for outages."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support.ports import free_port

_START_TIMEOUT_S = 10.0
# Keeps the single-threaded server busy for ARGV[1] microseconds, like a stuck or overloaded Redis.
BUSY_SCRIPT = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > tonumber(ARGV[1])
return 1
"""


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is a valid port and free too."""
    while True:
        port = free_port()
        if port + 10_000 > 65_535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port


def resp(*args: str) -> bytes:
    """One Redis command encoded in RESP, for raw-socket test setup."""
    return f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
    )


class RedisServer:
    """One redis-server process without persistence, bound to 127.0.0.1.

    `stop()` kills it (an abrupt outage, state lost); `start()` brings it back on the same port,
    so clients configured with `url` reconnect on their own. `extra_args` are passed through
    (e.g. `("--cluster-enabled", "yes")`). Use as a context manager or call `close()`.
    """

    def __init__(self, *, extra_args: tuple[str, ...] = (), binary: str = "redis-server") -> None:
        path = shutil.which(binary)
        if path is None:
            raise RuntimeError(f"{binary} not found on PATH: install Debian's redis-server package")
        self._binary = path
        self._extra_args = extra_args
        self._dir = Path(tempfile.mkdtemp(prefix="redis-test-"))
        self._process: subprocess.Popen[bytes] | None = None
        # A cluster node also listens on port + 10000 (its cluster bus).
        cluster = "--cluster-enabled" in extra_args
        self.port = free_cluster_port() if cluster else free_port()

    @property
    def url(self) -> str:
        """The redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        if self.running:
            return
        args = [
            self._binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self._dir),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "yes",
            *self._extra_args,
        ]  # fmt: skip
        log = (self._dir / "redis.log").open("ab")
        self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self.ping():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self._dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{tail}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill the server at once, as a crash or network partition would look to clients."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait(timeout=10)
        self._process = None

    def ping(self) -> bool:
        """True if the server answers PING right now (PONG, or NOAUTH when it wants a password)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        """Send one command in RESP and return the raw first reply chunk (for test setup)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(resp(*args))
            return sock.recv(65536)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
