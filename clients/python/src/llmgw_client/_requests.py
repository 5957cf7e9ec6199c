"""What the sync and asyncio clients share: method paths, request building, call metadata."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from llmgw_client._proto.llmgateway.v1 import gateway_pb2 as pb
from llmgw_client.tokens import TokenProvider

SERVICE = "/llmgateway.v1.InferenceService/"
GENERATE = SERVICE + "Generate"
GENERATE_STREAM = SERVICE + "GenerateStream"
LIST_MODELS = SERVICE + "ListModels"

ROLES = {"system": pb.ROLE_SYSTEM, "user": pb.ROLE_USER, "assistant": pb.ROLE_ASSISTANT}


class RequestOptions(TypedDict, total=False):
    """Keyword arguments of generate() and generate_stream() besides the input.

    Unset sampling values take the model's defaults; policy may clamp or refuse `max_tokens`.
    """

    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    stop: Sequence[str]
    seed: int
    classification: str
    purpose: str
    client_request_id: str
    affinity_key: str


SAMPLING_FIELDS = ("max_tokens", "temperature", "top_p", "top_k", "seed")
REQUEST_FIELDS = ("classification", "purpose", "client_request_id", "affinity_key")


def sampling(options: RequestOptions) -> pb.SamplingParams:
    params = pb.SamplingParams(stop=list(options.get("stop", ())))
    for name in SAMPLING_FIELDS:
        if name in options:
            setattr(params, name, options[name])  # type: ignore[literal-required]
    return params


def chat(messages: Sequence[tuple[str, str] | pb.ChatMessage]) -> pb.ChatInput:
    """Chat input from `(role, content)` pairs (role: system, user, assistant) or ChatMessages."""
    built = []
    for message in messages:
        if isinstance(message, pb.ChatMessage):
            built.append(message)
            continue
        role, content = message
        if role not in ROLES:
            raise ValueError(f"unknown chat role {role!r}; use one of {', '.join(ROLES)}")
        built.append(pb.ChatMessage(role=ROLES[role], content=content))
    return pb.ChatInput(messages=built)


def _check_input(prompt: str | None, messages: object) -> None:
    if (prompt is None) == (messages is None):
        raise ValueError("pass exactly one of prompt= or messages=")


def generate_request(
    model: str,
    prompt: str | None,
    messages: Sequence[tuple[str, str] | pb.ChatMessage] | None,
    options: RequestOptions,
) -> pb.GenerateRequest:
    _check_input(prompt, messages)
    request = pb.GenerateRequest(model=model, sampling=sampling(options))
    for name in REQUEST_FIELDS:
        if name in options:
            setattr(request, name, options[name])  # type: ignore[literal-required]
    if messages is not None:
        request.chat.CopyFrom(chat(messages))
    else:
        request.prompt = prompt or ""
    return request


def stream_request(
    model: str,
    prompt: str | None,
    messages: Sequence[tuple[str, str] | pb.ChatMessage] | None,
    options: RequestOptions,
) -> pb.GenerateStreamRequest:
    # The two request messages have the same fields and numbers, so the bytes carry over.
    unary = generate_request(model, prompt, messages, options)
    return pb.GenerateStreamRequest.FromString(unary.SerializeToString())


def metadata(tokens: TokenProvider | None) -> tuple[tuple[str, str], ...]:
    """The call's metadata: the bearer token, read from its provider for this attempt."""
    if tokens is None:
        return ()
    return (("authorization", f"Bearer {tokens.token()}"),)
