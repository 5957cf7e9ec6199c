"""The Python client library against the real dev stack: calls, streams and typed refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from llmgw_client import (
    AsyncClient,
    Client,
    DeadlineExceeded,
    InvalidArgument,
    PolicyDenied,
    RateLimited,
    RetryPolicy,
    TokenFile,
    Unauthenticated,
    pb,
)

from tests.clients.conftest import DevStack

pytestmark = pytest.mark.integration
LLAMA = "llama-3.1-8b-instruct"
QWEN = "qwen2.5-7b-instruct"


def test_lists_the_departments_models(dev_stack: DevStack) -> None:
    with Client(dev_stack.target, token=TokenFile(dev_stack.token_file)) as client:
        models = client.list_models()
    assert [m.name for m in models] == [LLAMA, QWEN]
    assert all(m.ready_workers == 1 for m in models)


def test_unary_and_chat_generation(dev_stack: DevStack) -> None:
    with Client(dev_stack.target, token=TokenFile(dev_stack.token_file)) as client:
        answer = client.generate(
            LLAMA, "Summarise the ward round", max_tokens=8, classification="internal"
        )
        chat = client.generate(
            QWEN,
            messages=[("system", "Be brief."), ("user", "Summarise the ward round")],
            max_tokens=5,
            classification="internal",
            client_request_id="chat-1",
        )
    assert answer.text and answer.model == LLAMA and answer.request_id
    assert answer.usage.completion_tokens == 8
    assert answer.finish_reason == pb.FINISH_REASON_LENGTH
    assert chat.text and chat.model == QWEN and chat.usage.completion_tokens == 5


def test_stream_yields_chunks_then_the_final_message(dev_stack: DevStack) -> None:
    with Client(dev_stack.target, token=dev_stack.token_file.read_text()) as client:
        messages = list(
            client.generate_stream(LLAMA, "Hello", max_tokens=12, classification="internal")
        )
    chunks, final = messages[:-1], messages[-1]
    assert chunks and all(m.text for m in chunks)
    assert final.finish_reason == pb.FINISH_REASON_LENGTH and not final.text
    assert sum(m.token_count for m in chunks) == final.usage.completion_tokens == 12
    assert len({m.request_id for m in messages}) == 1


def test_policy_denial_names_its_rule(dev_stack: DevStack) -> None:
    token = dev_stack.token("administration", "alice-denied", "clerk")
    with Client(dev_stack.target, token=token) as client, pytest.raises(PolicyDenied) as denied:
        client.generate(LLAMA, "hello", max_tokens=4)
    assert denied.value.rule_id == "models.not_allowed"
    assert denied.value.error_metadata["department"] == "administration"
    assert "models.not_allowed" in denied.value.message


def test_invalid_arguments_name_the_field_or_the_rule(dev_stack: DevStack) -> None:
    with Client(dev_stack.target, token=TokenFile(dev_stack.token_file)) as client:
        with pytest.raises(InvalidArgument) as empty:
            client.generate(LLAMA, "", max_tokens=4, classification="internal")
        with pytest.raises(InvalidArgument) as unclassified:
            client.generate(LLAMA, "hello", max_tokens=4)  # emergency requires a classification
    assert [v.field for v in empty.value.field_violations] == ["prompt"]
    assert unclassified.value.rule_id == "classification.required"


def test_bad_token_is_unauthenticated(dev_stack: DevStack) -> None:
    with Client(dev_stack.target, token="not-a-jwt") as client, pytest.raises(Unauthenticated):
        client.list_models()


def test_rate_limit_carries_retry_after_and_the_quota(dev_stack: DevStack) -> None:
    # administration allows each user 20 requests per minute; the 21st is refused. A retry policy
    # does not sit out a wait longer than its max_retry_after_s: the refusal is raised at once.
    token = dev_stack.token("administration", "bob-busy", "clerk")
    retry = RetryPolicy(max_attempts=3, max_retry_after_s=0.01)
    with Client(dev_stack.target, token=token, retry=retry) as client:
        for _ in range(20):
            client.generate(QWEN, "hi", max_tokens=1)
        with pytest.raises(RateLimited) as limited:
            client.generate(QWEN, "hi", max_tokens=1)
    assert limited.value.quota == "user.requests_per_minute"
    assert limited.value.retry_after is not None and 0.01 < limited.value.retry_after <= 60.0
    assert limited.value.reason == f"limits.{limited.value.quota}"
    assert limited.value.quota_violations[0].subject == "department:administration"


def test_deadline_exceeded_mid_stream(dev_stack: DevStack) -> None:
    client = Client(dev_stack.target, token=TokenFile(dev_stack.token_file))
    with client, pytest.raises(DeadlineExceeded):
        for _ in client.generate_stream(
            LLAMA, "long", max_tokens=2000, classification="internal", timeout=0.3
        ):
            pass


def test_token_file_is_re_read_when_it_changes(dev_stack: DevStack, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("stale-token\n")
    with Client(dev_stack.target, token=TokenFile(token_file)) as client:
        with pytest.raises(Unauthenticated):
            client.list_models()
        token_file.write_text(dev_stack.token_file.read_text())
        os.utime(token_file, ns=(0, os.stat(token_file).st_mtime_ns + 1))
        assert client.list_models()


def test_callable_token_is_asked_before_every_call(dev_stack: DevStack) -> None:
    asked: list[int] = []

    def token() -> str:
        asked.append(1)
        return dev_stack.token_file.read_text()

    with Client(dev_stack.target, token=token) as client:
        client.list_models()
        client.list_models()
    assert len(asked) == 2


async def test_async_client(dev_stack: DevStack) -> None:
    async with AsyncClient(dev_stack.target, token=TokenFile(dev_stack.token_file)) as client:
        models = await client.list_models()
        answer = await client.generate(LLAMA, "hi", max_tokens=3, classification="internal")
        streamed = [
            m
            async for m in client.generate_stream(
                LLAMA, "hi", max_tokens=3, classification="internal"
            )
        ]
        denied_token = dev_stack.token("administration", "carol-async", "clerk")
    assert [m.name for m in models] == [LLAMA, QWEN]
    assert answer.usage.completion_tokens == 3
    assert streamed[-1].usage.completion_tokens == 3
    async with AsyncClient(dev_stack.target, token=denied_token) as denied_client:
        with pytest.raises(PolicyDenied) as denied:
            await denied_client.generate(LLAMA, "hi", max_tokens=3)
    assert denied.value.rule_id == "models.not_allowed"
