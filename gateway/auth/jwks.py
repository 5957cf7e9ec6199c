"""Keys from the identity provider's JWKS URL, refreshed in the background, with a stale window."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import Counter, Gauge

from gateway.auth.keys import KeyLoadError, KeySet, VerificationKey, keys_from_jwks
from gateway.auth.settings import JwksUrlSettings

log = logging.getLogger(__name__)

JWKS_FETCHES = Counter(
    "llmgw_auth_jwks_fetches_total", "JWKS fetches from the identity provider", ["outcome"]
)
JWKS_KEYS = Gauge("llmgw_auth_jwks_keys", "Keys from the JWKS URL usable now")
JWKS_LAST_SUCCESS = Gauge(
    "llmgw_auth_jwks_last_success_timestamp_seconds", "Unix time of the last good JWKS fetch"
)


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect could lead the fetch to a host that the residency allowlist never checked.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def http_fetcher(settings: JwksUrlSettings) -> Callable[[], bytes]:
    """A blocking fetch of the JWKS document (run it in a thread): no proxies, no redirects."""
    context = ssl.create_default_context(cafile=settings.ca_file)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),  # never pick up HTTP(S)_PROXY from the environment
        urllib.request.HTTPSHandler(context=context),
        _RefuseRedirects(),
    )
    request = urllib.request.Request(
        settings.url, headers={"Accept": "application/json", "User-Agent": "llm-gateway"}
    )

    def fetch() -> bytes:
        try:
            response = opener.open(request, timeout=settings.fetch_timeout_s)
        except urllib.error.HTTPError as err:
            err.close()  # an HTTPError holds the connection open until closed
            raise OSError(f"HTTP status {err.code} (redirects are not followed)") from None
        with response:
            body: bytes = response.read(settings.max_response_bytes + 1)
        if len(body) > settings.max_response_bytes:
            raise KeyLoadError(f"JWKS response over {settings.max_response_bytes} bytes")
        return body

    return fetch


class JwksUrlKeys:
    """The key source behind a JWKS URL.

    `start()` fetches once and starts a background task that refetches every
    `refresh_interval_s` (every `retry_interval_s` after a failure). The request path only reads
    the current `KeySet`; it never waits on the network. A key is usable until
    `refresh_interval_s + stale_window_s` after the last fetch that listed it, so keys survive
    a provider outage for the stale window and a key removed from the set is dropped after it.
    A token whose `kid` is unknown wakes the task, at most once per `unknown_kid_cooldown_s`.
    """

    def __init__(
        self,
        settings: JwksUrlSettings,
        algorithms: Sequence[str],
        *,
        fetch: Callable[[], bytes] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._algorithms = tuple(algorithms)
        self._fetch = fetch or http_fetcher(settings)
        self._clock = clock
        self._ttl = settings.refresh_interval_s + settings.stale_window_s
        self._last_seen: dict[str, tuple[VerificationKey, float]] = {}
        self._set = KeySet(())
        self._next_expiry = float("inf")
        self._last_forced = float("-inf")
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def candidates(self, kid: str | None, algorithm: str) -> Sequence[VerificationKey]:
        now = self._clock()
        if now >= self._next_expiry:
            self._rebuild(now)
        if kid is not None and kid not in self._set.kids:
            self._refresh_soon(now)
        return self._set.candidates(kid, algorithm)

    def is_current(self, key: VerificationKey) -> bool:
        entry = self._last_seen.get(key.fingerprint)
        return entry is not None and self._clock() < entry[1] + self._ttl

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        ok = await self.refresh()
        if not ok:
            log.error(
                "no keys from %s yet: every call is refused until a fetch succeeds",
                self._settings.url,
            )
        self._task = asyncio.create_task(self._run(ok), name="jwks-refresh")

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def refresh(self) -> bool:
        """Fetch the JWKS now; on failure keep the current keys. Returns whether it succeeded."""
        try:
            # asyncio.timeout, not wait_for: wait_for on 3.11 can swallow a cancellation.
            async with asyncio.timeout(self._settings.fetch_timeout_s + 1.0):
                body = await asyncio.to_thread(self._fetch)
            keys = keys_from_jwks(json.loads(body), self._algorithms, self._settings.url)
            if not keys:
                raise KeyLoadError("no key in the JWKS fits the pinned algorithms")
        except (OSError, TimeoutError, ValueError) as err:
            # KeyLoadError is a ValueError; json and urllib errors are ValueError / OSError.
            JWKS_FETCHES.labels("error").inc()
            log.warning("JWKS fetch from %s failed: %s", self._settings.url, err)
            return False
        now = self._clock()
        for key in keys:
            self._last_seen[key.fingerprint] = (key, now)
        self._rebuild(now)
        JWKS_FETCHES.labels("ok").inc()
        JWKS_LAST_SUCCESS.set(time.time())
        return True

    def _rebuild(self, now: float) -> None:
        self._last_seen = {
            fp: (key, seen) for fp, (key, seen) in self._last_seen.items() if now < seen + self._ttl
        }
        self._set = KeySet(key for key, _ in self._last_seen.values())
        self._next_expiry = min(
            (seen + self._ttl for _, seen in self._last_seen.values()), default=float("inf")
        )
        JWKS_KEYS.set(len(self._set.keys))

    def _refresh_soon(self, now: float) -> None:
        if self._loop is None or now - self._last_forced < self._settings.unknown_kid_cooldown_s:
            return
        self._last_forced = now
        self._loop.call_soon_threadsafe(self._wake.set)

    async def _run(self, last_ok: bool) -> None:
        while not self._closed:
            delay = (
                self._settings.refresh_interval_s if last_ok else self._settings.retry_interval_s
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            last_ok = await self.refresh()
