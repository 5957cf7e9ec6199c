"""Redis discovery: workers that registered themselves with a heartbeat key (see
`workers.registration`)."""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from common.worker_registry import advert_key, index_key
from gateway.routing.registry import Publish

log = logging.getLogger(__name__)


class RedisDiscovery:
    """Reads the registration set every `refresh_s`; a target whose key has expired is dropped.

    Expired targets are also removed from the set, so it does not grow with every worker that
    ever lived. While Redis is unreachable the last known set is kept (health checks still watch
    each worker).
    """

    name = "redis"

    def __init__(self, client: Redis, *, prefix: str, refresh_s: float) -> None:
        self._client = client
        self._prefix = prefix
        self._refresh_s = refresh_s
        self._failing = False

    async def read(self) -> frozenset[str]:
        """The targets with a live heartbeat now."""
        raw = await self._client.smembers(index_key(self._prefix))
        members = sorted(m if isinstance(m, str) else m.decode() for m in raw)
        if not members:
            return frozenset()
        values = await self._client.mget([advert_key(self._prefix, m) for m in members])
        alive = frozenset(m for m, v in zip(members, values, strict=True) if v is not None)
        expired = [m for m in members if m not in alive]
        if expired:
            await self._client.srem(index_key(self._prefix), *expired)
        return alive

    async def run(self, publish: Publish) -> None:
        try:
            while True:
                try:
                    targets = await self.read()
                except (RedisError, OSError) as exc:
                    if not self._failing:
                        log.warning("worker registry in Redis unreachable: %s", type(exc).__name__)
                    self._failing = True
                else:
                    self._failing = False
                    await publish(targets)
                await asyncio.sleep(self._refresh_s)
        finally:
            await self._client.aclose()
