"""The cache's methods on the daemon's bridge (``ps_cache_*``), JSON in and out.

Thin: each method validates its arguments, calls the plugin's public API and turns
errors into typed bridge errors (``kind`` + one-line message).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID

from libervia_cache.hostapi import Host

if TYPE_CHECKING:
    from libervia_cache.plugin import PubsubCache


def register_bridge_methods(host: Host, cache: PubsubCache) -> None:
    """Expose the cache on ``host.bridge``."""

    async def ps_cache_sync(
        service: str, node: str, profile: str | None = None, wait: bool = False
    ) -> dict[str, Any]:
        client = host.get_client(profile or host.default_profile)
        d = defer.Deferred.fromCoroutine(
            cache.synchronise(client, JID(service) if service else None, node)
        )
        if wait:
            await d
        else:
            d.addErrback(lambda failure: None)  # logged by the plugin
        return {"nodes": await cache.node_status(client.profile, service, node)}

    async def ps_cache_status(
        service: str | None = None, node: str | None = None, profile: str | None = None
    ) -> dict[str, Any]:
        return {
            "nodes": await cache.node_status(profile, service, node),
            "counters": cache.counters_status(),
        }

    host.bridge.register_method("ps_cache_sync", ps_cache_sync)
    host.bridge.register_method("ps_cache_status", ps_cache_status)
