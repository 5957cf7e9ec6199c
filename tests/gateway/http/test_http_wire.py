"""The HTTP door on the wire: SSE framing byte for byte, headers, bodies, disconnects."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from audit.record import Outcome
from gateway.process.server import GatewayHandle
from tests.gateway.http.httpkit import MODEL, new_records
from tests.helpers import StartGateway, StartWorker, wait_until
from workers.server import WorkerHandle
from workers.sim import SimConfig

CHAT = [{"role": "user", "content": "Summarise the ward round"}]


@pytest.fixture
async def session(mint: Callable[..., str]) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {mint()}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        yield s


async def on_a_slow_worker(
    start_sim_worker: StartWorker,
    start_test_gateway: StartGateway,
    http_gateway: GatewayHandle,
    name: str,
    **server: Any,
) -> tuple[WorkerHandle, GatewayHandle]:
    """A second gateway, with the fixture's settings (`server` fields changed) and its own data
    directory, on a worker that takes 20 ms a token."""
    slow = await start_sim_worker(SimConfig(time_to_first_token_ms=5, inter_token_latency_ms=20))
    settings = http_gateway.pipeline.settings
    settings = replace(
        settings,
        data_dir=settings.data_dir.with_name(name),
        server=replace(settings.server, **server),
    )
    return slow, await start_test_gateway(slow, settings=settings)


def events(raw: bytes) -> list[bytes]:
    """The `data:` payloads of a complete SSE body, checking every line's framing."""
    assert raw.endswith(b"\n\n")
    payloads = []
    for block in raw[:-2].split(b"\n\n"):
        assert block.startswith(b"data: ") and b"\n" not in block, block
        payloads.append(block.removeprefix(b"data: "))
    return payloads


async def test_sse_framing_of_a_streamed_chat(
    session: aiohttp.ClientSession, base_url: str, http_gateway: GatewayHandle
) -> None:
    body = {
        "model": MODEL,
        "messages": CHAT,
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with session.post(f"{base_url}/chat/completions", json=body) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Cache-Control"] == "no-cache"
        raw = await response.read()
    payloads = events(raw)
    assert payloads[-1] == b"[DONE]"
    chunks: list[dict[str, Any]] = [json.loads(p) for p in payloads[:-1]]
    *texts, last, usage = chunks
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert texts[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["usage"] is None for c in [*texts, last])
    assert all(c["choices"][0]["finish_reason"] is None for c in texts)
    assert last["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "length",
    }
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 5
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in texts)
    assert text
    [record] = await new_records(http_gateway, set())
    assert record.interface == "openai-http" and record.outcome is Outcome.OK
    assert response.headers["x-request-id"] == record.record_id


async def test_stream_without_usage_has_no_usage_event(
    session: aiohttp.ClientSession, base_url: str
) -> None:
    body = {"model": MODEL, "prompt": "The ward round", "max_tokens": 3, "stream": True}
    async with session.post(f"{base_url}/completions", json=body) as response:
        payloads = events(await response.read())
    assert payloads[-1] == b"[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert {c["object"] for c in chunks} == {"text_completion"}


async def test_quota_headers_are_response_headers(
    session: aiohttp.ClientSession,
    base_url: str,
    mint: Callable[..., str],
) -> None:
    headers = {"Authorization": f"Bearer {mint(department='slow')}"}
    body = {"model": MODEL, "messages": CHAT, "max_tokens": 2}
    async with session.post(f"{base_url}/chat/completions", json=body, headers=headers) as r:
        assert r.status == 200
        quota = {k.lower(): v for k, v in r.headers.items() if k.lower().startswith("llmgw-quota")}
    assert quota, "a limited department gets its remaining quota"
    assert all(v.strip() for v in quota.values())


@pytest.mark.parametrize(
    ("data", "param"),
    [
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        (json.dumps({"messages": CHAT}).encode(), "model"),
        (json.dumps({"model": MODEL, "messages": []}).encode(), "messages"),
        (
            json.dumps({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}).encode(),
            "messages[0].role",
        ),
        (
            json.dumps({"model": MODEL, "messages": CHAT, "max_tokens": 10**6}).encode(),
            "max_tokens",
        ),
        (json.dumps({"model": MODEL, "messages": CHAT, "temperature": 3}).encode(), "temperature"),
    ],
)
async def test_bad_bodies_are_400_and_audited(
    session: aiohttp.ClientSession,
    base_url: str,
    http_gateway: GatewayHandle,
    data: bytes,
    param: str,
) -> None:
    seen = {r.record_id for r in await http_gateway.pipeline.audit.spool.pending(10_000)}
    async with session.post(f"{base_url}/chat/completions", data=data) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    [record] = await new_records(http_gateway, seen)
    assert record.status_code == "INVALID_ARGUMENT" and record.interface == "openai-http"


async def test_text_content_parts_are_joined(session: aiohttp.ClientSession, base_url: str) -> None:
    parts = [{"type": "text", "text": "Summarise "}, {"type": "text", "text": "the round"}]
    body = {"model": MODEL, "messages": [{"role": "user", "content": parts}], "max_tokens": 2}
    async with session.post(f"{base_url}/chat/completions", json=body) as response:
        assert response.status == 200
    image = [{"type": "image_url", "image_url": {"url": "data:,"}}]
    body["messages"] = [{"role": "user", "content": image}]
    async with session.post(f"{base_url}/chat/completions", json=body) as response:
        assert response.status == 400
        assert (await response.json())["error"]["param"] == "messages[0].content[0]"


async def test_disconnect_cancels_the_generation(
    start_sim_worker: StartWorker,
    start_test_gateway: StartGateway,
    http_gateway: GatewayHandle,
    base_url: str,
    mint: Callable[..., str],
) -> None:
    slow, gateway = await on_a_slow_worker(
        start_sim_worker, start_test_gateway, http_gateway, "gw-slow"
    )
    assert gateway.http is not None
    seen = {r.record_id for r in await gateway.pipeline.audit.spool.pending(10_000)}
    body = {"model": MODEL, "messages": CHAT, "max_tokens": 500, "stream": True}
    headers = {"Authorization": f"Bearer {mint()}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        response = await s.post(f"{gateway.http.base_url}/chat/completions", json=body)
        received = 0
        async for line in response.content:
            received += line.startswith(b"data: ")
            if received >= 3:
                break
        assert slow.engine.load().active == 1
        response.close()  # drops the connection mid-stream
        closed_at = time.monotonic()
    await wait_until(lambda: slow.engine.load().active == 0, within=0.5)
    assert time.monotonic() - closed_at < 0.5
    assert slow.engine.cancelled == 1  # type: ignore[attr-defined]
    for _ in range(100):
        records = await new_records(gateway, seen)
        if records:
            break
        await asyncio.sleep(0.01)
    [record] = records
    assert record.outcome is Outcome.CANCELLED and record.interface == "openai-http"
    assert 0 < record.completion_tokens < 500


async def test_failure_after_the_first_token_ends_the_stream_with_an_error_event(
    start_sim_worker: StartWorker,
    start_test_gateway: StartGateway,
    http_gateway: GatewayHandle,
    mint: Callable[..., str],
) -> None:
    slow, gateway = await on_a_slow_worker(
        start_sim_worker, start_test_gateway, http_gateway, "gw-failing"
    )
    assert gateway.http is not None
    body = {"model": MODEL, "messages": CHAT, "max_tokens": 500, "stream": True}
    headers = {"Authorization": f"Bearer {mint()}"}
    lines: list[bytes] = []
    async with (
        aiohttp.ClientSession(headers=headers) as s,
        s.post(f"{gateway.http.base_url}/chat/completions", json=body) as response,
    ):
        assert response.status == 200
        async for line in response.content:
            lines.append(line)
            if len(lines) == 4:  # two events, each a data line and a blank line
                await slow.stop(grace=0)  # the worker dies mid-answer
    payloads = events(b"".join(lines))
    assert b"[DONE]" not in payloads
    error = json.loads(payloads[-1])["error"]
    assert error["type"] == "service_unavailable" and error["message"]
    [record] = await new_records(gateway, set())
    assert record.outcome is Outcome.ERROR and record.interface == "openai-http"


async def test_a_call_past_the_http_deadline_ends_with_504_timeout_and_is_audited(
    start_sim_worker: StartWorker,
    start_test_gateway: StartGateway,
    http_gateway: GatewayHandle,
    mint: Callable[..., str],
) -> None:
    # 500 tokens at 20 ms each take 10 s; HTTP calls get server.default_deadline_s, here 0.5 s.
    slow, gateway = await on_a_slow_worker(
        start_sim_worker, start_test_gateway, http_gateway, "gw-deadline", default_deadline_s=0.5
    )
    assert gateway.http is not None
    url = f"{gateway.http.base_url}/chat/completions"
    body = {"model": MODEL, "messages": CHAT, "max_tokens": 500}
    seen: set[str] = set()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {mint()}"}) as s:
        started = time.monotonic()
        async with s.post(url, json=body) as response:
            assert response.status == 504
            error = (await response.json())["error"]
        assert error["type"] == "timeout" and error["message"]
        assert time.monotonic() - started < 5
        await wait_until(lambda: slow.engine.load().active == 0, within=2)
        [record] = await new_records(gateway, seen)
        assert record.outcome is Outcome.DEADLINE and record.interface == "openai-http"
        seen.add(record.record_id)

        async with s.post(url, json={**body, "stream": True}) as response:
            assert response.status == 200  # tokens went out before the deadline passed
            payloads = events(await response.read())
    assert b"[DONE]" not in payloads
    assert json.loads(payloads[-1])["error"]["type"] == "timeout"
    await wait_until(lambda: slow.engine.load().active == 0, within=2)
    [record] = await new_records(gateway, seen)
    assert record.outcome is Outcome.DEADLINE and 0 < record.completion_tokens < 500
