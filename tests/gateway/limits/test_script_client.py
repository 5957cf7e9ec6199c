"""The limiter's pipelined Redis client against a real redis-server: order, errors, outages."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvloop

from gateway.limits.script_client import RedisAddress, ReplyError, Script, ScriptClient
from tests.support.redis_server import BUSY_SCRIPT, RedisServer

pytestmark = pytest.mark.integration

ECHO = Script.of("return {KEYS[1], ARGV[1]}")


def client_for(url: str, socket_timeout_s: float = 2.0) -> ScriptClient:
    return ScriptClient.from_url(url, connect_timeout_s=2.0, socket_timeout_s=socket_timeout_s)


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[ScriptClient]:
    made = client_for(redis_server.url)
    yield made
    await made.aclose()


def test_url_forms() -> None:
    plain = RedisAddress.from_url("redis://reader:p%40ss@redis.internal:6380/2")
    assert (plain.host, plain.port, plain.db, plain.tls) == ("redis.internal", 6380, 2, None)
    assert (plain.username, plain.password) == ("reader", "p@ss")
    assert RedisAddress.from_url("redis://:only-password@h").password == "only-password"
    assert RedisAddress.from_url("redis://:only-password@h").username is None
    unix = RedisAddress.from_url("unix:///run/redis/redis.sock?db=3")
    assert (unix.path, unix.db) == ("/run/redis/redis.sock", 3)
    assert RedisAddress.from_url("rediss://h:6380/0").tls is not None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h/0?ssl_cert_reqs=none", "unsupported parameter(s) ssl_cert_reqs"),
        ("http://h:6379", "expected redis://, rediss:// or unix://"),
    ],
)
def test_url_errors_say_what_is_supported(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RedisAddress.from_url(url)


async def test_concurrent_calls_each_get_their_own_reply(client: ScriptClient) -> None:
    """Hundreds of calls pipelined on one connection: replies are matched in order."""
    replies = await asyncio.gather(*(client.run(ECHO, [f"key-{i}"], [str(i)]) for i in range(500)))
    assert replies == [[f"key-{i}", str(i)] for i in range(500)]


async def test_script_is_loaded_again_after_redis_forgets_it(
    client: ScriptClient, redis_server: RedisServer
) -> None:
    assert await client.run(ECHO, ["a"], ["1"]) == ["a", "1"]
    redis_server.command("SCRIPT", "FLUSH")
    assert await client.run(ECHO, ["b"], ["2"]) == ["b", "2"]
    assert await client.command("SCRIPT", "EXISTS", ECHO.sha) == [1]


async def test_script_error_is_a_reply_error_and_the_connection_stays_usable(
    client: ScriptClient,
) -> None:
    failing = Script.of("return redis.call('INCR', KEYS[1])")
    await client.command("SET", "not-a-number", "x")
    with pytest.raises(ReplyError, match="not an integer"):
        await client.run(failing, ["not-a-number"], [])
    assert await client.run(ECHO, ["c"], ["3"]) == ["c", "3"]


async def test_cancelled_call_does_not_shift_later_replies(client: ScriptClient) -> None:
    slow = asyncio.ensure_future(client.run(Script.of(BUSY_SCRIPT), ["k"], [50_000]))
    await asyncio.sleep(0.01)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    # The busy script's reply still arrives first and must be dropped, not handed to this call.
    assert await client.run(ECHO, ["d"], ["4"]) == ["d", "4"]


async def test_selects_the_database_of_the_url(redis_server: RedisServer) -> None:
    db3, db0 = client_for(f"redis://127.0.0.1:{redis_server.port}/3"), client_for(redis_server.url)
    try:
        await db3.command("SET", "where", "three")
        assert await db3.command("GET", "where") == "three"
        assert await db0.command("GET", "where") is None
    finally:
        await db3.aclose()
        await db0.aclose()


async def test_password_and_acl_user() -> None:
    with RedisServer(
        extra_args=("--requirepass", "s3cret", "--user", "gw", "on", ">gw-pass", "~*", "+@all")
    ) as locked:
        for url in (
            f"redis://:s3cret@127.0.0.1:{locked.port}/0",
            f"redis://gw:gw-pass@127.0.0.1:{locked.port}/0",
        ):
            good = client_for(url)
            assert await good.run(ECHO, ["e"], ["5"]) == ["e", "5"]
            await good.aclose()
        bad = client_for(f"redis://:wrong@127.0.0.1:{locked.port}/0")
        with pytest.raises(ConnectionError, match="refused the credentials"):
            await bad.run(ECHO, ["f"], ["6"])
        await bad.aclose()


async def test_unix_socket() -> None:
    socket_path = Path(tempfile.mkdtemp(prefix="redis-sock-")) / "redis.sock"
    with RedisServer(extra_args=("--unixsocket", str(socket_path), "--unixsocketperm", "700")):
        over_socket = client_for(f"unix://{socket_path}?db=1")
        assert await over_socket.run(ECHO, ["g"], ["7"]) == ["g", "7"]
        await over_socket.aclose()


async def test_restart_fails_waiting_calls_then_reconnects() -> None:
    with RedisServer() as restarting:
        client = client_for(restarting.url)
        assert await client.run(ECHO, ["h"], ["8"]) == ["h", "8"]
        restarting.stop()
        with pytest.raises(ConnectionError):
            await client.run(ECHO, ["i"], ["9"])
        restarting.start()
        assert await client.run(ECHO, ["j"], ["10"]) == ["j", "10"]
        await client.aclose()


async def test_unreachable_redis_is_a_connection_error() -> None:
    with RedisServer() as gone:
        url = gone.url
    client = client_for(url)
    with pytest.raises(ConnectionError, match="cannot connect"):
        await client.run(ECHO, ["k"], ["11"])
    await client.aclose()


async def test_silent_redis_fails_waiting_calls_after_socket_timeout() -> None:
    """A hung Redis: waiting calls fail within socket_timeout_s, and the next call reconnects."""
    with RedisServer() as hung:
        client = client_for(hung.url, socket_timeout_s=0.2)
        assert await client.run(ECHO, ["l"], ["12"]) == ["l", "12"]
        # Another connection keeps the single-threaded server busy for 1.5 s.
        busy = threading.Thread(target=hung.command, args=("EVAL", BUSY_SCRIPT, "0", "1500000"))
        busy.start()
        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="socket_timeout_s"):
            await client.run(ECHO, ["m"], ["13"])
        waited = time.monotonic() - started
        assert 0.15 <= waited < 1.2, waited
        busy.join()
        assert await client.run(ECHO, ["n"], ["14"]) == ["n", "14"]
        await client.aclose()


def test_runs_on_uvloop_the_gateways_event_loop(redis_server: RedisServer) -> None:
    async def scenario() -> list[object]:
        client = client_for(redis_server.url)
        try:
            return list(await asyncio.gather(*(client.run(ECHO, ["o"], [i]) for i in range(50))))
        finally:
            await client.aclose()

    assert uvloop.run(scenario()) == [["o", str(i)] for i in range(50)]


async def test_a_failed_attempt_nobody_waited_for_is_retried_by_the_next_call() -> None:
    """The only caller gives up while connecting; the attempt then fails (Redis never answers
    AUTH); the next call must open a new connection, not return the old failure."""
    accepted = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.read()  # never answers
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = ScriptClient.from_url(
        f"redis://:pw@127.0.0.1:{port}/0", connect_timeout_s=0.2, socket_timeout_s=5.0
    )
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.run(ECHO, ["p"], ["15"]), 0.05)
        await asyncio.sleep(0.3)  # the abandoned attempt times out meanwhile
        with pytest.raises(ConnectionError, match=r"within 0\.2s"):
            await client.run(ECHO, ["q"], ["16"])
        assert accepted == 2
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
