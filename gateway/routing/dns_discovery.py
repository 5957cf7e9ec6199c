"""DNS discovery: every A/AAAA record behind a name is a worker (a headless Kubernetes Service)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from common.egress import resolve_system
from gateway.routing.registry import Publish
from gateway.routing.settings import split_target

log = logging.getLogger(__name__)

Resolver = Callable[[str], Sequence[str]]


def format_target(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class DnsDiscovery:
    """Resolves each `name:port` every `refresh_s`; the workers are all the addresses found.

    `resolver` is blocking (getaddrinfo by default) and runs in a thread. A name that fails to
    resolve keeps the addresses it had, so a DNS hiccup does not empty the pool; a pod that is
    gone simply stops appearing in the answer.
    """

    name = "dns"

    def __init__(
        self, names: Sequence[str], refresh_s: float, *, resolver: Resolver = resolve_system
    ) -> None:
        self._names = [split_target(n, "routing.dns_names") for n in names]
        self._refresh_s = refresh_s
        self._resolve = resolver
        self._last: dict[tuple[str, int], frozenset[str]] = {}

    async def run(self, publish: Publish) -> None:
        while True:
            for host, port in self._names:
                try:
                    addresses = await asyncio.to_thread(self._resolve, host)
                except (OSError, UnicodeError) as exc:
                    log.warning("routing.dns_names %s: resolution failed (%s)", host, exc)
                    continue
                self._last[(host, port)] = frozenset(format_target(a, port) for a in addresses)
            await publish(frozenset().union(*self._last.values()))
            await asyncio.sleep(self._refresh_s)
