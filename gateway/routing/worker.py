"""One worker as the router sees it: its channel, what it serves, its health and its load."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2_grpc
from llmgateway.worker.v1 import worker_pb2 as pb
from llmgateway.worker.v1 import worker_pb2_grpc as pb_grpc

from gateway.client_tls import ClientTls, secure_or_insecure_channel

# Keepalive pings from gateway to workers must stay below the workers' permitted rate.
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    # gRPC obeys http(s)_proxy/grpc_proxy by default; prompts must only go to the checked address.
    ("grpc.enable_http_proxy", 0),
    # The router retries on another worker before the first token (`Router`); gRPC's own retry
    # layer would only add per-call state (~6 KB of memory per open stream) and CPU.
    ("grpc.enable_retries", 0),
]


@dataclass(eq=False)
class WorkerState:
    """One worker: connection, identity, health flags, ejection state and load.

    `ready` is what picking looks at: the worker answered GetInfo, its health check says
    SERVING, it is not draining and not ejected. Load is the worker's own report plus what this
    gateway has sent since that report (`unreported`), so two picks in the same millisecond do not
    both see the same free slot.
    """

    target: str
    channel: grpc.aio.Channel
    stub: pb_grpc.WorkerServiceAsyncStub
    health_stub: health_pb2_grpc.HealthAsyncStub
    worker_id: str = ""
    models: frozenset[str] = frozenset()
    model_digests: dict[str, str] = field(default_factory=dict)  # model -> `sha256:...`
    pool: str = ""
    max_slots: int = 0
    info_known: bool = False
    serving: bool = False
    draining: bool = False
    in_flight: int = 0
    unreported: int = 0
    load: pb.Load = field(default_factory=pb.Load)
    reported_free: int = 0
    reported_slots: int = 0
    reported_queued: int = 0
    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until: float | None = None
    last_ejected: float = 0.0
    retired: bool = False
    # The worker's identity on the hash ring (its points derive from it): the target is the same
    # in every gateway replica, so all replicas build the same ring and prefer the same worker.
    hash_int: int = 0

    @classmethod
    def connect(cls, target: str, tls: ClientTls | None = None) -> WorkerState:
        """A worker state with a (lazily connecting) channel to `target`, over TLS if given."""
        channel = secure_or_insecure_channel(target, tls, CHANNEL_OPTIONS)
        return cls(
            target=target,
            channel=channel,
            stub=pb_grpc.WorkerServiceStub(channel),
            health_stub=health_pb2_grpc.HealthStub(channel),
            hash_int=int.from_bytes(hashlib.blake2b(target.encode(), digest_size=8).digest()),
        )

    @property
    def name(self) -> str:
        """How logs and error messages name the worker."""
        return self.worker_id or self.target

    @property
    def ejected(self) -> bool:
        return self.ejected_until is not None

    @property
    def ready(self) -> bool:
        return self.info_known and self.serving and not self.draining and not self.ejected

    @property
    def capacity(self) -> int:
        """Batch slots: the load report's, else GetInfo's, and at least one."""
        return max(1, self.reported_slots or self.max_slots)

    def free_slots(self) -> int:
        """Slots free for a new generation from this gateway, by the freshest knowledge."""
        reported = self.reported_free - self.unreported
        own = self.capacity - self.in_flight
        return max(0, min(reported, own))

    def utilization(self) -> float:
        """Busy and queued work over capacity; lower is less loaded."""
        capacity = self.capacity
        return (capacity - self.free_slots() + self.reported_queued) / capacity

    def report(self, load: pb.Load) -> None:
        """A fresh load report from the worker: it already counts what we sent before it."""
        self.load = load
        # Plain ints: picking reads them for every worker on every request, protobuf fields
        # cost several times more to read.
        self.reported_free = load.free_slots
        self.reported_slots = load.max_slots
        self.reported_queued = load.queued
        self.unreported = 0
        self.draining = load.draining

    def dispatched(self) -> None:
        self.in_flight += 1
        self.unreported += 1

    def finished(self) -> None:
        self.in_flight -= 1
        self.unreported = max(0, self.unreported - 1)

    def ejection_over(self, now: float | None = None) -> bool:
        """True once an ejected worker's backoff has passed (it still needs a probe)."""
        until = self.ejected_until
        return until is not None and (now if now is not None else time.monotonic()) >= until
