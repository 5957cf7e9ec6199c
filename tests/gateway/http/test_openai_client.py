"""The official `openai` package against the HTTP door: answers, refusals, one audit record each."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from audit.record import AuditRecord, Outcome
from gateway.process.server import GatewayHandle
from tests.gateway.http.httpkit import MODEL, OTHER_MODEL, new_records

Client = Callable[[str], openai.AsyncOpenAI]
CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Summarise the ward round"}]


async def one_record(gateway: GatewayHandle, seen: set[str]) -> AuditRecord:
    [record] = await new_records(gateway, seen)
    assert record.interface == "openai-http"
    return record


async def test_lists_the_callers_models(
    client: openai.AsyncOpenAI, client_for: Client, mint: Callable[..., str]
) -> None:
    models = await client.models.list()
    assert sorted(m.id for m in models.data) == [MODEL, OTHER_MODEL]
    async with client_for(mint(department="narrow")) as narrow:
        assert [m.id for m in (await narrow.models.list()).data] == [MODEL]


async def test_chat_completion(client: openai.AsyncOpenAI, http_gateway: GatewayHandle) -> None:
    seen: set[str] = set()
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=CHAT, max_tokens=6, extra_body={"classification": "internal"}
    )
    answer = raw.parse()
    assert answer.object == "chat.completion"
    assert answer.model == MODEL
    [choice] = answer.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 6
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 6
    record = await one_record(http_gateway, seen)
    assert record.outcome is Outcome.OK and record.completion_tokens == 6
    assert record.classification == "internal"
    assert answer.id == f"chatcmpl-{record.record_id}"
    assert raw.headers["x-request-id"] == record.record_id


async def test_sync_client_in_a_thread(base_url: str, mint: Callable[..., str]) -> None:
    def call() -> str:
        with openai.OpenAI(base_url=base_url, api_key=mint(), max_retries=0) as sync:
            answer = sync.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=3)
            return answer.choices[0].message.content or ""

    assert await asyncio.to_thread(call)


async def test_streams_a_chat_completion_with_usage(
    client: openai.AsyncOpenAI, http_gateway: GatewayHandle
) -> None:
    seen: set[str] = set()
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=CHAT,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-llmgw-purpose": "treatment"},
    )
    texts, reasons, usages = [], [], []
    async for chunk in stream:
        if chunk.choices:
            texts.append(chunk.choices[0].delta.content or "")
            reasons.append(chunk.choices[0].finish_reason)
        if chunk.usage is not None:
            usages.append(chunk.usage)
    assert "".join(texts)
    assert reasons[-1] == "length" and set(reasons[:-1]) == {None}
    [usage] = usages
    assert usage.completion_tokens == 8 and usage.prompt_tokens > 0
    record = await one_record(http_gateway, seen)
    assert record.outcome is Outcome.OK and record.completion_tokens == 8
    assert record.purpose == "treatment"


async def test_legacy_completions(client: openai.AsyncOpenAI, http_gateway: GatewayHandle) -> None:
    seen: set[str] = set()
    answer = await client.completions.create(model=MODEL, prompt="The ward round", max_tokens=4)
    assert answer.object == "text_completion" and answer.choices[0].text
    assert answer.usage is not None and answer.usage.completion_tokens == 4
    await one_record(http_gateway, seen)
    parts = [
        c.choices[0].text
        async for c in await client.completions.create(
            model=MODEL, prompt="The ward round", max_tokens=4, stream=True
        )
    ]
    assert "".join(parts)
    await one_record(http_gateway, seen)


async def test_model_the_department_may_not_use_is_permission_denied(
    client_for: Client, mint: Callable[..., str], http_gateway: GatewayHandle
) -> None:
    seen: set[str] = set()
    async with client_for(mint(department="narrow")) as narrow:
        with pytest.raises(openai.PermissionDeniedError) as info:
            await narrow.chat.completions.create(model=OTHER_MODEL, messages=CHAT, max_tokens=2)
    error = info.value.body
    assert isinstance(error, dict) and error["type"] == "permission_error"
    assert error["code"]  # the policy rule that refused it
    record = await one_record(http_gateway, seen)
    assert record.outcome is Outcome.DENIED and record.status_code == "PERMISSION_DENIED"
    assert error["code"] in record.rules_fired


async def test_rate_limit_is_429_with_retry_after(
    client_for: Client, mint: Callable[..., str], http_gateway: GatewayHandle
) -> None:
    seen: set[str] = set()
    async with client_for(mint(department="slow")) as slow:
        await slow.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=2)
        with pytest.raises(openai.RateLimitError) as info:
            await slow.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=2)
    retry_after = int(info.value.response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "limits.user.requests_per_minute"
    ok, refused = sorted(await new_records(http_gateway, seen), key=lambda r: r.time_ns)
    assert ok.outcome is Outcome.OK
    assert refused.outcome is Outcome.DENIED and refused.status_code == "RESOURCE_EXHAUSTED"
    assert {ok.interface, refused.interface} == {"openai-http"}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": 1.0}, "frequency_penalty"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"mirostat": 2}, "mirostat"),
    ],
)
async def test_unsupported_parameter_is_a_bad_request_naming_it(
    client: openai.AsyncOpenAI, http_gateway: GatewayHandle, extra: dict[str, object], param: str
) -> None:
    seen = {r.record_id for r in await http_gateway.pipeline.audit.spool.pending(10_000)}
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model=MODEL, messages=CHAT, max_tokens=2, extra_body=extra
        )
    error = info.value.body
    assert isinstance(error, dict) and error["param"] == param
    assert param in error["message"] and error["type"] == "invalid_request_error"
    record = await one_record(http_gateway, seen)
    assert record.status_code == "INVALID_ARGUMENT"


async def test_neutral_values_are_accepted(client: openai.AsyncOpenAI) -> None:
    answer = await client.chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=2, n=1, presence_penalty=0, user="ward-7"
    )
    assert answer.choices[0].message.content


async def test_bad_token_is_authentication_error(
    client_for: Client, http_gateway: GatewayHandle
) -> None:
    seen: set[str] = set()
    async with client_for("not-a-jwt") as bad:
        with pytest.raises(openai.AuthenticationError) as info:
            await bad.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=2)
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()
    error = info.value.body
    assert isinstance(error, dict) and error["type"] == "authentication_error"
    # The same refusal from the same address in one window: audited once now, and once more as
    # an aggregate with its count when the window ends (nothing an anonymous flood can amplify).
    records = await new_records(http_gateway, seen)
    assert len(records) == 1 and records[0].repeats == 0
    await http_gateway.pipeline.anonymous.flush(http_gateway.pipeline.audit, everything=True)
    records += await new_records(http_gateway, seen)
    assert [r.repeats for r in records] == [0, 1]
    assert {(r.interface, r.status_code) for r in records} == {("openai-http", "UNAUTHENTICATED")}
