"""The call context: what the request path knows about one call before it reads the request.

Each door (the gRPC servicer, the OpenAI-compatible HTTP door) builds one `CallContext` per call
and hands it to the pipeline as an argument: the request id, the verified principal or why
authentication failed, the deadline, the peer and the trace-carrying metadata. Nothing about a
request travels through module-level state.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.auth.principal import Principal
from gateway.request.errors import GatewayError

# Names of the doors, as the audit record's `interface` field states them.
GRPC = "grpc"
OPENAI_HTTP = "openai-http"


def new_request_id() -> str:
    """A time-ordered, unique request id: 12 hex digits of milliseconds, 16 random."""
    return f"{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


@dataclass(slots=True)
class CallContext:
    """One call as it arrived: who (or why not), until when, from where.

    Exactly one of `principal` and `refusal` is set for calls to the inference service;
    `refusal` is the authentication failure, raised by the pipeline inside the exchange so that
    it is audited like any other refusal. `deadline` is on the `time.monotonic()` clock.
    """

    request_id: str
    interface: str
    principal: Principal | None
    refusal: GatewayError | None
    deadline: float | None
    peer: str
    metadata: Sequence[tuple[str, str | bytes]] = ()

    def authenticated(self) -> Principal:
        """The verified caller; raises the authentication failure otherwise."""
        if self.principal is None:
            assert self.refusal is not None, "a call has a principal or a refusal"
            raise self.refusal
        return self.principal

    def time_remaining(self) -> float | None:
        """Seconds until the deadline (negative once passed); None without a deadline."""
        return None if self.deadline is None else self.deadline - time.monotonic()
