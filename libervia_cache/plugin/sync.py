"""One synchronisation of one node: :class:`NodeSync` owns everything about it.

A sync begins, in its node's event queue, by emptying the node and taking ownership of
it with a token (:meth:`Store.begin_sync`); every later write names the token, so that
once a newer sync, a purge, a reset or a node deletion took the node, nothing this sync
still does can land (the store refuses it). It subscribes to the node (so that events
keep it fresh), then pages through every item from the newest backwards with RSM
(``before=""``, then ``before=<first>``), so that the per-node limit keeps the newest
items. A service that ignores RSM (Prosody 0.12) answers every item at once, which is
the whole node. Each page is parsed with the analyser's parser and stored in one
transaction; the last page is stored in the same transaction that marks the node
COMPLETED, so a partial node is never served as complete.

Events that publish or retract items while the sync runs are newer than any page: their
ids are noted (:meth:`NodeSync.note_event`) and pages never overwrite or resurrect them.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet import error as net_error
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from tx_xmpp import rsm

from libervia_cache.errors import NodeNotFound, SyncError, describe
from libervia_cache.hostapi import XEP0060, Client, NotConnected
from libervia_cache.plugin.analysis import Analyser
from libervia_cache.plugin.behaviour import (
    ServerBehaviour,
    measured_from_first_page,
    server_max_items,
    with_index_seen,
)
from libervia_cache.plugin.counters import Counters
from libervia_cache.plugin.items import parse_items
from libervia_cache.plugin.serial import KeyedQueues
from libervia_cache.plugin.settings import Settings
from libervia_cache.plugin.store_access import STORE_ERRORS, StoreAccess
from libervia_cache.storage import NodeGone, NodeInfo, Store, SyncState

log = logging.getLogger(__name__)

#: ``(profile, service, node name)``
NodeKey = tuple[str, str, str]

#: Failures of a sync that say nothing about the node: retried on the next read.
CONNECTION_ERRORS = (
    ConnectionError,
    NotConnected,
    net_error.ConnectionLost,
    net_error.ConnectionDone,
    defer.TimeoutError,
)

CANCELLED = (defer.CancelledError, asyncio.CancelledError)


class Outcome(enum.Enum):
    """How a sync ended."""

    COMPLETED = "completed"
    #: failed for a reason that is not the node's (connection): retried on the next read
    RETRY = "failed, to be retried"
    #: failed: the node is ERROR until an explicit sync
    FAILED = "failed"
    #: the node was taken by a newer sync, a purge, a reset or a deletion
    SUPERSEDED = "superseded"
    #: the service has no such node: the cache forgot it
    NOT_FOUND = "node not found"
    CANCELLED = "cancelled"


@dataclass
class SyncProgress:
    """Where a running sync stands (for status and progress bars)."""

    stored: int = 0
    total: int | None = None
    pages: int = 0


class NodeSync:
    """One synchronisation of one node, from its start to its outcome.

    Build it with :meth:`SyncManager.start`, which keeps at most one per node.
    """

    def __init__(
        self,
        node_info: NodeInfo,
        client: Client,
        *,
        store_access: StoreAccess,
        pubsub: XEP0060,
        analyser: Analyser | None,
        settings: Settings,
        queues: KeyedQueues,
        counters: Counters,
        on_begin: Any = None,
    ) -> None:
        self.node_info = node_info
        self.client = client
        self.progress = SyncProgress()
        #: ids of items published or retracted by events during the sync
        self.touched: set[str] = set()
        #: those of ``touched`` the last event published (not retracted)
        self.published: set[str] = set()
        self.cancelled = False
        self.started = time.monotonic()
        self.outcome: Outcome | None = None
        #: why it failed (FAILED, RETRY, NOT_FOUND)
        self.error: BaseException | None = None
        self._store_access = store_access
        self._pubsub = pubsub
        self._analyser = analyser
        self._settings = settings
        self._queues = queues
        self._counters = counters
        self._on_begin = on_begin
        self._token: str | None = None
        self._observers: list[defer.Deferred[None]] = []
        self._deferred: defer.Deferred[Any] | None = None

    @property
    def key(self) -> NodeKey:
        return self.node_info.key

    @property
    def where(self) -> str:
        return f"node {self.node_info.name} on {self.node_info.service}"

    # --- lifetime ---------------------------------------------------------------------

    def start(self) -> None:
        """Run the sync in the background."""
        self._counters.syncs_started += 1
        log.info("synchronising %s (profile %s)", self.where, self.node_info.profile)
        self._deferred = defer.Deferred.fromCoroutine(self._attempt())
        self._deferred.addBoth(self._attempted)

    def cancel(self) -> None:
        """Stop: from now on this sync writes nothing (the store would refuse it anyway
        once another took the node)."""
        self.cancelled = True
        if self._deferred is not None:
            self._deferred.cancel()

    @property
    def ended(self) -> bool:
        return self.outcome is not None

    def wait(self) -> defer.Deferred[None]:
        """A Deferred fired (never failed) when the sync has ended."""
        if self.outcome is not None:
            return defer.succeed(None)
        observer: defer.Deferred[None] = defer.Deferred()
        self._observers.append(observer)
        return observer

    def note_event(self, published: list[str], retracted: list[str]) -> None:
        """Events published or retracted these items: pages must not bring back an
        older version (nor a retracted item)."""
        self.touched.update(published)
        self.touched.update(retracted)
        self.published.update(published)
        self.published.difference_update(retracted)

    async def _attempt(self) -> tuple[Outcome, BaseException | None]:
        """The sync itself: how it ended, and why when it failed (no cleanup here: a
        cancellation stops this coroutine, never the cleanup of :meth:`_finish`)."""
        try:
            await self._sync()
        except CANCELLED:
            return Outcome.CANCELLED, None
        except NodeGone:  # superseded included
            log.info("synchronisation of %s stopped: another took the node over", self.where)
            return Outcome.SUPERSEDED, None
        except NodeNotFound as error:
            return Outcome.NOT_FOUND, error
        except Exception as error:
            # A lost connection or a failing store is not the node's fault: the node goes
            # back to "never synchronised", and the next read syncs it again. Any other
            # failure sets ERROR, which only an explicit `sync` retries.
            transient = isinstance(error, CONNECTION_ERRORS + STORE_ERRORS)
            return (Outcome.RETRY if transient else Outcome.FAILED), error
        return Outcome.COMPLETED, None

    def _attempted(self, result: Any) -> None:
        if isinstance(result, tuple):
            outcome, error = result
        else:  # the attempt was cancelled (a Failure of CancelledError), or broke
            outcome, error = Outcome.CANCELLED, None
            if not result.check(*CANCELLED):
                outcome, error = Outcome.FAILED, result.value
        defer.Deferred.fromCoroutine(self._finish(outcome, error))

    async def _finish(self, outcome: Outcome, error: BaseException | None) -> None:
        """Record the outcome in the store, then tell whoever waits."""
        try:
            if outcome is Outcome.COMPLETED:
                self._counters.syncs_completed += 1
                log.info(
                    "%s synchronised: %d items in %.1f s",
                    self.where,
                    self.progress.stored,
                    time.monotonic() - self.started,
                )
            elif outcome is Outcome.NOT_FOUND:
                assert error is not None
                self._counters.syncs_failed += 1
                log.warning("%s: %s; the cache forgets it", self.where, describe(error))
                await self._forget_node()
            elif outcome in (Outcome.FAILED, Outcome.RETRY):
                assert error is not None
                self._counters.syncs_failed += 1
                transient = outcome is Outcome.RETRY
                log.error(
                    "synchronisation of %s failed: %s%s",
                    self.where,
                    describe(error),
                    " (it will be retried on the next read)" if transient else "",
                )
                await self._record_failure(None if transient else SyncState.ERROR, describe(error))
        finally:
            self.outcome, self.error = outcome, error
            observers, self._observers = self._observers, []
            for observer in observers:
                observer.callback(None)

    async def _record_failure(self, state: SyncState | None, error: str) -> None:
        if self._token is None:
            return  # never began: nothing of this sync is in the store
        try:
            await self._store_access.require().end_sync(
                self.node_info.id, self._token, state, error
            )
        except STORE_ERRORS as store_error:
            # the node stays IN_PROGRESS: never served, redone at the next start
            self._store_access.failed(store_error, f"recording the failure of {self.where}")

    async def _forget_node(self) -> None:
        try:
            await self._store_access.require().delete_node(self.node_info.id)
        except STORE_ERRORS as store_error:
            self._store_access.failed(store_error, f"forgetting {self.where}")

    # --- the sync itself --------------------------------------------------------------

    async def _sync(self) -> None:
        store = self._store_access.require()
        node_info = self.node_info
        extra = {k: v for k, v in node_info.extra.items() if k != "truncated"}

        async def begin() -> None:
            # in the node's event queue: events queued before are in the pages, events
            # queued after see this sync and are noted
            if self.cancelled:
                raise defer.CancelledError()
            self._token = await store.begin_sync(node_info.id, extra)
            self.touched.clear()
            self.published.clear()
            if self._on_begin is not None:
                self._on_begin(node_info)

        await self._queues.run(self.key, begin)
        await self._subscribe(store)
        await self._page_through(store, extra)

    async def _subscribe(self, store: Store) -> None:
        service = JID(self.node_info.service)
        try:
            await self._pubsub.subscribe(self.client, service, self.node_info.name)
        except CANCELLED:
            raise
        except Exception as error:
            if _is_item_not_found(error):
                raise NodeNotFound(f"the service has no node {self.node_info.name!r}") from None
            log.warning(
                "could not subscribe to %s (%s): this node will go stale",
                self.where,
                describe(error),
            )
            subscribed = False
        else:
            subscribed = True
        await store.update_node(self.node_info.id, token=self._token, subscribed=subscribed)

    async def _get_page(self, request: rsm.RSMRequest) -> tuple[list[Any], dict[str, Any]]:
        try:
            return await self._pubsub.get_items_from_network(
                self.client,
                JID(self.node_info.service),
                self.node_info.name,
                rsm_request=request,
            )
        except StanzaError as error:
            # on the first page, the node itself is missing; later, a key may be
            if _is_item_not_found(error) and request.before == "":
                raise NodeNotFound(f"the service has no node {self.node_info.name!r}") from None
            raise

    async def _page_through(self, store: Store, extra: dict[str, Any]) -> None:
        node_info, progress, touched = self.node_info, self.progress, self.touched
        limit, page_size = self._settings.cache_limit, self._settings.page_size
        service, node = JID(node_info.service), node_info.name
        # ids of items that events stored during the sync and that a page held too (the
        # count check needs them); the duplicate check asks the store, so memory does
        # not grow with the node
        paged_event_ids: set[str] = set()
        request = rsm.RSMRequest(max_=page_size, before="")
        # item ids of the previous page, newest last: when the service keys pages by
        # item id and the key of the next page was retracted meanwhile (libervia-pubsub
        # then answers an empty page), the next id of that page is a key for the same
        # older page
        previous_index: int | None = None
        spare_keys: list[str] = []
        behaviour = ServerBehaviour()
        newest_id: str | None = None
        while True:
            items, metadata = await self._get_page(request)
            progress.pages += 1
            rsm_data = metadata.get("rsm") or {}
            present = [i for i in (item.getAttribute("id") for item in items) if i]
            if progress.pages == 1:
                behaviour = measured_from_first_page(items, rsm_data, page_size)
                newest_id = present[-1] if present else None
            else:
                behaviour = with_index_seen(behaviour, len(items), rsm_data, page_size)
            keys = _server_keys(items, rsm_data, behaviour)
            held = await store.held_item_ids(node_info.id, present)
            repeated = (held - touched) | {i for i in present if present.count(i) > 1}
            if repeated:
                raise SyncError(
                    f"node {node} on {service.full()}: the service returned item(s) "
                    f"{', '.join(sorted(repeated)[:3])} twice while paging; "
                    "synchronisation stopped"
                )
            count = rsm_data.get("count")
            if count is None and not rsm_data:
                count = len(items)  # without RSM the answer is the whole node
            index = rsm_data.get("index")
            first = rsm_data.get("first")
            if count is not None:
                progress.total = min(int(count), limit)
            older_expected = previous_index is not None and previous_index > 0
            if not items and older_expected and spare_keys:
                request = rsm.RSMRequest(max_=page_size, before=spare_keys.pop(0))
                continue
            oldest_page = _is_oldest_page(items, rsm_data, page_size)
            if items and not oldest_page and first is None:
                raise SyncError(
                    f"node {node} on {service.full()}: the service sent a page without RSM "
                    "keys and more items are due; synchronisation stopped"
                )
            paged_event_ids.update(touched.intersection(present))
            room = limit - progress.stored
            truncated = len(items) > room or (len(items) == room and not oldest_page)
            if oldest_page and not truncated:
                _check_count(
                    node, service, count, progress.stored + len(items), paged_event_ids, touched
                )
            if truncated:
                items = items[len(items) - room :] if room else []
                log.warning(
                    "%s holds more than the cache limit of %d items: only the newest %d are "
                    "cached, and only requests they answer are served from the cache",
                    self.where,
                    limit,
                    limit,
                )
                extra = {**extra, "truncated": True}
            # the page's slots count toward the limit even for items that events already
            # stored (or retracted): the limit caps what the node holds
            page_slots = len(items)
            parsed = await parse_items(
                self._analyser,
                self.client,
                service,
                node,
                [i for i in items if i.getAttribute("id") not in touched],
            )
            last_page = oldest_page or truncated
            if last_page:
                oldest_id = present[0] if present else None
                if truncated or not behaviour.rsm:
                    index_probe = None
                else:  # the oldest page, seen in full: its last key and its length
                    index_probe = (rsm_data.get("last"), len(present))
                behaviour = await self._probe(behaviour, newest_id, oldest_id, keys, index_probe)
                # what the cache answers as the service would
                extra = {**extra, "server": behaviour.to_json()}
            await self._queues.run(
                self.key,
                functools.partial(
                    self._write_page,
                    store,
                    items,
                    parsed,
                    behaviour,
                    complete=last_page,
                    server_count=int(count) if count is not None else None,
                    extra=extra if last_page else None,
                    keys=keys,
                ),
            )
            progress.stored += page_slots
            if last_page:
                return
            previous_index = index
            spare_keys = present[1:] if present and first == present[0] else []
            request = rsm.RSMRequest(max_=page_size, before=first)

    async def _write_page(
        self,
        store: Store,
        items: list[Any],
        parsed: list[Any],
        behaviour: ServerBehaviour,
        *,
        complete: bool,
        server_count: int | None,
        extra: dict[str, Any] | None,
        keys: dict[str, str],
    ) -> None:
        """Store a page, as a job of the node's event queue: no event is applied while
        it is written, and every event applied before it is taken into account (an event
        applied while the page was fetched or parsed, the node's completion included)."""
        if self.cancelled:
            raise defer.CancelledError()
        # an item an event published meanwhile keeps the event's version; a server that
        # keeps republished items in their first place (ejabberd, which also replays the
        # last item to a new subscriber) has it where this page has it
        parsed = [row for row in parsed if row[0] not in self.touched]
        in_place = {
            item.getAttribute("id")
            for item in items
            if item.getAttribute("id") in self.published and not behaviour.republish_moves
        }
        if in_place:
            parsed = await self._placed(store, items, parsed, in_place)
        await store.cache_items(
            self.node_info.id,
            parsed,
            where="oldest",
            complete=complete,
            token=self._token,
            server_count=server_count,
            extra=extra,
            keys=keys,
            # a publication during the sync may have pushed the node past its max_items
            # on its server, which then dropped the oldest items without a word (ejabberd
            # applies a lowered max_items only then)
            server_max=server_max_items(extra) if extra is not None and self.published else None,
        )

    async def _placed(
        self, store: Store, items: list[Any], parsed: list[Any], in_place: set[str]
    ) -> list[Any]:
        """``parsed`` with the stored (event) versions of ``in_place`` items put back at
        their places in the page."""
        stored = {row[0]: row for row in await store.stored_items(self.node_info.id, in_place)}
        by_id = {row[0]: row for row in parsed}
        page: list[Any] = []
        for item in items:
            item_id = item.getAttribute("id")
            row = by_id.get(item_id) or stored.get(item_id)
            if row is not None:
                page.append(row)
        return page

    async def _probe(
        self,
        behaviour: ServerBehaviour,
        newest_id: str | None,
        oldest_id: str | None,
        keys: dict[str, str],
        index_probe: tuple[str | None, int] | None = None,
    ) -> ServerBehaviour:
        """Small requests that show how the server answers what paging did not ask:
        whether a ``max_items`` answer carries RSM data (and the newest item's key), in
        which order items asked by id come, and (when paging did not show it) which
        ``index`` a backward page reaching the oldest item gets. A failing probe changes
        nothing."""
        service, node = JID(self.node_info.service), self.node_info.name
        if newest_id is None:
            return behaviour
        last_key, length = index_probe or (None, 0)
        if last_key and length >= 2:
            # the page before the oldest page's last item, one item too large: it holds
            # length - 1 items, at index 0, or -1 for a server counting end - max
            try:
                items, metadata = await self._pubsub.get_items_from_network(
                    self.client,
                    service,
                    node,
                    rsm_request=rsm.RSMRequest(max_=length, before=last_key),
                )
            except CANCELLED:
                raise
            except Exception as error:
                log.debug("%s: index probe failed: %s", self.where, describe(error))
            else:
                behaviour = with_index_seen(
                    behaviour, len(items), metadata.get("rsm") or {}, length
                )
        try:
            items, metadata = await self._pubsub.get_items_from_network(
                self.client, service, node, max_items=1
            )
        except CANCELLED:
            raise
        except Exception as error:
            log.debug("%s: max_items probe failed: %s", self.where, describe(error))
        else:
            rsm_data = metadata.get("rsm") or {}
            behaviour = behaviour.replace(max_items_rsm=bool(rsm_data))
            newest = items[-1].getAttribute("id") if items else None
            if not behaviour.keys_are_ids and newest and rsm_data.get("last"):
                keys[newest] = rsm_data["last"]
        if oldest_id is None or oldest_id == newest_id:
            return behaviour
        try:
            items, __ = await self._pubsub.get_items_from_network(
                self.client, service, node, item_ids=[newest_id, oldest_id]
            )
        except CANCELLED:
            raise
        except Exception as error:
            log.debug("%s: items by id probe failed: %s", self.where, describe(error))
        else:
            answered = [item.getAttribute("id") for item in items]
            if answered == [newest_id, oldest_id]:
                behaviour = behaviour.replace(ids_as_asked=True)
            elif answered == [oldest_id, newest_id]:
                behaviour = behaviour.replace(ids_as_asked=False)
        return behaviour


def _server_keys(
    items: list[Any], rsm_data: dict[str, Any], behaviour: ServerBehaviour
) -> dict[str, str]:
    """The server's own RSM keys of a page's ends (ejabberd: creation timestamps), by
    item id; none when its keys are the item ids."""
    keys: dict[str, str] = {}
    if behaviour.rsm and not behaviour.keys_are_ids and items:
        for item, key in ((items[0], rsm_data.get("first")), (items[-1], rsm_data.get("last"))):
            if item.getAttribute("id") and key:
                keys[item.getAttribute("id")] = key
    return keys


def _is_oldest_page(items: list[Any], rsm_data: dict[str, Any], page_size: int) -> bool:
    """Whether a page paging backwards holds the node's oldest item."""
    if not rsm_data:
        # no RSM: the service ignored it (Prosody 0.12) and sent the whole node
        return True
    index = rsm_data.get("index")
    if index is not None:
        # ejabberd answers a negative index (count - max) for a last page larger than
        # the node: it starts at the oldest item all the same
        return bool(index <= 0 or not items)
    return len(items) < page_size


def _is_item_not_found(error: BaseException) -> bool:
    return isinstance(error, StanzaError) and error.condition == "item-not-found"


def _check_count(
    node: str,
    service: JID,
    count: int | None,
    paged: int,
    paged_event_ids: set[str],
    touched: set[str],
) -> None:
    """Refuse to complete a node when the service said it holds more than was paged.

    Items published by events during the sync are counted by the service but may be
    in no page; items retracted meanwhile only lower the count.
    """
    if count is None:
        return
    known = paged + len(touched - paged_event_ids)
    if known < count:
        raise SyncError(
            f"node {node} on {service.full()}: paging ended after {paged} items but the "
            f"service counts {count}; synchronisation stopped"
        )
