"""Locust users for the gateway's gRPC API (unary and streaming), driven by a scenario's mix.

For operators who already run Locust (it spreads load over many machines):

    locust -f load_tests/locustfile.py --scenario load_tests/scenarios/mixed-departments.yaml \\
        --host gateway.internal:443 UnaryUser StreamUser

The scenario supplies departments (and their tokens), models, prompt lengths and max_tokens; its
`load` section is ignored: Locust's own user count and spawn rate shape the load. Locust is a
closed-loop tool, so under overload it measures fewer, not slower, requests; use
`python -m load_tests run` with an open-loop scenario to see queueing. Locust is not a dependency
of this package: install it with `pip install 'llm-gateway[locust]'`.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from llmgateway.v1 import gateway_pb2_grpc
from locust import User, constant, events
from locust.runners import MasterRunner

from load_tests.runner import bearer, channel_settings, generate_request, stream_request
from load_tests.scenario import RequestMix, Scenario, load_scenario

# grpc's C core must yield to gevent's event loop, or one blocking call stalls every user.
grpc_gevent.init_gevent()

_DEFAULT_SCENARIO = "load_tests/scenarios/smoke.yaml"


class GrpcStatus(Exception):
    """A call ended with a non-OK status; named by code only so Locust groups failures by it."""


class _Loaded:
    """The scenario and minted tokens, shared by every user of this Locust process."""

    scenario: Scenario | None = None
    tokens: dict[str, str | None] = {}


def _add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--scenario",
        default=_DEFAULT_SCENARIO,
        help="load_tests scenario YAML: departments, tokens and the request mix",
    )


def _load(environment: Any, **_: Any) -> None:
    # Tokens are minted at every test start (they may have expired since the last one), and
    # only where users run: the master of a distributed run sends no requests.
    if isinstance(environment.runner, MasterRunner):
        return
    scenario = load_scenario(environment.parsed_options.scenario)
    _Loaded.scenario = scenario
    _Loaded.tokens = scenario.tokens()


# Registered by call rather than decorator: locust is untyped, and its decorators would erase
# the types of what they wrap.
events.init_command_line_parser.add_listener(_add_arguments)
events.test_start.add_listener(_load)


class _GatewayUser(User):  # type: ignore[misc]
    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        scenario = _Loaded.scenario
        assert scenario is not None, "test_start did not load the scenario"
        target = self.host or scenario.target
        if not target:
            raise ValueError("no target: pass --host HOST:PORT or set `target` in the scenario")
        credentials, options = channel_settings(scenario)
        self._channel = (
            grpc.insecure_channel(target, options=options)
            if credentials is None
            else grpc.secure_channel(target, credentials, options=options)
        )
        self._stub = gateway_pb2_grpc.InferenceServiceStub(self._channel)
        self._mix = RequestMix(scenario, random.Random())
        self._deadline_s = scenario.deadline_s

    def on_stop(self) -> None:
        self._channel.close()

    def _fire(
        self, kind: str, name: str, started: float, tokens: int, error: GrpcStatus | None
    ) -> None:
        self.environment.events.request.fire(
            request_type=kind,
            name=name,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=tokens,
            exception=error,
            context={},
        )


class UnaryUser(_GatewayUser):
    """Calls `Generate` back to back with the scenario's mix; one Locust request per call."""

    def generate(self) -> None:
        planned = self._mix.sample(rpc="unary")
        request = generate_request(planned, f"locust-{uuid.uuid4().hex[:16]}")
        metadata = bearer(_Loaded.tokens.get(planned.department.name))
        started = time.perf_counter()
        try:
            response = self._stub.Generate(request, metadata=metadata, timeout=self._deadline_s)
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
            self._fire("grpc", f"Generate {planned.model}", started, 0, GrpcStatus(code.name))
            return
        tokens = response.usage.completion_tokens
        self._fire("grpc", f"Generate {planned.model}", started, tokens, None)

    tasks = [generate]


class StreamUser(_GatewayUser):
    """Calls `GenerateStream`; reports the whole stream and, apart, its time to first token."""

    def generate_stream(self) -> None:
        planned = self._mix.sample(rpc="stream")
        request = stream_request(planned, f"locust-{uuid.uuid4().hex[:16]}")
        metadata = bearer(_Loaded.tokens.get(planned.department.name))
        name = f"GenerateStream {planned.model}"
        started = time.perf_counter()
        tokens = 0
        first = True
        try:
            for message in self._stub.GenerateStream(
                request, metadata=metadata, timeout=self._deadline_s
            ):
                if first and message.token_count > 0:
                    first = False
                    self._fire("grpc-ttft", name, started, message.token_count, None)
                tokens += message.token_count
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
            self._fire("grpc-stream", name, started, tokens, GrpcStatus(code.name))
            return
        self._fire("grpc-stream", name, started, tokens, None)

    tasks = [generate_stream]
