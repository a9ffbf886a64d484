"""The running syncs: at most one :class:`NodeSync` per node, started, followed, cancelled.

Single flight: a node has at most one sync running in this process; asking for another
gets the running one. Purge, reset and node deletion cancel the syncs they affect and
wait for them to end (the store refuses their writes anyway once the node is taken from
them); a sync older than the deadline is cancelled and started again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import defer

from libervia_cache.errors import CacheUnavailable
from libervia_cache.hostapi import XEP0060, Client
from libervia_cache.plugin.analysis import AnalyserRegistry
from libervia_cache.plugin.counters import Counters
from libervia_cache.plugin.serial import KeyedQueues
from libervia_cache.plugin.settings import Settings
from libervia_cache.plugin.store_access import StoreAccess
from libervia_cache.plugin.sync import NodeKey, NodeSync, SyncProgress
from libervia_cache.storage import NodeInfo

log = logging.getLogger(__name__)


class SyncManager:
    """Keeps one :class:`NodeSync` per node key while it runs."""

    def __init__(
        self,
        *,
        store_access: StoreAccess,
        pubsub: XEP0060,
        analysers: AnalyserRegistry,
        settings: Settings,
        queues: KeyedQueues,
        counters: Counters,
        on_begin: Callable[[NodeInfo], Any] | None = None,
    ) -> None:
        self._store_access = store_access
        self._pubsub = pubsub
        self._analysers = analysers
        self._settings = settings
        self._queues = queues
        self._counters = counters
        self._on_begin = on_begin
        self._running: dict[NodeKey, NodeSync] = {}
        self._stopped = False

    def running(self, key: NodeKey) -> NodeSync | None:
        """The sync of this node running now, if any."""
        return self._running.get(key)

    def progress(self, key: NodeKey) -> SyncProgress | None:
        sync = self._running.get(key)
        return sync.progress if sync is not None else None

    def __len__(self) -> int:
        return len(self._running)

    def start(self, client: Client, node_info: NodeInfo) -> NodeSync:
        """Synchronise a node in the background; the running sync if one runs.

        Raises :class:`CacheUnavailable` once the plugin is stopping."""
        if self._stopped:
            raise CacheUnavailable("the cache is stopping")
        running = self._running.get(node_info.key)
        if running is not None:
            return running
        sync = NodeSync(
            node_info,
            client,
            store_access=self._store_access,
            pubsub=self._pubsub,
            analyser=self._analysers.get(node_info.analyser),
            settings=self._settings,
            queues=self._queues,
            counters=self._counters,
            on_begin=self._on_begin,
        )
        self._running[node_info.key] = sync
        sync.wait().addCallback(lambda __: self._ended(sync))
        sync.start()
        return sync

    def _ended(self, sync: NodeSync) -> None:
        if self._running.get(sync.key) is sync:
            del self._running[sync.key]

    def restart(self, client: Client, node_info: NodeInfo) -> NodeSync:
        """Synchronise a node from scratch: a running sync is cancelled first (what it
        paged may be stale: a purge event, a configuration change)."""
        self.cancel(node_info.key)
        return self.start(client, node_info)

    def restart_if_stale(self, client: Client, node_info: NodeInfo) -> None:
        """Redo a sync that outlived the deadline, or that no process runs any more (a
        node left IN_PROGRESS)."""
        running = self._running.get(node_info.key)
        if running is not None:
            if time.monotonic() - running.started < self._settings.progress_deadline:
                return
            log.warning(
                "synchronisation of %s is older than %d s: starting it again",
                running.where,
                self._settings.progress_deadline,
            )
        self.restart(client, node_info)

    def cancel(self, key: NodeKey) -> NodeSync | None:
        """Cancel the running sync of ``key`` and forget it at once, so that a new one
        can start before the cancellation has run its course."""
        sync = self._running.pop(key, None)
        if sync is not None:
            sync.cancel()
        return sync

    async def stop(self) -> None:
        """Start no more syncs; cancel the running ones and wait for their end."""
        self._stopped = True
        await self.cancel_and_wait()

    async def cancel_and_wait(self, keys: Iterable[NodeKey] | None = None) -> int:
        """Cancel the syncs of ``keys`` (every sync if None) and wait until they ended;
        returns how many there were."""
        wanted = list(self._running) if keys is None else [k for k in keys if k in self._running]
        cancelled = [sync for key in wanted if (sync := self.cancel(key)) is not None]
        if cancelled:
            await defer.DeferredList([sync.wait() for sync in cancelled])
        return len(cancelled)
