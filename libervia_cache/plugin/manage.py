"""Managing the cache on demand: synchronise a node now, search, purge, reset.

Purge and reset first cancel the syncs they affect and wait for them to end; the store
refuses the writes of a sync whose node they took anyway (see :mod:`.sync`), so a sync
that starts meanwhile cannot complete on what they removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.words.protocols.jabber.jid import JID

from libervia_cache.hostapi import Client
from libervia_cache.plugin.store_access import StoreAccess
from libervia_cache.plugin.sync import NodeSync
from libervia_cache.plugin.syncs import SyncManager
from libervia_cache.plugin.writeback import WriteBack
from libervia_cache.storage import SyncState


class Management:
    """Operations asked for explicitly (bridge methods, other plugins)."""

    def __init__(
        self, *, store_access: StoreAccess, syncs: SyncManager, writeback: WriteBack
    ) -> None:
        self._store_access = store_access
        self._syncs = syncs
        self._writeback = writeback

    async def synchronise(self, client: Client, service: JID, node: str) -> NodeSync:
        """Synchronise a node now, even one in ERROR or NO_SYNC, or never seen (it is
        analysed first); a sync already running is followed, not restarted. Await
        :meth:`NodeSync.wait` for its end and read its ``outcome``."""
        store = self._store_access.require()
        node_info = await store.get_node(client.profile, service.full(), node)
        if node_info is None:
            node_info = await self._writeback.analyse_and_record(client, service, node)
            assert node_info is not None
        return self._syncs.start(client, node_info)

    async def search(self, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Search cached items (see :mod:`libervia_cache.storage.query`); raises
        ``SearchQueryError`` naming the offending part of an invalid query."""
        return await self._store_access.require().search(query)

    async def count_purge(self, filters: Mapping[str, Any] | None = None) -> int:
        """How many items :meth:`purge` would delete."""
        return await self._store_access.require().count_purge(filters)

    async def purge(self, filters: Mapping[str, Any] | None = None) -> int:
        """Delete cached items matching ``filters`` (every item without); returns how
        many went. Nodes that lose items are not answered from the cache until
        synchronised again."""
        store = self._store_access.require()
        touched = await store.nodes_to_purge(filters)
        await self._syncs.cancel_and_wait(
            [info.key for info in touched if info.sync_state is SyncState.IN_PROGRESS]
        )
        return await store.purge(filters)

    async def reset(self) -> tuple[int, int]:
        """Forget every cached node and item (running syncs are cancelled first);
        returns how many nodes and items there were."""
        store = self._store_access.require()
        await self._syncs.cancel_and_wait()
        return await store.reset()
