"""OpenAI request bodies to `GenerationRequest`, validated with the gRPC door's limits and words.

Every field of a body is either used, accepted as harmless (`IGNORED`: it asks nothing of the
generation), accepted only at its neutral value (`NEUTRAL`: `n: 1`, `presence_penalty: 0` ...),
or refused with 400 naming it: a parameter the engine does not support is never silently
dropped. `null` counts as absent for every field, as OpenAI's own API treats it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.request.convert import (
    MAX_AFFINITY_CHARS,
    MAX_ID_CHARS,
    MAX_MESSAGES,
    MAX_STOP_CHARS,
    MAX_STOP_SEQUENCES,
)
from gateway.request.domain import ChatTurn, GenerationRequest
from gateway.request.errors import InvalidArgument, bad_request
from gateway.settings import ServerSettings

# Chat roles as the engine knows them; OpenAI's `developer` role is its newer name for `system`.
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_SAMPLING = ("temperature", "top_p", "top_k", "stop", "seed", "max_tokens")
# Fields that change nothing the gateway or the engine does: the caller's own user label
# (the token says who the user is) and the stream flags handled by the door.
IGNORED = frozenset({"user", "stream", "stream_options"})
# Fields accepted only at the value that asks for nothing beyond plain sampling.
NEUTRAL: dict[str, object] = {
    "n": 1,
    "best_of": 1,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logprobs": False,
    "top_logprobs": 0,
    "echo": False,
    "logit_bias": {},
    "parallel_tool_calls": False,
}
_OURS = ("model", "classification", "purpose", *_SAMPLING)
CHAT_FIELDS = frozenset({*_OURS, "messages", "max_completion_tokens"}) | IGNORED
COMPLETION_FIELDS = frozenset({*_OURS, "prompt"}) | IGNORED
_PART = frozenset({"type", "text"})


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A validated body: the generation it asks for and how to answer it."""

    generation: GenerationRequest
    stream: bool
    include_usage: bool


def invalid(field: str, message: str) -> InvalidArgument:
    """A 400 naming `field` (OpenAI's `param`), worded as the gRPC door words it."""
    return InvalidArgument(f"{field}: {message}", details=[bad_request(field, message)])


def chat_request(body: object, headers: Mapping[str, str], limits: ServerSettings) -> HttpRequest:
    """`POST /v1/chat/completions`: validated and converted; InvalidArgument names the field."""
    d = _fields(body, CHAT_FIELDS)
    raw = d.get("messages")
    if not isinstance(raw, list) or not raw:
        raise invalid("messages", "is empty; send at least one message")
    if len(raw) > MAX_MESSAGES:
        raise invalid("messages", f"at most {MAX_MESSAGES} messages")
    turns = tuple(_turn(i, m) for i, m in enumerate(raw))
    if not any(t.content.strip() for t in turns):
        raise invalid("messages", "every message is empty; send some text")
    max_tokens = _int(d, "max_tokens")
    completion_max = _int(d, "max_completion_tokens")
    if max_tokens is not None and completion_max is not None and max_tokens != completion_max:
        raise invalid("max_completion_tokens", "differs from max_tokens; send one of them")
    limit = completion_max if completion_max is not None else max_tokens
    name = "max_completion_tokens" if completion_max is not None else "max_tokens"
    return _request(d, headers, limits, prompt=None, messages=turns, max_tokens=(name, limit))


def completion_request(
    body: object, headers: Mapping[str, str], limits: ServerSettings
) -> HttpRequest:
    """`POST /v1/completions`: validate and convert; raises InvalidArgument naming the field."""
    d = _fields(body, COMPLETION_FIELDS)
    prompt = d.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise invalid("prompt", "must be one string (token arrays and batches are not supported)")
    if not prompt.strip():
        raise invalid("prompt", "is empty; send the text to continue")
    max_tokens = ("max_tokens", _int(d, "max_tokens"))
    return _request(d, headers, limits, prompt=prompt, messages=(), max_tokens=max_tokens)


def _fields(body: object, allowed: frozenset[str]) -> dict[str, Any]:
    """The body's fields, nulls dropped; refuses the unsupported ones by name."""
    if not isinstance(body, dict):
        raise invalid("body", "must be a JSON object")
    d = {k: v for k, v in body.items() if v is not None}
    for key, value in d.items():
        if key in allowed:
            continue
        if key in NEUTRAL:
            if value != NEUTRAL[key]:
                neutral = json.dumps(NEUTRAL[key])
                raise invalid(key, f"is not supported by this gateway; omit it or send {neutral}")
            continue
        raise invalid(key, "is not supported by this gateway; remove it (see docs/openai.md)")
    options = d.get("stream_options", {})
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise invalid("stream_options", "only include_usage is supported")
    return d


def _turn(i: int, message: object) -> ChatTurn:
    if not isinstance(message, dict):
        raise invalid(f"messages[{i}]", "must be an object with role and content")
    unknown = sorted(set(message) - {"role", "content"})
    if unknown:
        raise invalid(f"messages[{i}].{unknown[0]}", "is not supported; send role and content")
    role = _ROLES.get(message.get("role"))  # type: ignore[arg-type]
    if role is None:
        raise invalid(f"messages[{i}].role", "set system, user or assistant")
    return ChatTurn(role, _content(i, message.get("content")))


def _content(i: int, content: object) -> str:
    """A message's text: a string, or a list of text parts (joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or set(part) - _PART:
                raise invalid(f"messages[{i}].content[{j}]", "only text parts are supported")
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid(f"messages[{i}].content[{j}].text", "must be a string")
            texts.append(text)
        return "".join(texts)
    raise invalid(f"messages[{i}].content", "must be a string or a list of text parts")


def _request(
    d: Mapping[str, Any],
    headers: Mapping[str, str],
    limits: ServerSettings,
    *,
    prompt: str | None,
    messages: tuple[ChatTurn, ...],
    max_tokens: tuple[str, int | None],
) -> HttpRequest:
    model = d.get("model")
    if not isinstance(model, str) or not model.strip():
        raise invalid("model", "is required; call GET /v1/models to see the models you may use")
    model = model.strip()
    if len(model) > MAX_ID_CHARS:
        raise invalid("model", f"is longer than {MAX_ID_CHARS} characters")
    name, limit = max_tokens
    if limit is not None and not 1 <= limit <= limits.max_output_tokens:
        raise invalid(name, f"must be between 1 and {limits.max_output_tokens}")
    temperature = _float(d, "temperature")
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        raise invalid("temperature", "must be between 0 and 2")
    top_p = _float(d, "top_p")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise invalid("top_p", "must be greater than 0 and at most 1")
    top_k = _int(d, "top_k")
    if top_k is not None and top_k < 1:
        raise invalid("top_k", "must be at least 1 (or unset for no top-k filtering)")
    stop = d.get("stop", [])
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise invalid("stop", "must be a string or a list of strings")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise invalid("stop", f"at most {MAX_STOP_SEQUENCES} stop sequences")
    if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
        raise invalid("stop", f"each stop sequence must be 1 to {MAX_STOP_CHARS} characters")
    client_id = headers.get("x-llmgw-client-request-id", "")
    if len(client_id) > MAX_ID_CHARS:
        raise invalid("x-llmgw-client-request-id", f"is longer than {MAX_ID_CHARS} characters")
    affinity = headers.get("x-llmgw-affinity-key", "")
    if len(affinity) > MAX_AFFINITY_CHARS:
        raise invalid("x-llmgw-affinity-key", f"is longer than {MAX_AFFINITY_CHARS} characters")
    stream = d.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid("stream", "must be true or false")
    include_usage = d.get("stream_options", {}).get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise invalid("stream_options.include_usage", "must be true or false")
    generation = GenerationRequest(
        model=model,
        prompt=prompt,
        messages=messages,
        max_tokens=limit,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        stop=tuple(stops),
        seed=_int(d, "seed"),
        client_request_id=client_id,
        affinity_key=affinity,
        classification=_label(d, headers, "classification"),
        purpose=_label(d, headers, "purpose"),
    )
    return HttpRequest(generation, stream=stream, include_usage=include_usage)


def _label(d: Mapping[str, Any], headers: Mapping[str, str], name: str) -> str | None:
    """`classification` / `purpose`: the body field, else the `x-llmgw-` header."""
    value = d.get(name, headers.get(f"x-llmgw-{name}", ""))
    if not isinstance(value, str):
        raise invalid(name, "must be a string")
    if len(value) > MAX_ID_CHARS:
        raise invalid(name, f"is longer than {MAX_ID_CHARS} characters")
    return value.strip() or None


def _int(d: Mapping[str, Any], name: str) -> int | None:
    value = d.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(name, "must be an integer")
    return value


def _float(d: Mapping[str, Any], name: str) -> float | None:
    value = d.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(name, "must be a number")
    return float(value)
