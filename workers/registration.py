"""Worker self-registration in Redis: a heartbeat key with a TTL that gateways discover.

Layout (shared with `gateway.routing.redis_discovery`; every key carries the hash tag
`{workers}` so that the set and the keys live in one Redis Cluster slot):

- `<prefix>{workers}:index`: a set of advertised targets (`host:port`);
- `<prefix>{workers}:worker:<target>`: JSON `Advert`, expiring `ttl_s` after the last heartbeat.

A target whose key has expired is dead: gateways drop it and remove it from the set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from common.worker_registry import DEFAULT_PREFIX, Advert, advert_key, index_key

log = logging.getLogger(__name__)


class RedisRegistration:
    """Keeps a worker's advert alive in Redis until `stop()`.

    A heartbeat every `ttl_s / 3` rewrites the key with its TTL, so two missed heartbeats are
    tolerated; a worker that dies disappears from every gateway within `ttl_s`. Redis being down
    does not stop the worker: heartbeats resume when it is back. `stop()` deletes the key so that a
    graceful shutdown is seen at once.
    """

    def __init__(
        self,
        client: Redis,
        advert: Advert,
        *,
        ttl_s: float = 10.0,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self._client = client
        self.advert = advert
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._prefix = prefix
        self._task: asyncio.Task[None] | None = None
        self.beats = 0

    async def start(self) -> None:
        """Send the first heartbeat now (logged if it fails), then keep beating."""
        await self._beat()
        self._task = asyncio.create_task(self._loop(), name="redis registration")

    async def stop(self) -> None:
        """Stop heartbeats and remove the advert."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(advert_key(self._prefix, self.advert.target))
                pipe.srem(index_key(self._prefix), self.advert.target)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("could not remove the worker's Redis registration: %s", type(exc).__name__)
        await self._client.aclose()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._ttl_ms / 3000)
            await self._beat()

    async def _beat(self) -> None:
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(
                    advert_key(self._prefix, self.advert.target),
                    self.advert.to_json(),
                    px=self._ttl_ms,
                )
                pipe.sadd(index_key(self._prefix), self.advert.target)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("worker registration heartbeat failed: %s", type(exc).__name__)
            return
        self.beats += 1
