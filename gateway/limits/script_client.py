"""The limiter's connection to Redis: one pipelined connection that runs Lua scripts.

Every request costs the limiter two script calls (admit, complete). Through redis-py's asyncio
client each call spent ~180 us of gateway CPU on the development VM, most of it in per-command
bookkeeping (pool checkout, locks, Python-side RESP packing and parsing): two calls were about a
fifth of the request path. The limiter needs only EVALSHA, so it talks to Redis through this:

- one connection per process; commands are packed by hiredis (C) and every command issued in one
  event-loop iteration goes out in one write (pipelining), so concurrent admissions share a
  syscall and their replies, parsed by hiredis, arrive in one wake-up;
- replies come back in order, so each command's future waits in a FIFO;
- `socket_timeout_s` bounds how long Redis may stay silent while commands wait: then the
  connection is dropped and every waiting command fails, so a dead peer is not waited on forever
  (the caller's own, shorter, decision timeout bounds each admission);
- a lost connection fails its waiting commands and the next command reconnects;
- `NOSCRIPT` (Redis restarted or flushed its script cache) is answered by loading the script and
  running it again.

Failures are `ConnectionError` (could not connect, connection lost, bad reply), `TimeoutError`
(Redis silent for `socket_timeout_s`) and `ReplyError` (Redis answered with an error). It does
not import redis-py, whose import alone costs the gateway process ~11 MB of memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

Arg = str | int | float | bytes


class ReplyError(Exception):
    """Redis answered a command with an error (e.g. a failing script)."""


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and its SHA-1, the name EVALSHA runs it by."""

    body: str
    sha: str

    @classmethod
    def of(cls, body: str) -> Script:
        return cls(body, hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest())


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where Redis is and how to log in, from a `redis://`, `rediss://` or `unix://` URL."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None  # a unix socket
    tls: ssl.SSLContext | None = None
    username: str | None = None
    password: str | None = None
    db: int = 0

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        """Parse `url`; TLS (`rediss://`) verifies the server against the system CAs or the
        `ssl_ca_certs` query parameter, and presents `ssl_certfile`/`ssl_keyfile` if given."""
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"db", "password", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"}
        if unknown:
            raise ValueError(
                f"redis URL: unsupported parameter(s) {', '.join(sorted(unknown))}; supported: "
                "db, password, ssl_ca_certs, ssl_certfile, ssl_keyfile"
            )
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else query.get("password")
        if parts.scheme == "unix":
            return cls(
                path=unquote(parts.path),
                username=username,
                password=password,
                db=int(query.get("db", 0)),
            )
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"redis URL: expected redis://, rediss:// or unix://, got {url!r}")
        tls = None
        if parts.scheme == "rediss":
            tls = ssl.create_default_context(cafile=query.get("ssl_ca_certs"))
            if "ssl_certfile" in query:
                tls.load_cert_chain(query["ssl_certfile"], query.get("ssl_keyfile"))
        path_db = parts.path.lstrip("/")
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or 6379,
            tls=tls,
            username=username,
            password=password,
            db=int(query.get("db", path_db or 0)),
        )


class ScriptClient:
    """Runs Lua scripts on one Redis over one lazily opened, pipelined connection."""

    def __init__(
        self, address: RedisAddress, *, connect_timeout_s: float, socket_timeout_s: float
    ) -> None:
        self._address = address
        self._connect_timeout_s = connect_timeout_s
        self._socket_timeout_s = socket_timeout_s
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    @classmethod
    def from_url(
        cls, url: str, *, connect_timeout_s: float, socket_timeout_s: float
    ) -> ScriptClient:
        return cls(
            RedisAddress.from_url(url),
            connect_timeout_s=connect_timeout_s,
            socket_timeout_s=socket_timeout_s,
        )

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """EVALSHA `script`; loads it first if Redis does not know it (yet or any more)."""
        connection = self._connection or await self._connect()
        try:
            return await connection.command(("EVALSHA", script.sha, len(keys), *keys, *args))
        except ReplyError as err:
            if not str(err).startswith("NOSCRIPT"):
                raise
        return await connection.command(("EVAL", script.body, len(keys), *keys, *args))

    async def command(self, *parts: Arg) -> Any:
        """Any other command (for tests and tools; the limiter runs scripts)."""
        connection = self._connection or await self._connect()
        return await connection.command(parts)

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close(ConnectionError("the limiter's Redis client was closed"))

    async def _connect(self) -> _Connection:
        # Every caller arriving while a connection is being opened waits for that one; a caller
        # that stops waiting does not stop the attempt for the others.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._connect_done)
        return await asyncio.shield(self._connecting)

    def _connect_done(self, attempt: asyncio.Future[_Connection]) -> None:
        # Whatever the outcome, the next caller that finds no connection starts a new attempt.
        self._connecting = None
        if not attempt.cancelled():
            attempt.exception()  # read, so a failure nobody awaited is not logged as lost

    async def _open(self) -> _Connection:
        address = self._address
        where = address.path or f"{address.host}:{address.port}"
        loop = asyncio.get_running_loop()
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                try:
                    if address.path is not None:
                        _, connection = await loop.create_unix_connection(
                            lambda: _Connection(self), address.path
                        )
                    else:
                        _, connection = await loop.create_connection(
                            lambda: _Connection(self), address.host, address.port, ssl=address.tls
                        )
                except OSError as err:
                    raise ConnectionError(f"cannot connect to Redis at {where}: {err}") from err
                await connection.log_in(address)
                self._connection = connection
        except TimeoutError as err:
            raise ConnectionError(
                f"cannot connect to Redis at {where} within {self._connect_timeout_s}s "
                "(limits.connect_timeout_s)"
            ) from err
        finally:
            if connection is not None and self._connection is not connection:
                connection.close(ConnectionError("connecting to Redis failed"))
        return connection

    def _lost(self, connection: _Connection) -> None:
        if self._connection is connection:
            self._connection = None


class _Connection(asyncio.Protocol):
    """One socket: commands out in order, replies matched to a FIFO of futures."""

    def __init__(self, client: ScriptClient) -> None:
        self._client = client
        self._socket_timeout_s = client._socket_timeout_s
        self._reader = hiredis.Reader(encoding="utf-8")
        self._transport: asyncio.Transport | None = None
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._outgoing: list[bytes] = []
        self._last_reply = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._error: BaseException | None = None
        self._loop = asyncio.get_running_loop()

    async def log_in(self, address: RedisAddress) -> None:
        if address.password is not None:
            credentials = (
                (address.username, address.password) if address.username else (address.password,)
            )
            try:
                await self.command(("AUTH", *credentials))
            except ReplyError as err:
                raise ConnectionError(f"Redis refused the credentials: {err}") from err
        if address.db:
            await self.command(("SELECT", address.db))

    def command(self, parts: Sequence[Arg]) -> asyncio.Future[Any]:
        """Queue one command; its reply (or error) resolves the returned future."""
        if self._error is not None:
            raise ConnectionError(str(self._error))
        future = self._loop.create_future()
        if not self._waiting:
            self._last_reply = time.monotonic()  # silence is timed from the first waiting command
        self._waiting.append(future)
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        # hiredis's stub types the tuple as one element long; any length is packed.
        self._outgoing.append(hiredis.pack_command(tuple(parts)))  # type: ignore[arg-type]
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(self._socket_timeout_s, self._check_silence)
        return future

    def close(self, error: BaseException) -> None:
        self._fail(error)
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        self._last_reply = time.monotonic()
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as err:
                self.close(ConnectionError(f"Redis sent a malformed reply: {err}"))
                return
            if reply is False:
                return
            if not self._waiting:
                self.close(ConnectionError("Redis sent a reply nobody asked for"))
                return
            future = self._waiting.popleft()
            if future.done():
                continue  # its caller stopped waiting (timeout or cancellation)
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(ReplyError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(
            ConnectionError(
                f"connection to Redis lost: {exc!r}" if exc else "Redis closed the connection"
            )
        )

    # internals

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(outgoing))

    def _check_silence(self) -> None:
        self._watchdog = None
        if not self._waiting or self._error is not None:
            return
        silent_for = time.monotonic() - self._last_reply
        if silent_for >= self._socket_timeout_s:
            self.close(
                TimeoutError(
                    f"Redis sent nothing for {silent_for:.3f}s while commands waited "
                    "(limits.socket_timeout_s); reconnecting on the next command"
                )
            )
            return
        self._watchdog = self._loop.call_later(
            self._socket_timeout_s - silent_for, self._check_silence
        )

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
            self._client._lost(self)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        waiting, self._waiting = self._waiting, deque()
        for future in waiting:
            if not future.done():
                future.set_exception(error)
