"""The pubsub cache plugin (``PUBSUB_CACHE``): its parts, wired together here.

Each part has one job (see ``doc/developer.md`` for the map):

================  =====================================================================
part              job
================  =====================================================================
settings          the ``[pubsub_cache]`` keys the plugin declares, and their values
store_access      opening the store, reopening it after a failure, reporting failures
holds             why a synchronised node is held back from being served
freshness         checking synced nodes after a (re)connection or a reopened store
reader            the cached read, and why a request is not answered (misses)
writeback         what network answers teach: node analysis, items of tracked nodes
sync, syncs       one synchronisation of one node; at most one per node
events            pubsub events applied to tracked nodes, one queue per node
manage            explicit synchronise, search, purge, reset
status            nodes and counters, for the status
bridge_methods    the ``ps_cache_*`` bridge methods
================  =====================================================================

This module only builds the parts, adds the plugin's triggers, event handler and bridge
methods, and removes them again in :meth:`PubsubCache.stop`. It codes against the host
API (:mod:`libervia_cache.hostapi`) only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from tx_xmpp import rsm

from libervia_cache.hostapi import (
    GET_ITEMS_POINT,
    GOT_ITEMS_POINT,
    XEP0060,
    Client,
    Host,
    ItemsResult,
    ReturnPointResult,
)
from libervia_cache.plugin.analysis import Analyser, AnalyserRegistry
from libervia_cache.plugin.bridge_methods import CacheBridgeMethods
from libervia_cache.plugin.counters import Counters
from libervia_cache.plugin.events import EVENT_APPLIED_POINT, EventApplier
from libervia_cache.plugin.freshness import Freshness
from libervia_cache.plugin.holds import Holds
from libervia_cache.plugin.manage import Management
from libervia_cache.plugin.reader import CachedReader, ItemsRequest, Miss, Missed
from libervia_cache.plugin.serial import KeyedQueues
from libervia_cache.plugin.settings import CONFIG_KEYS, SECTION, Settings
from libervia_cache.plugin.status import Status
from libervia_cache.plugin.store_access import STORE_ERRORS, StoreAccess
from libervia_cache.plugin.syncs import SyncManager
from libervia_cache.plugin.writeback import WriteBack

__all__ = ["EVENT_APPLIED_POINT", "PLUGIN_INFO", "PubsubCache"]

log = logging.getLogger(__name__)

PLUGIN_INFO = {
    "name": "Pubsub cache",
    "import_name": "PUBSUB_CACHE",
    "dependencies": ["XEP-0060"],
    "recommendations": [],
    "main": "PubsubCache",
    "description": "Keeps pubsub nodes in a local database and answers reads from it",
    "config": {SECTION: CONFIG_KEYS},
}

#: The cache answers before any other trigger of the items request path.
TRIGGER_PRIORITY = 1000


class PubsubCache:
    """Transparent pubsub cache (``host.plugins["PUBSUB_CACHE"]``).

    Its public API, for other plugins: :meth:`register_analyser`, :attr:`management`
    (synchronise, search, purge, reset), :meth:`get_items_from_cache` and :attr:`status`.
    """

    def __init__(self, host: Host) -> None:
        self.host = host
        pubsub: XEP0060 = host.plugins["XEP-0060"]
        self.settings = Settings.from_config(host.config)
        self.analysers = AnalyserRegistry()
        self.counters = Counters()
        self.store_access = StoreAccess(self.settings.db_url)
        self.holds = Holds()
        queues = KeyedQueues()
        self.syncs = SyncManager(
            store_access=self.store_access,
            pubsub=pubsub,
            analysers=self.analysers,
            settings=self.settings,
            queues=queues,
            counters=self.counters,
            on_begin=lambda node_info: self.holds.sync_began(node_info.id),
        )
        self.freshness = Freshness(
            store_access=self.store_access,
            pubsub=pubsub,
            syncs=self.syncs,
            holds=self.holds,
            clients=lambda: host.clients,
            queues=queues,
        )
        self.store_access.on_open(self.freshness.store_reopened)
        self.reader = CachedReader(
            store_access=self.store_access,
            syncs=self.syncs,
            holds=self.holds,
            settings=self.settings,
        )
        self.writeback = WriteBack(
            store_access=self.store_access,
            pubsub=pubsub,
            analysers=self.analysers,
            syncs=self.syncs,
            settings=self.settings,
        )
        self.events = EventApplier(
            trigger=host.trigger,
            store_access=self.store_access,
            pubsub_plugin=pubsub,
            analysers=self.analysers,
            syncs=self.syncs,
            holds=self.holds,
            queues=queues,
            settings=self.settings,
            counters=self.counters,
            freshness=self.freshness,
        )
        self.management = Management(
            store_access=self.store_access, syncs=self.syncs, writeback=self.writeback
        )
        self.status = Status(
            store_access=self.store_access,
            syncs=self.syncs,
            holds=self.holds,
            counters=self.counters,
            last_checked=self.freshness.last_checked,
        )
        bridge_methods = CacheBridgeMethods(
            host=host, reader=self.reader, management=self.management, status=self.status
        )
        # everything the plugin hooks into the host, added here, removed in stop()
        self._pubsub = pubsub
        self._triggers: list[tuple[str, Callable[..., Any]]] = [
            (GET_ITEMS_POINT, self._get_items_trigger),
            (GOT_ITEMS_POINT, self._got_items_trigger),
        ]
        self._bridge_methods = bridge_methods.methods()
        for point, callback in self._triggers:
            host.trigger.add(point, callback, TRIGGER_PRIORITY)
        pubsub.add_event_handler(self.events)
        for name, method in self._bridge_methods.items():
            host.bridge.register_method(name, method)

    # --- lifecycle (called by the host) --------------------------------------------------

    async def start(self) -> None:
        """Open (create or upgrade) the store (see :class:`StoreAccess`); start the
        periodic checks."""
        await self.store_access.open()
        self.freshness.start_periodic(self.settings.check_interval)

    async def stop(self) -> None:
        """Unhook from the host, stop the syncs, close the store."""
        for point, callback in self._triggers:
            self.host.trigger.remove(point, callback)
        self._pubsub.remove_event_handler(self.events)
        for name in self._bridge_methods:
            self.host.bridge.unregister_method(name)
        await self.freshness.stop()
        await self.syncs.stop()
        await self.store_access.close()

    def exclusive_files(self) -> list[Path]:
        """The files this plugin needs for itself (the host may lock them so that a
        second daemon on them refuses to start): the SQLite database file; none on
        PostgreSQL, whose profile leases let several daemons share a database."""
        from sqlalchemy.engine import make_url

        from libervia_cache.storage.engine import sqlite_file

        path = sqlite_file(make_url(self.store_access.db_url))
        return [] if path is None else [path.expanduser()]

    async def profile_connected(self, client: Client) -> None:
        """On each (re)connection of a profile: see :mod:`.freshness`."""
        await self.freshness.profile_connected(client)

    # --- public API ------------------------------------------------------------------------

    def register_analyser(self, analyser: Mapping[str, Any]) -> Analyser:
        """Register an analyser: which nodes to cache, and how to parse their items.

        ``analyser`` is a mapping with these keys:

        ``name`` (required)
            Unique name, normalised (stripped, lower-case). A second registration of
            the same name raises ``AnalyserConflict``.
        ``type`` (required)
            Type of the nodes it matches (e.g. ``"blog"``), stored with the node and
            usable as a search/purge filter.
        ``node``
            Node-name prefix it matches (e.g. ``"urn:xmpp:microblog:0"``).
        ``namespace``
            Namespace of the first child of ``<item>`` (the payload) it matches, looked
            at when no node prefix matched. At least one of ``node`` and ``namespace``.
        ``to_sync`` (default False)
            Whether matching nodes are synchronised and then answered from the cache.
        ``parser``
            ``parser(client, item_elt, service, node) -> dict``: parsed JSON data of an
            item, used by search. May be a coroutine function or return a Deferred. An
            exception, or a result that is not a dict, leaves the item stored raw.
        ``match_cb``
            ``match_cb(client, analysis)``: called with the analysis mapping
            (``service``, ``node``, ``type``, ``subtype``, ``namespace``, ``conf``: the
            node configuration when the service gave it), which it may amend in place
            (e.g. set ``subtype``). May be a coroutine function or return a Deferred.
        """
        return self.analysers.register(analyser)

    async def get_items_from_cache(
        self,
        client: Client,
        service: JID | None,
        node: str,
        max_items: int | None = None,
        item_ids: Sequence[str] | None = None,
        rsm_request: rsm.RSMRequest | None = None,
    ) -> ItemsResult | None:
        """The cache's answer to an items request, as the service would give it; None
        when the cache cannot answer it faithfully (``reader.read`` says why)."""
        service = service or client.jid.userhostJID()
        answer = await self.reader.read(
            client,
            ItemsRequest(service, node, max_items, item_ids, rsm_request),
            cache_only=True,
        )
        return None if isinstance(answer, Missed) else answer

    # --- the request path ------------------------------------------------------------------

    async def _get_items_trigger(
        self,
        client: Client,
        service: JID | None,
        node: str,
        max_items: int | None,
        item_ids: Sequence[str] | None,
        sub_id: str | None,
        rsm_request: rsm.RSMRequest | None,
        extra: dict[str, Any],
    ) -> ReturnPointResult:
        request = _request(client, service, node, max_items, item_ids, sub_id, rsm_request, extra)
        answer = await self.reader.read(client, request)
        if isinstance(answer, Missed):
            if answer.reason is not Miss.DISABLED:
                self.counters.miss(answer.reason.value)
            log.debug(
                "items of %s on %s: miss (%s)", node, request.service.full(), answer.reason.value
            )
            return True, None
        self.counters.hits += 1
        log.debug("items of %s on %s: from the cache", node, request.service.full())
        return False, answer

    async def _got_items_trigger(
        self,
        client: Client,
        service: JID | None,
        node: str,
        max_items: int | None,
        item_ids: Sequence[str] | None,
        sub_id: str | None,
        rsm_request: rsm.RSMRequest | None,
        extra: dict[str, Any],
        items: list[domish.Element],
        metadata: dict[str, Any],
    ) -> bool:
        request = _request(client, service, node, max_items, item_ids, sub_id, rsm_request, extra)
        try:
            await self.writeback.record(client, request, items, metadata)
        except STORE_ERRORS as error:
            self.store_access.failed(error, f"recording node {node}")
        return True


def _request(
    client: Client,
    service: JID | None,
    node: str,
    max_items: int | None,
    item_ids: Sequence[str] | None,
    sub_id: str | None,
    rsm_request: rsm.RSMRequest | None,
    extra: dict[str, Any],
) -> ItemsRequest:
    """The request of a trigger point's arguments (no service: the profile's own PEP)."""
    return ItemsRequest(
        service or client.jid.userhostJID(), node, max_items, item_ids, rsm_request, sub_id, extra
    )
