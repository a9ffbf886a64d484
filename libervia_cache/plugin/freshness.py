"""Catching up on what the cache could not hear: after a (re)connection or a reopening,
after publications, and periodically.

Events sent while the daemon was stopped, disconnected, or without its store are lost.
When a profile (re)connects, or the store opens again after a failure, the syncs that
were left IN_PROGRESS (a crash, a restart, a lost connection) are redone, and every
COMPLETED node of the profile is held back from being served (:mod:`.holds`) until one
request (the RSM last page of one item, with the count) tells whether it changed: a new,
retracted or republished newest item, or a different count. A service without RSM
answers every item: the whole node is compared. A node that changed is synchronised
again. A change of an older item that leaves both untouched is not seen (``sync``
refreshes it).

Some changes come with no event at all: Prosody drops the oldest items of a full node
when a new one is published, and so does ejabberd without ``notify_retract``; Prosody
sends no retraction without ``notify`` and lowers ``max_items`` silently. So a node is
also checked a few seconds after a publication adds items to it (at most once per
:data:`PUBLICATION_CHECK_INTERVAL`), without being held meanwhile, and every synced node
is checked every ``check_interval`` seconds: the staleness these silent changes cause is
bounded by those delays, and ``status`` shows when each node was last checked. Such a
node is served while it is checked, and events keep coming: a check that crossed an
event of its node proves nothing and is redone later, and a difference is confirmed by a
second check before the node is synchronised again (a notification may still be on its
way), so a busy node is not resynchronised for changes its events bring anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID
from tx_xmpp import rsm

from libervia_cache.errors import describe
from libervia_cache.hostapi import XEP0060, Client
from libervia_cache.plugin.holds import Holds
from libervia_cache.plugin.items import UnstorableItem, normalise_item, serialise
from libervia_cache.plugin.serial import KeyedQueues
from libervia_cache.plugin.store_access import StoreAccess
from libervia_cache.plugin.syncs import SyncManager
from libervia_cache.storage import NodeInfo, SyncState

log = logging.getLogger(__name__)

#: at most this many checks in flight at once
PARALLEL_CHECKS = 4

#: seconds between a publication adding items to a node and the node's check (events
#: of the same burst come meanwhile), and the least time between two such checks
PUBLICATION_CHECK_DELAY = 2.0
PUBLICATION_CHECK_INTERVAL = 30.0


class Freshness:
    """Checks the synced nodes of a profile against its server after a gap."""

    def __init__(
        self,
        *,
        store_access: StoreAccess,
        pubsub: XEP0060,
        syncs: SyncManager,
        holds: Holds,
        clients: Callable[[], Mapping[str, Client]],
        queues: KeyedQueues | None = None,
    ) -> None:
        self._store_access = store_access
        self._queues = queues if queues is not None else KeyedQueues()
        #: node key -> events received for it so far (:meth:`event_received`)
        self._events_seen: dict[tuple[str, str, str], int] = {}
        self._pubsub = pubsub
        self._syncs = syncs
        self._holds = holds
        self._clients = clients
        self._slots = defer.DeferredSemaphore(PARALLEL_CHECKS)
        #: the checks started by the last (re)connection (tests and status wait on it)
        self.checks: defer.Deferred[Any] = defer.succeed(None)
        self._in_flight: set[defer.Deferred[Any]] = set()
        self._stopped = False
        #: node id -> when its last check ended (POSIX time)
        self.last_checked: dict[int, float] = {}
        self._scheduled: dict[int, Any] = {}
        self._waiters: dict[int, list[defer.Deferred[None]]] = {}
        self._loop: Any = None
        self._clock: Any = None

    def start_periodic(self, interval: int, clock: Any = None) -> None:
        """Check every synced node of the connected profiles every ``interval`` seconds
        (0: never)."""
        if clock is None:
            from twisted.internet import reactor as clock
        self._clock = clock
        if interval <= 0:
            return
        from twisted.internet import task

        self._loop = task.LoopingCall(self._periodic, interval)
        self._loop.clock = clock
        self._loop.start(interval, now=False).addErrback(
            lambda failure: log.error("periodic checks stopped: %s", describe(failure.value))
        )

    def _periodic(self, interval: int) -> defer.Deferred[Any]:
        return defer.Deferred.fromCoroutine(self._check_stale(interval))

    async def _check_stale(self, interval: int) -> None:
        store = self._store_access.store
        if store is None or self._stopped:
            return
        now = self._now()
        for client in list(self._clients().values()):
            try:
                completed = await store.get_nodes(
                    profile=client.profile, sync_state=SyncState.COMPLETED
                )
            except Exception as error:
                log.debug("periodic check: %s", describe(error))
                return
            for info in completed:
                if now - self.last_checked.get(info.id, 0) >= interval:
                    self._schedule(client, info, 0)

    def after_publication(self, client: Client, node_info: NodeInfo) -> None:
        """A publication added items to a synced node: check it soon (servers drop the
        oldest items of a full node without telling), once per burst."""
        since = self._now() - self.last_checked.get(node_info.id, 0)
        self._schedule(
            client, node_info, max(PUBLICATION_CHECK_DELAY, PUBLICATION_CHECK_INTERVAL - since)
        )

    def event_received(self, key: tuple[str, str, str]) -> None:
        """An event of the node ``key`` (profile, service, name) arrived: a check whose
        answer crossed it cannot tell a change the event brings from a silent one."""
        self._events_seen[key] = self._events_seen.get(key, 0) + 1

    def _schedule(
        self, client: Client, node_info: NodeInfo, delay: float, confirming: bool = False
    ) -> None:
        """A check of a served node in ``delay`` seconds (one at a time per node)."""
        if self._stopped or node_info.id in self._scheduled:
            return
        clock = self._clock
        if clock is None:
            from twisted.internet import reactor as clock

        def run() -> None:
            self._scheduled.pop(node_info.id, None)
            self._track(self._slots.run(self._check_served, client, node_info, confirming))

        self._scheduled[node_info.id] = clock.callLater(delay, run)

    def next_check(self, node_id: int) -> defer.Deferred[None]:
        """A Deferred fired when the next check of ``node_id`` ends."""
        waiter: defer.Deferred[None] = defer.Deferred()
        self._waiters.setdefault(node_id, []).append(waiter)
        return waiter

    def _now(self) -> float:
        clock = self._clock
        if clock is None:
            from twisted.internet import reactor as clock
        seconds: float = clock.seconds()
        return seconds

    def _track(self, d: defer.Deferred[Any]) -> None:
        self._in_flight.add(d)

        def done(result: Any) -> None:
            self._in_flight.discard(d)

        d.addBoth(done)

    async def stop(self) -> None:
        """No more checks; wait for those in flight to end (they start nothing more)."""
        self._stopped = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for call in self._scheduled.values():
            if call.active():
                call.cancel()
        self._scheduled.clear()
        while self._in_flight:
            await defer.DeferredList(list(self._in_flight))

    async def profile_connected(self, client: Client) -> None:
        """Redo what a gap left half done and check what it may have made stale."""
        if self._stopped:
            return
        # synchronously, before any await: no read of this profile is answered from
        # the cache until its nodes are listed for checking
        self._holds.hold_profile(client.profile)
        try:
            await self._resume_and_check(client)
        finally:
            self._holds.release_profile(client.profile)

    def store_reopened(self) -> None:
        """The store works again: what came while it did not was dropped."""
        for client in list(self._clients().values()):
            defer.Deferred.fromCoroutine(self._check_profile(client))

    async def _check_profile(self, client: Client) -> None:
        try:
            await self.profile_connected(client)
        except Exception as error:
            log.error(
                "checking the nodes of profile %s failed: %s", client.profile, describe(error)
            )

    async def _resume_and_check(self, client: Client) -> None:
        store = self._store_access.require()
        for node_info in await store.get_nodes(
            profile=client.profile, sync_state=SyncState.IN_PROGRESS
        ):
            if self._syncs.running(node_info.key) is None:
                log.info(
                    "node %s on %s was left half-synchronised: synchronising it again",
                    node_info.name,
                    node_info.service,
                )
                self._syncs.start(client, node_info)
        completed = await store.get_nodes(profile=client.profile, sync_state=SyncState.COMPLETED)
        self._holds.hold_unchecked([info.id for info in completed])
        if completed:
            self.checks = defer.DeferredList(
                [self._slots.run(self.check, client, info) for info in completed]
            )
            checks = self.checks
            self._in_flight.add(checks)

            def done(result: Any) -> Any:
                self._in_flight.discard(checks)
                return result

            checks.addBoth(done)

    async def check(self, client: Client, node_info: NodeInfo) -> None:
        """After a gap: resynchronise ``node_info`` if it differs from the server (events
        were lost: any difference is a change missed); release its hold."""
        try:
            if self._stopped:
                return
            if not await self._unchanged(client, node_info) and not self._stopped:
                self._changed(node_info)
                self._syncs.restart(client, node_info)
        finally:
            self._holds.checked(node_info.id)
            self._concluded(node_info.id)

    async def _check_served(self, client: Client, node_info: NodeInfo, confirming: bool) -> None:
        """A check of a node served meanwhile (after a publication, or periodic).

        Events keep coming while it runs: an answer that crossed one (or came while
        earlier ones were still being applied) tells nothing, and the node is checked
        again a little later. A difference with no event in sight is checked once more
        after :data:`PUBLICATION_CHECK_DELAY` (a notification may still be on its way,
        some services send them after answering) before the node is synchronised again.
        """
        store = self._store_access.store
        if self._stopped or store is None:
            self._concluded(node_info.id)
            return
        try:
            current = await store.get_node(*node_info.key)
        except Exception as error:  # the store failed: its reopening checks every node
            log.debug("check of node %s: %s", node_info.name, describe(error))
            self._concluded(node_info.id)
            return
        if current is None or current.id != node_info.id:
            self._concluded(node_info.id)  # reset or deleted meanwhile: nothing to check
            return
        if current.sync_state is not SyncState.COMPLETED:
            self._concluded(node_info.id)  # a sync runs (or failed): it answers for it
            return
        key = current.key
        seen = self._events_seen.get(key, 0)
        busy = self._queues.pending(key)
        try:
            unchanged = await self._unchanged(client, current, quiet=True)
        except Exception as error:  # the store failed: its reopening checks every node
            log.debug("check of node %s: %s", current.name, describe(error))
            unchanged = True
        if self._stopped or unchanged:
            self._concluded(node_info.id)
        elif busy or self._events_seen.get(key, 0) != seen:
            log.debug(
                "check of node %s on %s crossed its events: checking it again later",
                current.name,
                current.service,
            )
            self._schedule(client, current, PUBLICATION_CHECK_DELAY)
        elif not confirming:
            self._schedule(client, current, PUBLICATION_CHECK_DELAY, confirming=True)
        else:
            self._changed(current)
            self._syncs.restart(client, current)
            self._concluded(node_info.id)

    def _changed(self, node_info: NodeInfo) -> None:
        log.info(
            "node %s on %s changed while its events could not reach us: synchronising it again",
            node_info.name,
            node_info.service,
        )

    def _concluded(self, node_id: int) -> None:
        """The check of ``node_id`` reached its conclusion (a sync, if any, started)."""
        self.last_checked[node_id] = self._now()
        for waiter in self._waiters.pop(node_id, []):
            waiter.callback(None)

    async def _unchanged(self, client: Client, node_info: NodeInfo, quiet: bool = False) -> bool:
        store = self._store_access.require()
        service = JID(node_info.service)
        try:
            items, metadata = await self._pubsub.get_items_from_network(
                client, service, node_info.name, rsm_request=rsm.RSMRequest(max_=1, before="")
            )
            server_items = [serialise(normalise_item(item)) for item in items]
        except (Exception, UnstorableItem) as error:
            log.info(
                "could not check node %s on %s for changes (%s)%s",
                node_info.name,
                node_info.service,
                describe(error),
                "" if quiet else ": synchronising it again",
            )
            return False
        server_rsm = metadata.get("rsm") or {}
        if server_rsm:
            cached = await store.get_items(node_info.id, rsm_max=1, before="")
            same_count = node_info.truncated or cached.count == server_rsm.get("count")
            unchanged = same_count and cached.items == server_items
        else:
            cached = await store.get_items(node_info.id)
            unchanged = cached.items == server_items
        return unchanged
