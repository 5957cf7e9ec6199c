"""Builds the worker registry that the routing settings describe."""

from __future__ import annotations

from common.egress import resolve_system
from gateway.routing.dns_discovery import DnsDiscovery, Resolver
from gateway.routing.registry import Discovery, EgressCheck, StaticDiscovery, WorkerRegistry
from gateway.routing.settings import RoutingSettings


def build_registry(
    settings: RoutingSettings,
    *,
    guard: EgressCheck | None = None,
    resolver: Resolver = resolve_system,
) -> WorkerRegistry:
    """A registry over every source configured: static list, DNS names, Redis registrations."""
    sources: list[Discovery] = [StaticDiscovery(settings.workers)]
    if settings.dns_names:
        sources.append(DnsDiscovery(settings.dns_names, settings.dns_refresh_s, resolver=resolver))
    if settings.redis_url is not None:
        # Imported only when used: redis-py alone costs the process ~11 MB of memory.
        from common.worker_registry import redis_client
        from gateway.routing.redis_discovery import RedisDiscovery

        client = redis_client(settings.redis_url, settings.redis_timeout_s)
        sources.append(
            RedisDiscovery(
                client, prefix=settings.redis_key_prefix, refresh_s=settings.redis_refresh_s
            )
        )
    return WorkerRegistry(settings, sources, guard=guard)
