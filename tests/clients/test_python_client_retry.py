"""Retries of the client library against a real gRPC server that refuses on a script."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc
from llmgw_client import (
    AsyncClient,
    Client,
    RateLimited,
    ResourceExhausted,
    RetryPolicy,
    Unavailable,
)

RETRY_DELAY_S = 0.05


@dataclass
class Refusal:
    """One scripted refusal: status, optional RetryInfo delay, and after how many chunks."""

    code: grpc.StatusCode
    retry_after_s: float | None = None
    after_chunks: int = 0
    quota: bool = False


@dataclass
class ScriptedService(gateway_pb2_grpc.InferenceServiceServicer):
    """Refuses the first calls as scripted, then answers; records every call's arrival time."""

    script: list[Refusal] = field(default_factory=list)
    calls: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _next(self, context: grpc.ServicerContext) -> Refusal | None:
        with self.lock:
            self.calls.append(time.monotonic())
            return self.script.pop(0) if self.script else None

    @staticmethod
    def _refuse(context: grpc.ServicerContext, refusal: Refusal) -> None:
        status = status_pb2.Status(code=refusal.code.value[0], message="scripted refusal")
        if refusal.retry_after_s is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(refusal.retry_after_s * 1e9))
            status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        if refusal.quota:
            violation = error_details_pb2.QuotaFailure.Violation(
                subject="department:x", description="user.requests_per_minute"
            )
            status.details.add().Pack(error_details_pb2.QuotaFailure(violations=[violation]))
        context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
        context.abort(refusal.code, "scripted refusal")

    def Generate(
        self, request: pb.GenerateRequest, context: grpc.ServicerContext
    ) -> pb.GenerateResponse:
        refusal = self._next(context)
        if refusal is not None:
            self._refuse(context, refusal)
        return pb.GenerateResponse(text="ok", model=request.model)

    def GenerateStream(
        self, request: pb.GenerateStreamRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.GenerateStreamResponse]:
        refusal = self._next(context)
        for index in range(3):
            if refusal is not None and refusal.after_chunks == index:
                self._refuse(context, refusal)
            yield pb.GenerateStreamResponse(text=f"t{index}", token_count=1)
        yield pb.GenerateStreamResponse(finish_reason=pb.FINISH_REASON_STOP)


@pytest.fixture
def scripted() -> Iterator[tuple[str, ScriptedService]]:
    # The stubs mark every servicer method abstract; at run time the base answers UNIMPLEMENTED.
    service = ScriptedService()  # type: ignore[abstract]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    gateway_pb2_grpc.add_InferenceServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", service
    finally:
        server.stop(grace=None)


RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.01)


def test_retry_waits_the_retry_info_delay(scripted: tuple[str, ScriptedService]) -> None:
    target, service = scripted
    service.script = [Refusal(grpc.StatusCode.UNAVAILABLE, RETRY_DELAY_S)] * 2
    with Client(target, retry=RETRY) as client:
        assert client.generate("m", "hi").text == "ok"
    assert len(service.calls) == 3
    gaps = [b - a for a, b in zip(service.calls, service.calls[1:], strict=False)]
    assert all(gap >= RETRY_DELAY_S for gap in gaps), gaps


def test_without_a_retry_policy_the_refusal_is_raised(
    scripted: tuple[str, ScriptedService],
) -> None:
    target, service = scripted
    service.script = [Refusal(grpc.StatusCode.UNAVAILABLE, RETRY_DELAY_S)]
    with Client(target) as client, pytest.raises(Unavailable) as unavailable:
        client.generate("m", "hi")
    assert unavailable.value.retry_after == pytest.approx(RETRY_DELAY_S)
    assert len(service.calls) == 1


def test_attempts_are_capped(scripted: tuple[str, ScriptedService]) -> None:
    target, service = scripted
    service.script = [Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, 0.001, quota=True)] * 5
    with Client(target, retry=RETRY) as client, pytest.raises(RateLimited) as limited:
        client.generate("m", "hi")
    assert limited.value.quota == "user.requests_per_minute"
    assert len(service.calls) == RETRY.max_attempts


def test_resource_exhausted_without_retry_info_is_not_retried(
    scripted: tuple[str, ScriptedService],
) -> None:
    target, service = scripted
    service.script = [Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED)]
    with Client(target, retry=RETRY) as client, pytest.raises(ResourceExhausted) as refused:
        client.generate("m", "hi")
    assert type(refused.value) is ResourceExhausted
    assert len(service.calls) == 1


def test_a_wait_beyond_the_deadline_is_not_sat_out(scripted: tuple[str, ScriptedService]) -> None:
    target, service = scripted
    service.script = [Refusal(grpc.StatusCode.UNAVAILABLE, 5.0)]
    with Client(target, retry=RETRY, timeout=1.0) as client, pytest.raises(Unavailable):
        client.generate("m", "hi")
    assert len(service.calls) == 1


def test_stream_is_retried_before_its_first_message(scripted: tuple[str, ScriptedService]) -> None:
    target, service = scripted
    service.script = [Refusal(grpc.StatusCode.UNAVAILABLE, RETRY_DELAY_S, after_chunks=0)]
    with Client(target, retry=RETRY) as client:
        texts = [m.text for m in client.generate_stream("m", "hi")]
    assert texts == ["t0", "t1", "t2", ""]
    assert len(service.calls) == 2


def test_stream_is_never_retried_after_its_first_message(
    scripted: tuple[str, ScriptedService],
) -> None:
    target, service = scripted
    service.script = [Refusal(grpc.StatusCode.UNAVAILABLE, RETRY_DELAY_S, after_chunks=1)]
    received = []
    with Client(target, retry=RETRY) as client, pytest.raises(Unavailable):
        for message in client.generate_stream("m", "hi"):
            received.append(message.text)
    assert received == ["t0"]
    assert len(service.calls) == 1


async def test_async_client_retries_the_same_way(scripted: tuple[str, ScriptedService]) -> None:
    target, service = scripted
    async with AsyncClient(target, retry=RETRY) as client:
        service.script = [Refusal(grpc.StatusCode.UNAVAILABLE, RETRY_DELAY_S)]
        assert (await client.generate("m", "hi")).text == "ok"
        service.script = [
            Refusal(grpc.StatusCode.UNAVAILABLE, RETRY_DELAY_S, after_chunks=0),
            Refusal(grpc.StatusCode.UNAVAILABLE, RETRY_DELAY_S, after_chunks=2),
        ]
        received = []
        with pytest.raises(Unavailable):
            async for message in client.generate_stream("m", "hi"):
                received.append(message.text)
    assert received == ["t0", "t1"]
    assert len(service.calls) == 4


def test_server_and_client_modules_share_one_descriptor() -> None:
    """Both packages in one process: the client's generated module is the server's, bytewise."""
    from llmgw_client import pb as client_pb

    # mypy sees two modules; the test checks that at run time they are one.
    assert client_pb.GenerateRequest is pb.GenerateRequest  # type: ignore[comparison-overlap]
    assert client_pb.DESCRIPTOR.serialized_pb == pb.DESCRIPTOR.serialized_pb
