"""The pubsub cache plugin: wiring of analysis, synchronisation, store and triggers.

Hooked on the daemon's items request path (see ``doc/`` and DESIGN.md):

- return point ``XEP-0060_getItems``: a COMPLETED node is answered from the store;
- point ``XEP-0060_gotItems``: an unknown node is analysed with the items just fetched,
  a node worth syncing gets a background sync, tracked unsynced nodes get write-back;
- pubsub events keep synced nodes fresh.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from twisted.internet import defer
from twisted.internet import error as net_error
from twisted.internet import reactor as _reactor
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from tx_xmpp import pubsub, rsm

from libervia_cache.aio import SerialQueue
from libervia_cache.analysis import Analyser, AnalyserRegistry, analyse_node
from libervia_cache.bridge_api import register_bridge_methods
from libervia_cache.hostapi import (
    XEP0060,
    Client,
    ConfigurationEvent,
    Host,
    ItemsResult,
    ReturnPointResult,
)
from libervia_cache.storage import ItemsPage, NodeInfo, Store, SyncState, UnknownRSMKey
from libervia_cache.sync import (
    DEFAULT_PAGE_SIZE,
    SyncError,
    SyncProgress,
    normalise_item,
    parse_items,
    synchronise_node,
)
from libervia_cache.xml import LazyElement

log = logging.getLogger(__name__)
#: the running reactor (zope interfaces do not type-check without a mypy plugin)
reactor: Any = _reactor

PLUGIN_INFO = {
    "name": "Pubsub cache",
    "import_name": "PUBSUB_CACHE",
    "dependencies": ["XEP-0060"],
    "recommendations": [],
    "main": "PubsubCache",
    "description": "Keeps pubsub nodes in a local database and answers reads from it",
}

#: The cache answers before any other trigger of the items request path.
TRIGGER_PRIORITY = 1000

#: Seconds before retrying to open a database that could not be opened (doubling).
FIRST_REOPEN_DELAY = 5
MAX_REOPEN_DELAY = 300


class CacheUnavailable(RuntimeError):
    """The store is not open (see ``PubsubCache.unavailable_reason``)."""


#: Failures of a sync that say nothing about the node: retried on the next read.
CONNECTION_ERRORS = (
    ConnectionError,
    net_error.ConnectionLost,
    net_error.ConnectionDone,
    defer.TimeoutError,
)

#: What a failing store raises: any of these on the request path means "ask the network".
STORE_ERRORS = (SQLAlchemyError, sqlite3.Error, OSError, CacheUnavailable)

SyncKey = tuple[str, str, str]

#: what every cached item is: the store keeps them as an items request answers them
ITEM_QNAME = (pubsub.NS_PUBSUB, "item")

#: Trigger point called (synchronously) after each pubsub event the cache applied,
#: with ``(client, event)``: lets tests and other plugins wait for the cache to be fresh.
EVENT_APPLIED_POINT = "PUBSUB_CACHE_eventApplied"


@dataclass
class RunningSync:
    """A synchronisation running in this process."""

    deferred: defer.Deferred[None]
    progress: SyncProgress
    started: float = field(default_factory=time.monotonic)
    #: ids of items published or retracted by events during the sync (newer than pages)
    updated_by_events: set[str] = field(default_factory=set)
    cancelled: bool = False

    def cancel(self) -> None:
        """Stop this sync: it must not write anything more, even a write in flight."""
        self.cancelled = True
        self.deferred.cancel()


@dataclass
class CacheCounters:
    """Hits and misses since the daemon started."""

    hits: int = 0
    misses: int = 0
    syncs_started: int = 0
    syncs_failed: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    def miss(self, reason: str) -> None:
        self.misses += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1


def _describe(error: BaseException) -> str:
    """One line for a failure: a stanza error's condition, else the message."""
    if isinstance(error, StanzaError):
        return f"the service answered {error.condition}" + (
            f" ({error.text})" if error.text else ""
        )
    if isinstance(error, defer.TimeoutError):
        return "the service did not answer in time"
    return _one_line(error)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) < 300 else text[:297] + "..."


class PubsubCache:
    """Transparent pubsub cache (``host.plugins["PUBSUB_CACHE"]``)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.pubsub: XEP0060 = host.plugins["XEP-0060"]
        self.analysers = AnalyserRegistry()
        self.store: Store | None = None
        self.counters = CacheCounters()
        self.serving = host.config.get("pubsub_cache", "strategy") != "no_cache"
        self.limit: int = host.config.get("pubsub_cache", "cache_limit")
        self.deadline: int = host.config.get("pubsub_cache", "progress_deadline")
        #: items asked per RSM page while synchronising
        self.sync_page_size = DEFAULT_PAGE_SIZE
        self._syncs: dict[SyncKey, RunningSync] = {}
        self._event_queue = SerialQueue()
        #: at most this many freshness checks in flight after a (re)connection
        self._freshness_slots = defer.DeferredSemaphore(4)
        #: synced nodes not yet checked for changes since their profile (re)connected
        self._unchecked: set[SyncKey] = set()
        self._profiles_unverified: set[str] = set()
        #: the freshness checks started by the last (re)connection (tests wait on it)
        self.freshness_checks: defer.Deferred[Any] = defer.succeed(None)
        #: why the cache cannot be used right now (None when it can)
        self.unavailable_reason: str | None = "the cache database is not open yet"
        self._reopen_delay = FIRST_REOPEN_DELAY
        self._reopen_call: Any = None
        self._last_store_error: str | None = None
        host.trigger.add("XEP-0060_getItems", self._get_items_trigger, TRIGGER_PRIORITY)
        host.trigger.add("XEP-0060_gotItems", self._got_items_trigger, TRIGGER_PRIORITY)
        self.pubsub.add_event_handler(self._on_event)
        register_bridge_methods(host, self)

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Open (create or upgrade) the store.

        A store that cannot be opened (locked, unreadable, corrupt, newer than this
        code) does not stop the daemon: reads go to the network, the reason is logged
        and shown by the status, and opening is retried with a growing delay, so a
        transient problem (a lock) heals by itself. The database file is never touched.
        """
        await self._open_store()

    async def _open_store(self) -> None:
        db_url = self.host.config.get("pubsub_cache", "db_url")
        try:
            self.store = await Store.open(db_url)
        except Exception as error:
            self.unavailable_reason = f"the cache database cannot be opened: {_one_line(error)}"
            log.error(
                "%s; reads go to the network; retrying in %d s",
                self.unavailable_reason,
                self._reopen_delay,
            )
            self._reopen_call = reactor.callLater(self._reopen_delay, self._retry_open)
            self._reopen_delay = min(self._reopen_delay * 2, MAX_REOPEN_DELAY)
        else:
            if self._reopen_delay != FIRST_REOPEN_DELAY:
                log.info("the cache database is open again")
            self.unavailable_reason = None
            self._reopen_delay = FIRST_REOPEN_DELAY

    def _retry_open(self) -> None:
        self._reopen_call = None
        defer.Deferred.fromCoroutine(self._open_store())

    async def stop(self) -> None:
        if self._reopen_call is not None and self._reopen_call.active():
            self._reopen_call.cancel()
        for key in list(self._syncs):
            self._cancel_sync(key)
        self.host.trigger.remove("XEP-0060_getItems", self._get_items_trigger)
        self.host.trigger.remove("XEP-0060_gotItems", self._got_items_trigger)
        self.pubsub.remove_event_handler(self._on_event)
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def profile_connected(self, client: Client) -> None:
        """On each (re)connection of a profile: redo the syncs a crash, a restart or the
        lost connection left IN_PROGRESS, and check that synchronised nodes did not
        change while we could not hear their events."""
        # synchronously, before any await: no read of this profile is answered from
        # the cache until its nodes are listed for checking
        self._profiles_unverified.add(client.profile)
        try:
            await self._resume_and_check(client)
        finally:
            self._profiles_unverified.discard(client.profile)

    async def _resume_and_check(self, client: Client) -> None:
        store = self._require_store()
        for node_info in await store.get_nodes(
            profile=client.profile, sync_state=SyncState.IN_PROGRESS
        ):
            if (client.profile, node_info.service, node_info.name) in self._syncs:
                continue
            log.info(
                "node %s on %s was left half-synchronised: synchronising it again",
                node_info.name,
                node_info.service,
            )
            self.start_sync(client, node_info)
        completed = await store.get_nodes(profile=client.profile, sync_state=SyncState.COMPLETED)
        # until its check says it did not change, a node is answered by the network
        self._unchecked.update((client.profile, i.service, i.name) for i in completed)
        if completed:
            self.freshness_checks = defer.DeferredList(
                [
                    self._freshness_slots.run(self._check_freshness, client, info)
                    for info in completed
                ]
            )

    async def _check_freshness(self, client: Client, node_info: NodeInfo) -> None:
        """Resynchronise a node whose newest item or count differ from the server's.

        Events sent while the daemon was stopped or disconnected are lost. One request
        per node (the RSM last page of one item, with the count) tells whether it
        changed: a new, retracted or republished newest item, or a different count. A
        service without RSM answers every item: the whole node is compared. A change of
        an older item that leaves both untouched is not seen (``sync`` refreshes it).
        """
        key: SyncKey = (client.profile, node_info.service, node_info.name)
        try:
            await self._compare_with_server(client, node_info)
        finally:
            self._unchecked.discard(key)

    async def _compare_with_server(self, client: Client, node_info: NodeInfo) -> None:
        store = self._require_store()
        service = JID(node_info.service)
        try:
            items, metadata = await self.pubsub.get_items_from_network(
                client, service, node_info.name, rsm_request=rsm.RSMRequest(max_=1, before="")
            )
        except Exception as error:
            log.info(
                "could not check node %s on %s for changes (%s): synchronising it again",
                node_info.name,
                node_info.service,
                _describe(error),
            )
            self.start_sync(client, node_info)
            return
        server_rsm = metadata.get("rsm") or {}
        if server_rsm:
            cached = await store.get_items(node_info.id, rsm_max=1, before="")
            fresh = cached.count == server_rsm.get("count") and cached.items == [
                normalise_item(i).toXml() for i in items
            ]
        else:
            cached = await store.get_items(node_info.id)
            fresh = cached.items == [normalise_item(i).toXml() for i in items]
        if fresh:
            return
        log.info(
            "node %s on %s changed while its events could not reach us: synchronising it again",
            node_info.name,
            node_info.service,
        )
        self.start_sync(client, node_info)

    # --- analysers -------------------------------------------------------------------

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

    # --- the request path --------------------------------------------------------------

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
        try:
            answer = await self._serve_from_cache(
                client, service, node, max_items, item_ids, sub_id, rsm_request, extra
            )
        except STORE_ERRORS as error:
            self._store_failed(error, f"reading node {node}")
            self.counters.miss("cache unavailable")
            return True, None
        if answer is None:
            return True, None
        self.counters.hits += 1
        self._last_store_error = None
        return False, answer

    def _store_failed(self, error: BaseException, doing: str) -> None:
        """Log a store failure once (not once per request), with what was being done."""
        message = _one_line(error)
        if message != self._last_store_error:
            log.error(
                "cache database error while %s: %s (answering from the network)", doing, message
            )
            self._last_store_error = message
        else:
            log.debug("cache database error while %s: %s", doing, message)

    async def _serve_from_cache(
        self,
        client: Client,
        service: JID | None,
        node: str,
        max_items: int | None,
        item_ids: Sequence[str] | None,
        sub_id: str | None,
        rsm_request: rsm.RSMRequest | None,
        extra: dict[str, Any],
    ) -> ItemsResult | None:
        if not self.serving or extra.get("use_cache") is False:
            return None
        if sub_id or extra.get("mam") or extra.get("order_by"):
            self.counters.miss("unsupported request")
            return None
        service = service or client.jid.userhostJID()
        store = self._require_store()
        node_info = await store.get_node(client.profile, service.full(), node)
        if node_info is None or node_info.sync_state is not SyncState.COMPLETED:
            if node_info is not None and node_info.sync_state is SyncState.IN_PROGRESS:
                self._restart_if_stale(client, node_info)
            self.counters.miss("not synchronised")
            return None
        if (
            client.profile in self._profiles_unverified
            or (client.profile, node_info.service, node_info.name) in self._unchecked
        ):
            self.counters.miss("checked for changes after a reconnection")
            return None
        return await self.get_items_from_cache(
            client, service, node, max_items, item_ids, rsm_request, node_info=node_info
        )

    async def get_items_from_cache(
        self,
        client: Client,
        service: JID | None,
        node: str,
        max_items: int | None = None,
        item_ids: Sequence[str] | None = None,
        rsm_request: rsm.RSMRequest | None = None,
        *,
        node_info: NodeInfo | None = None,
    ) -> ItemsResult | None:
        """Answer an items request from the store, as the service would answer it.

        Returns ``None`` when the store cannot answer faithfully: node not synchronised,
        an RSM key it does not know (e.g. an ejabberd timestamp key from a page that
        came from the network), or a node holding only its newest items (the cache limit
        was reached) asked for more than those. The caller then asks the network.
        """
        service = service or client.jid.userhostJID()
        store = self._require_store()
        if node_info is None:
            node_info = await store.get_node(client.profile, service.full(), node)
            if node_info is None or node_info.sync_state is not SyncState.COMPLETED:
                return None
        truncated = bool(node_info.extra.get("truncated"))
        if truncated and (rsm_request is not None or (max_items is None and not item_ids)):
            self.counters.miss("node larger than the cache limit")
            return None
        rsm_args: dict[str, Any] = {}
        if rsm_request is not None:
            rsm_args = {
                "rsm_max": rsm_request.max,
                "after": rsm_request.after,
                "before": rsm_request.before,
                "index": rsm_request.index,
            }
        try:
            page = await store.get_items(
                node_info.id, max_items=max_items, item_ids=item_ids, **rsm_args
            )
        except UnknownRSMKey:
            self.counters.miss("unknown RSM key")
            return None
        except ValueError as error:
            log.debug("request the cache cannot answer on node %s: %s", node, error)
            self.counters.miss("unsupported request")
            return None
        if truncated and (
            (max_items is not None and len(page.items) < max_items)
            or (item_ids and len(page.items) < len(set(item_ids)))
        ):
            # the missing items may be among the older ones the cache does not hold
            self.counters.miss("node larger than the cache limit")
            return None
        return [LazyElement(raw, ITEM_QNAME) for raw in page.items], cache_metadata(
            service, node, page, rsm_request is not None
        )

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
        try:
            await self._write_back(
                client, service, node, max_items, item_ids, sub_id, rsm_request, extra, items
            )
        except STORE_ERRORS as error:
            self._store_failed(error, f"recording node {node}")
        return True

    async def _write_back(
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
    ) -> None:
        if not self.serving or sub_id or extra.get("mam"):
            return
        service = service or client.jid.userhostJID()
        store = self._require_store()
        node_info = await store.get_node(client.profile, service.full(), node)
        if node_info is None:
            node_info = await self._analyse_and_record(client, service, node, items)
            if node_info is None:
                return
        analyser = self.analysers.get(node_info.analyser)
        if analyser is None:
            return
        if analyser.to_sync and node_info.sync_state is None:
            self.start_sync(client, node_info)
        elif node_info.sync_state not in (SyncState.COMPLETED, SyncState.IN_PROGRESS):
            # A tracked node that is not synchronised (not to_sync, NO_SYNC or ERROR):
            # keep what we saw, for search. It is never served as complete.
            parsed = await parse_items(analyser, client, service, node, items)
            await store.cache_items(node_info.id, parsed, where="newest")

    async def _analyse_and_record(
        self, client: Client, service: JID, node: str, items: list[domish.Element]
    ) -> NodeInfo | None:
        """Analyse an unknown node and record the result, a negative one included.

        A negative result is recorded only when it is final: an empty node may match
        an analyser by namespace once it holds items.
        """
        analysis = await analyse_node(
            self.analysers, self.pubsub, client, service, node, first_items=items
        )
        if analysis.analyser is None and analysis.namespace is None:
            return None
        return await self._require_store().get_or_create_node(
            client.profile,
            service.full(),
            node,
            analyser=analysis.analyser.name if analysis.analyser else None,
            type_=analysis.type,
            subtype=analysis.subtype,
            extra=analysis.extra,
        )

    # --- synchronisation ---------------------------------------------------------------

    def running_sync(
        self, profile: str, service: JID | str, node: str
    ) -> defer.Deferred[None] | None:
        """A Deferred fired when the running sync of this node ends; None if none runs."""
        running = self._syncs.get((profile, str(service), node))
        if running is None:
            return None
        observer: defer.Deferred[None] = defer.Deferred()

        def relay(result: Any) -> Any:
            observer.callback(None)
            return result

        running.deferred.addBoth(relay)
        return observer

    def start_sync(self, client: Client, node_info: NodeInfo) -> defer.Deferred[None]:
        """Synchronise a node in the background; at most one sync per node at a time.

        Returns a Deferred fired when the sync ends (whatever its outcome: a failure
        sets the node ERROR and is logged).
        """
        key: SyncKey = (client.profile, node_info.service, node_info.name)
        if key not in self._syncs:
            self.counters.syncs_started += 1
            progress = SyncProgress()
            running = RunningSync(defer.Deferred(), progress)
            self._syncs[key] = running
            running.deferred = defer.Deferred.fromCoroutine(
                self._run_sync(client, node_info, running)
            )

            def done(result: Any) -> Any:
                if self._syncs.get(key) is running:
                    del self._syncs[key]
                return result

            running.deferred.addBoth(done)
            running.deferred.addErrback(
                lambda failure: failure.trap(defer.CancelledError, asyncio.CancelledError)
            )
        observer = self.running_sync(*key)
        return observer if observer is not None else defer.succeed(None)

    def _cancel_sync(self, key: SyncKey) -> None:
        """Cancel the running sync of ``key`` and forget it at once, so that a new one
        can start before the cancellation has run its course."""
        running = self._syncs.pop(key, None)
        if running is not None:
            running.cancel()

    def _restart_if_stale(self, client: Client, node_info: NodeInfo) -> None:
        """Redo a sync that outlived the deadline, or that no process runs any more."""
        key: SyncKey = (client.profile, node_info.service, node_info.name)
        running = self._syncs.get(key)
        if running is not None:
            if time.monotonic() - running.started < self.deadline:
                return
            log.warning(
                "synchronisation of node %s on %s is older than %d s: starting it again",
                node_info.name,
                node_info.service,
                self.deadline,
            )
            self._cancel_sync(key)
        self.start_sync(client, node_info)

    async def _run_sync(self, client: Client, node_info: NodeInfo, running: RunningSync) -> None:
        store = self._require_store()
        analyser = self.analysers.get(node_info.analyser)
        try:
            result = await synchronise_node(
                store,
                self.pubsub,
                client,
                node_info,
                analyser,
                limit=self.limit,
                page_size=self.sync_page_size,
                progress=running.progress,
                updated_by_events=running.updated_by_events,
                is_cancelled=lambda: running.cancelled,
                events_queue=self._event_queue,
            )
        except (defer.CancelledError, asyncio.CancelledError):
            raise
        except Exception as error:
            if running.cancelled:
                return
            self.counters.syncs_failed += 1
            # A lost connection is not the node's fault: the node goes back to "never
            # synchronised", and the next read after reconnection syncs it again. Any
            # other failure sets ERROR, which only an explicit `sync` retries.
            transient = isinstance(error, CONNECTION_ERRORS)
            log.error(
                "synchronisation of node %s on %s failed: %s%s",
                node_info.name,
                node_info.service,
                _describe(error),
                " (it will be retried on the next read)" if transient else "",
            )
            try:
                await store.purge_node_items(node_info.id)
                await store.update_node(
                    node_info.id, sync_state=None if transient else SyncState.ERROR
                )
            except STORE_ERRORS as store_error:
                # the node stays IN_PROGRESS: never served, redone at the next start
                self._store_failed(store_error, f"recording the failure of node {node_info.name}")
        else:
            log.info(
                "node %s on %s synchronised: %d items",
                node_info.name,
                node_info.service,
                result.stored,
            )

    async def synchronise(
        self, client: Client, service: JID | None, node: str, resync: bool = True
    ) -> NodeInfo:
        """(Re)synchronise a node now, even one in ERROR or NO_SYNC; wait for the end.

        Without ``resync``, a node already COMPLETED is left as it is. Raises
        ``SyncError`` when the synchronisation fails (the node is then ERROR).
        """
        service = service or client.jid.userhostJID()
        store = self._require_store()
        node_info = await store.get_node(client.profile, service.full(), node)
        if node_info is None:
            analysis = await analyse_node(self.analysers, self.pubsub, client, service, node)
            node_info = await store.get_or_create_node(
                client.profile,
                service.full(),
                node,
                analyser=analysis.analyser.name if analysis.analyser else None,
                type_=analysis.type,
                subtype=analysis.subtype,
                extra=analysis.extra,
            )
        elif not resync and node_info.sync_state is SyncState.COMPLETED:
            return node_info
        key: SyncKey = (client.profile, node_info.service, node_info.name)
        if resync and key in self._syncs:
            # a resync asked for explicitly restarts from scratch
            self._cancel_sync(key)
        await self.start_sync(client, node_info)
        node_info = await store.get_node(client.profile, service.full(), node)
        if node_info is None or node_info.sync_state is not SyncState.COMPLETED:
            raise SyncError(
                f"synchronisation of node {node} on {service.full()} failed (see the daemon's log)"
            )
        return node_info

    # --- events ------------------------------------------------------------------------

    def _on_event(self, client: Client, event: Any) -> defer.Deferred[None]:
        # Events are applied one at a time, in arrival order: two publications applied
        # concurrently could be stored in the wrong order.
        if self.store is None:
            return defer.succeed(None)
        return self._event_queue.run(lambda: self._handle_event_safely(client, event))

    async def _handle_event_safely(self, client: Client, event: Any) -> None:
        try:
            await self._handle_event(client, event)
        except STORE_ERRORS as error:
            # The node may now differ from the server: never serve it as complete.
            self._store_failed(error, f"applying an event of node {event.nodeIdentifier}")
            await self._forget_sync_state(client, event)

    async def _forget_sync_state(self, client: Client, event: Any) -> None:
        try:
            store = self._require_store()
            node_info = await store.get_node(
                client.profile, event.sender.full(), event.nodeIdentifier
            )
            if node_info is not None:
                await store.update_node(node_info.id, sync_state=None)
        except STORE_ERRORS as error:
            log.error(
                "node %s may be stale in the cache and could not be marked so: %s",
                event.nodeIdentifier,
                _one_line(error),
            )

    async def _handle_event(self, client: Client, event: Any) -> None:
        store = self.store
        if store is None:
            return
        # Looking the node up by the event's sender ignores events whose sender is not
        # the node's service.
        node_info = await store.get_node(client.profile, event.sender.full(), event.nodeIdentifier)
        if node_info is None or node_info.sync_state not in (
            SyncState.COMPLETED,
            SyncState.IN_PROGRESS,
        ):
            return
        key: SyncKey = (client.profile, node_info.service, node_info.name)
        running = self._syncs.get(key)
        service = JID(node_info.service)
        if isinstance(event, pubsub.ItemsEvent):
            await self._apply_items_event(client, service, node_info, event, running)
        elif isinstance(event, pubsub.PurgeEvent):
            await store.purge_node_items(node_info.id)
            if running is not None:
                # pages fetched before the purge hold items that are gone
                self._cancel_sync(key)
                self.start_sync(client, node_info)
        elif isinstance(event, pubsub.DeleteEvent):
            if running is not None:
                self._cancel_sync(key)
            await store.delete_node(node_info.id)
        elif isinstance(event, ConfigurationEvent):
            max_items = event.options.get("pubsub#max_items")
            if max_items is not None and running is None:
                log.info(
                    "configuration of node %s on %s changed: synchronising it again",
                    node_info.name,
                    node_info.service,
                )
                self.start_sync(client, node_info)
        else:
            return
        self.host.trigger.point(EVENT_APPLIED_POINT, client, event)

    async def _apply_items_event(
        self,
        client: Client,
        service: JID,
        node_info: NodeInfo,
        event: pubsub.ItemsEvent,
        running: RunningSync | None,
    ) -> None:
        store = self._require_store()
        retracted = [
            e.getAttribute("id")
            for e in event.items
            if e.name == "retract" and e.getAttribute("id")
        ]
        published = [e for e in event.items if e.name == "item"]
        if running is not None:
            running.updated_by_events.update(retracted)
            running.updated_by_events.update(
                i.getAttribute("id") for i in published if i.getAttribute("id")
            )
        if published:
            analyser = self.analysers.get(node_info.analyser)
            published = await self._with_payloads(client, service, node_info.name, published)
            parsed = await parse_items(analyser, client, service, node_info.name, published)
            await store.cache_items(node_info.id, parsed, where="newest")
        if retracted:
            await store.delete_items(node_info.id, retracted)

    async def _with_payloads(
        self, client: Client, service: JID, node: str, items: list[domish.Element]
    ) -> list[domish.Element]:
        """Items with their payloads: notifications may come without (node option)."""
        missing = [i.getAttribute("id") for i in items if not list(i.elements())]
        if not missing:
            return items
        try:
            fetched, __ = await self.pubsub.get_items_from_network(
                client, service, node, item_ids=missing
            )
        except Exception as error:
            log.warning(
                "could not fetch the payload of notified items %s of node %s: %s",
                missing,
                node,
                error,
            )
            return items
        by_id = {i.getAttribute("id"): i for i in fetched}
        return [by_id.get(i.getAttribute("id"), i) for i in items]

    # --- management (public API for the bridge and other plugins) ---------------------

    def sync_progress(self, profile: str, service: JID | str, node: str) -> SyncProgress | None:
        """Progress of the running sync of a node, if one runs."""
        running = self._syncs.get((profile, str(service), node))
        return running.progress if running else None

    async def node_status(
        self,
        profile: str | None = None,
        service: JID | str | None = None,
        node: str | None = None,
    ) -> list[dict[str, Any]]:
        """Cached nodes (JSON-ready): state, item count, last sync, subscription, progress."""
        store = self._require_store()
        rows = []
        for info in await store.get_nodes(
            profile=profile, service=str(service) if service is not None else None
        ):
            if node is not None and info.name != node:
                continue
            progress = self.sync_progress(info.profile, info.service, info.name)
            rows.append(
                {
                    "profile": info.profile,
                    "service": info.service,
                    "node": info.name,
                    "analyser": info.analyser,
                    "type": info.type,
                    "subtype": info.subtype,
                    "state": info.sync_state.name if info.sync_state else None,
                    "last_sync": info.sync_state_updated.isoformat()
                    if info.sync_state_updated
                    else None,
                    "subscribed": info.subscribed,
                    "items": await store.count_items(info.id),
                    "progress": {"stored": progress.stored, "total": progress.total}
                    if progress
                    else None,
                }
            )
        return rows

    def counters_status(self) -> dict[str, Any]:
        """Hit/miss counters since start (JSON-ready)."""
        return {
            "hits": self.counters.hits,
            "misses": self.counters.misses,
            "syncs_started": self.counters.syncs_started,
            "syncs_failed": self.counters.syncs_failed,
            "miss_reasons": dict(self.counters.by_reason),
        }

    async def search(self, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Search cached items; see :mod:`libervia_cache.search` for the query.

        Raises ``SearchQueryError`` naming the offending part of an invalid query.
        """
        return await self._require_store().search(query)

    async def purge(self, filters: Mapping[str, Any] | None = None) -> int:
        """Delete cached items matching ``filters``; returns how many went.

        Nodes that lose items are no longer served from the cache until resynchronised.
        """
        return await self._require_store().purge(filters)

    async def count_purge(self, filters: Mapping[str, Any] | None = None) -> int:
        """How many items :meth:`purge` would delete."""
        return await self._require_store().count_purge(filters)

    async def reset(self) -> None:
        """Forget every cached node and item (running syncs are cancelled first)."""
        for key in list(self._syncs):
            self._cancel_sync(key)
        await self._require_store().reset()

    def _require_store(self) -> Store:
        if self.store is None:
            raise CacheUnavailable(self.unavailable_reason or "the cache database is not open")
        return self.store


def cache_metadata(service: JID, node: str, page: ItemsPage, with_rsm: bool) -> dict[str, Any]:
    """Metadata of an answer from the cache, in the shape of a network answer."""
    metadata: dict[str, Any] = {
        "service": service.full(),
        "node": node,
        "cached": True,
        "complete": True,
    }
    if with_rsm:
        if page.index is not None and page.count is not None:
            metadata["complete"] = page.index + len(page.items) >= page.count
        rsm_data = {
            k: v
            for k, v in (
                ("first", page.first),
                ("last", page.last),
                ("index", page.index),
                ("count", page.count),
            )
            if v is not None
        }
        metadata["rsm"] = rsm_data
    return metadata
