"""Write-back: what the cache learns from network answers to items requests.

After a network answer (the ``XEP-0060_gotItems`` point), an unknown node is analysed
with the items just fetched and recorded (a negative analysis too, when it is final); a
node worth syncing gets a background sync; a tracked node that is not synchronised
keeps the items it was seen with, for search, and is never served as complete.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from libervia_cache.hostapi import XEP0060, Client
from libervia_cache.plugin.analysis import AnalyserRegistry, analyse_node, node_to_sync
from libervia_cache.plugin.behaviour import ServerBehaviour, keys_seen
from libervia_cache.plugin.items import UnstorableItem, parse_items
from libervia_cache.plugin.reader import ItemsRequest
from libervia_cache.plugin.settings import Settings
from libervia_cache.plugin.store_access import StoreAccess
from libervia_cache.plugin.syncs import SyncManager
from libervia_cache.storage import NodeGone, NodeInfo, SyncState

log = logging.getLogger(__name__)


class WriteBack:
    """Records what network answers teach about nodes and items."""

    def __init__(
        self,
        *,
        store_access: StoreAccess,
        pubsub: XEP0060,
        analysers: AnalyserRegistry,
        syncs: SyncManager,
        settings: Settings,
    ) -> None:
        self._store_access = store_access
        self._pubsub = pubsub
        self._analysers = analysers
        self._syncs = syncs
        self._settings = settings

    async def record(
        self,
        client: Client,
        request: ItemsRequest,
        items: list[domish.Element],
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Learn from the network answer ``items`` (with its ``metadata``) to ``request``."""
        if not self._settings.serving or request.sub_id or request.extra.get("mam"):
            return
        store = self._store_access.require()
        node_info = await store.get_node(client.profile, request.service.full(), request.node)
        if node_info is not None and node_info.sync_state is SyncState.COMPLETED:
            await self._learn_keys(node_info, items, metadata or {})
            return
        if node_info is None:
            node_info = await self.analyse_and_record(client, request.service, request.node, items)
            if node_info is None:
                return
        analyser = self._analysers.get(node_info.analyser)
        if analyser is None:
            return
        if node_to_sync(analyser, node_info.extra) and node_info.sync_state is None:
            self._syncs.start(client, node_info)
        elif node_info.sync_state not in (SyncState.COMPLETED, SyncState.IN_PROGRESS):
            # A tracked node that is not synchronised (not to_sync, NO_SYNC or ERROR):
            # keep what we saw, for search. It is never served as complete.
            try:
                parsed = await parse_items(analyser, client, request.service, request.node, items)
            except UnstorableItem as error:
                log.warning("node %s on %s: %s", request.node, request.service.full(), error)
                return
            with contextlib.suppress(NodeGone):  # reset or deleted meanwhile
                await store.cache_items(
                    node_info.id, parsed, where="newest", limit=self._settings.cache_limit
                )

    async def _learn_keys(
        self, node_info: NodeInfo, items: list[domish.Element], metadata: dict[str, Any]
    ) -> None:
        """The server's RSM keys of the answer's ends, when they are not item ids
        (ejabberd): the cache answers with them from then on."""
        rsm_data = metadata.get("rsm") or {}
        if not items or not rsm_data:
            return
        behaviour = ServerBehaviour.of(node_info.extra)
        seen = keys_seen(behaviour, items, rsm_data)
        if seen != behaviour:  # a node synchronised empty: now its keys are known
            with contextlib.suppress(NodeGone):
                await self._store_access.require().update_node(
                    node_info.id, extra={**node_info.extra, "server": seen.to_json()}
                )
        if seen.keys_are_ids:
            return
        keys = {}
        for item, key in ((items[0], rsm_data.get("first")), (items[-1], rsm_data.get("last"))):
            item_id = item.getAttribute("id")
            if item_id and key:
                keys[item_id] = key
        with contextlib.suppress(NodeGone):
            await self._store_access.require().learn_keys(node_info.id, keys)

    async def analyse_and_record(
        self, client: Client, service: JID, node: str, items: list[domish.Element] | None = None
    ) -> NodeInfo | None:
        """Analyse an unknown node and record the result, a negative one included.

        A negative result is recorded only when it is final: an empty node may match
        an analyser by namespace once it holds items.
        """
        analysis = await analyse_node(
            self._analysers, self._pubsub, client, service, node, first_items=items
        )
        if items is not None and analysis.analyser is None and analysis.namespace is None:
            return None
        extra = dict(analysis.extra)
        max_items = (analysis.configuration or {}).get("pubsub#max_items")
        if max_items is not None:
            # the server drops the oldest items beyond it, without telling subscribers
            extra["max_items"] = str(max_items)
        return await self._store_access.require().get_or_create_node(
            client.profile,
            service.full(),
            node,
            analyser=analysis.analyser.name if analysis.analyser else None,
            type_=analysis.type,
            subtype=analysis.subtype,
            extra=extra,
        )
