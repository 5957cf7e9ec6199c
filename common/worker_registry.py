"""The Redis layout of worker self-registration: written by workers, read by gateways."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

DEFAULT_PREFIX = "llmgw:"


def index_key(prefix: str) -> str:
    return f"{prefix}{{workers}}:index"


def advert_key(prefix: str, target: str) -> str:
    return f"{prefix}{{workers}}:worker:{target}"


@dataclass(frozen=True, slots=True)
class Advert:
    """What a worker says about itself; gateways still confirm it with GetInfo."""

    target: str
    worker_id: str
    models: tuple[str, ...]
    pool: str
    max_slots: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Advert:
        """Parse an advert; raises ValueError when it is not one."""
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("target"), str):
            raise ValueError("worker advert: expected a JSON object with a string 'target'")
        return cls(
            target=data["target"],
            worker_id=str(data.get("worker_id", "")),
            models=tuple(str(m) for m in data.get("models", ())),
            pool=str(data.get("pool", "")),
            max_slots=int(data.get("max_slots", 0)),
        )


def redis_client(url: str, timeout_s: float) -> Redis:
    """A client with bounded timeouts and no hidden retries (redis-py retries 10x by default)."""
    return Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
