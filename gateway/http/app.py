"""The OpenAI-compatible HTTP door: `/v1/chat/completions`, `/v1/completions`, `/v1/models`.

Each handler builds the call context (`Authorization` header, client certificate when the port
serves mTLS) and runs the same pipeline as the gRPC servicer: one exchange per request, whose
exit writes the one audit record of every outcome. aiohttp runs on the process's event loop with
`handler_cancellation`, so a client that disconnects cancels its handler and with it the worker
call, as a cancelled gRPC call does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from gateway.auth.authenticator import Authenticator
from gateway.http import convert, errors
from gateway.http.responses import DONE, Shapes, event, finish_reason, model_list
from gateway.request.call import OPENAI_HTTP, CallContext, new_request_id
from gateway.request.errors import Cancelled, GatewayError, InvalidArgument, bad_request
from gateway.request.pipeline import Pipeline

log = logging.getLogger(__name__)
Convert = Callable[[object, Mapping[str, str], Any], convert.HttpRequest]
# Request headers that carry the caller's trace context to the pipeline (nothing else is kept).
_TRACE_HEADERS = ("traceparent", "tracestate")


class OpenAIDoor:
    """The handlers, thin like the gRPC servicer: conversion in `convert`, work in `pipeline`."""

    def __init__(self, pipeline: Pipeline, authenticator: Authenticator) -> None:
        self._pipeline = pipeline
        self._authenticator = authenticator
        self._limits = pipeline.settings.server
        self._deadline_s = pipeline.settings.server.default_deadline_s

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self._limits.max_request_bytes)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        return app

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, convert.chat_request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, convert.completion_request, chat=False)

    async def models(self, request: web.Request) -> web.StreamResponse:
        call = self.open_call(request)
        return await _guarded(call, self._models(call))

    async def _models(self, call: CallContext) -> web.StreamResponse:
        async with self._pipeline.exchange(call, streaming=False, listing=True) as exchange:
            models = exchange.models()
        return web.json_response(model_list(models), headers=_ids(call))

    async def _answer(
        self, request: web.Request, to_request: Convert, *, chat: bool
    ) -> web.StreamResponse:
        call = self.open_call(request)
        return await _guarded(call, self._generate(request, call, to_request, chat=chat))

    async def _generate(
        self, request: web.Request, call: CallContext, to_request: Convert, *, chat: bool
    ) -> web.StreamResponse:
        body, problem = await _read_json(request, self._limits.max_request_bytes)
        streaming = isinstance(body, dict) and body.get("stream") is True
        stream: SseStream | None = None
        try:
            async with self._pipeline.exchange(call, streaming=streaming) as exchange:
                if problem is not None:
                    raise problem
                asked = to_request(body, request.headers, self._limits)
                admitted = await exchange.admit(asked.generation)
                headers = {**_ids(call), **dict(admitted.quota_metadata)}
                shapes = Shapes(exchange.result, chat=chat)
                usage = asked.include_usage
                if not asked.stream:
                    async for _ in exchange.generate():
                        pass
                else:
                    stream = SseStream(request, headers)
                    async for chunk in exchange.generate():
                        first = not stream.started
                        await stream.send(shapes.chunk(chunk.text, first=first, with_usage=usage))
        except Exception as err:
            if stream is None or not stream.started:
                raise
            # Tokens have gone out with 200: the failure ends the stream as an error event
            # (none when the client has gone: there is no one to tell).
            if isinstance(err, GatewayError):
                body = errors.error_body(err)
            else:
                log.exception("internal error in request %s", call.request_id)
                body = errors.internal_body(call.request_id)
            if not isinstance(err, Cancelled):
                with contextlib.suppress(Cancelled):
                    await stream.send(body, final=True)
            return stream.response
        # After the exchange: the audit record is durable before the caller sees the end.
        if stream is None:
            return web.json_response(shapes.complete(), headers=headers)
        reason = finish_reason(exchange.result.finish_reason)
        last = shapes.chunk("", first=not stream.started, finish=reason, with_usage=usage)
        await stream.send(last)
        if usage:
            await stream.send(shapes.usage_chunk())
        await stream.finish()
        return stream.response

    def open_call(self, request: web.Request) -> CallContext:
        """The call context of an HTTP call: authentication runs here, its failure is kept."""
        names: list[str] = []
        if self._authenticator.binds_certificates:
            transport = request.transport
            names = certificate_names(transport.get_extra_info("peercert") if transport else None)
        principal, refusal = None, None
        try:
            principal = self._authenticator.authenticate(
                request.headers.getall("Authorization", []), names
            )
        except GatewayError as err:
            refusal = err
        return CallContext(
            request_id=new_request_id(),
            interface=OPENAI_HTTP,
            principal=principal,
            refusal=refusal,
            deadline=time.monotonic() + self._deadline_s,  # HTTP brings none
            peer=f"{request.remote or ''}",
            metadata=tuple(
                (name, value)
                for name in _TRACE_HEADERS
                for value in request.headers.getall(name, [])
            ),
        )


class SseStream:
    """A `text/event-stream` response, started with the first event (so that a refusal before
    any token still gets its own status), written with disconnects turned into cancellation."""

    def __init__(self, request: web.Request, headers: Mapping[str, str]) -> None:
        self._request = request
        self.response = web.StreamResponse(
            headers={
                **headers,
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
            }
        )

    @property
    def started(self) -> bool:
        return self.response.prepared

    async def send(self, data: dict[str, Any], *, final: bool = False) -> None:
        await self._write(event(data))
        if final:
            await self.finish(done=False)

    async def finish(self, *, done: bool = True) -> None:
        if done:
            await self._write(DONE)
        await self.response.write_eof()

    async def _write(self, data: bytes) -> None:
        try:
            if not self.response.prepared:
                await self.response.prepare(self._request)
            await self.response.write(data)
        except ConnectionResetError:
            raise Cancelled("the client closed the connection") from None


async def _guarded(call: CallContext, work: Awaitable[web.StreamResponse]) -> web.StreamResponse:
    """The door's one error mapping: a refusal becomes its status and OpenAI error body;
    anything else a 500 naming the request id (the traceback goes to the log)."""
    try:
        return await work
    except GatewayError as err:
        headers = {**_ids(call), **errors.error_headers(err)}
        return web.json_response(
            errors.error_body(err), status=errors.http_status(err), headers=headers
        )
    except Exception:
        log.exception("internal error in request %s", call.request_id)
        return web.json_response(errors.internal_body(call.request_id), status=500)


async def _read_json(request: web.Request, limit: int) -> tuple[object, GatewayError | None]:
    """The parsed body, or why it cannot be read (raised inside the exchange, so audited)."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return None, _body_problem(f"is larger than {limit} bytes (server.max_request_bytes)")
    try:
        return json.loads(raw), None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, _body_problem("is not valid JSON; send an OpenAI request object")


def _body_problem(message: str) -> InvalidArgument:
    return InvalidArgument(f"body: {message}", details=[bad_request("body", message)])


def _ids(call: CallContext) -> dict[str, str]:
    return {"x-request-id": call.request_id}


def certificate_names(peercert: Any) -> list[str]:
    """The subject common names of a verified client certificate (`ssl` peercert dict)."""
    if not isinstance(peercert, dict):
        return []
    return [
        value for rdn in peercert.get("subject", ()) for key, value in rdn if key == "commonName"
    ]
