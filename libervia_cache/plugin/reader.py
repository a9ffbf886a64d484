"""The cached read: an items request answered from the store, or the reason it cannot be.

:meth:`CachedReader.read` answers as the node's service would (same items, order and
RSM data) or returns a :class:`Miss` saying why it cannot: the caller then asks the
network (the transparent read) or reports it (``cache-get``). Only a node whose last
sync completed, that nothing holds back (:mod:`.holds`), and whose copy can answer this
very request is served.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.words.protocols.jabber.jid import JID
from tx_xmpp import rsm

from libervia_cache.errors import describe
from libervia_cache.hostapi import Client, ItemsResult, answer_metadata
from libervia_cache.plugin.behaviour import ServerBehaviour
from libervia_cache.plugin.holds import Holds
from libervia_cache.plugin.items import ITEM_QNAME
from libervia_cache.plugin.settings import Settings
from libervia_cache.plugin.store_access import STORE_ERRORS, StoreAccess
from libervia_cache.plugin.syncs import SyncManager
from libervia_cache.plugin.xml import LazyElement
from libervia_cache.storage import (
    ItemsPage,
    NodeChanged,
    NodeInfo,
    Store,
    SyncState,
    UnknownRSMKey,
)

log = logging.getLogger(__name__)


class Miss(enum.Enum):
    """Why the cache does not answer a request (the value is what the status shows)."""

    DISABLED = "cache disabled for this request"
    UNSUPPORTED = "unsupported request"
    UNAVAILABLE = "cache unavailable"
    NOT_SYNCHRONISED = "not synchronised"
    RECONNECTED = "checked for changes after a reconnection"
    SUSPECT = "may have missed a change"
    CHECKING = "checking something with the server"
    TRUNCATED = "node larger than the cache limit"
    UNKNOWN_RSM_KEY = "unknown RSM key"
    UNKNOWN_ID = "an item id the node does not hold"


#: nodes whose last row read is kept, for a read in one round trip (:meth:`_read_assumed`)
KNOWN_NODES = 4096

#: hold reason (:mod:`.holds`) -> miss
_HOLD_MISSES = {miss.value: miss for miss in (Miss.RECONNECTED, Miss.SUSPECT, Miss.CHECKING)}


@dataclass(frozen=True)
class ItemsRequest:
    """An items request (XEP-0060 §6.5, with XEP-0059 RSM), as the trigger receives it."""

    service: JID
    node: str
    max_items: int | None = None
    item_ids: Sequence[str] | None = None
    rsm_request: rsm.RSMRequest | None = None
    sub_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Missed:
    """A miss, with the node when the cache knows it."""

    reason: Miss
    node_info: NodeInfo | None = None
    detail: str | None = None


class CachedReader:
    """Answers items requests from the store when it can do so faithfully."""

    def __init__(
        self,
        *,
        store_access: StoreAccess,
        syncs: SyncManager,
        holds: Holds,
        settings: Settings,
    ) -> None:
        self._store_access = store_access
        self._syncs = syncs
        self._holds = holds
        self._settings = settings
        #: (profile, service, node) -> the node's row as last read
        self._known: dict[tuple[str, str, str], _Known] = {}

    async def read(
        self, client: Client, request: ItemsRequest, *, cache_only: bool = False
    ) -> ItemsResult | Missed:
        """The cached answer to ``request``, or why there is none.

        ``cache_only`` (``ps_cache_get``): the configured strategy and ``use_cache`` do
        not apply, and nothing is started (no sync, no restart of a stale one).
        """
        if not cache_only and (
            not self._settings.serving or request.extra.get("use_cache") is False
        ):
            return Missed(Miss.DISABLED)
        if unsupported := _unsupported(request):
            return Missed(Miss.UNSUPPORTED, detail=unsupported)
        try:
            return await self._read(client, request, cache_only)
        except STORE_ERRORS as error:
            self._store_access.failed(error, f"reading node {request.node}")
            return Missed(Miss.UNAVAILABLE, detail=describe(error))

    async def _read(
        self, client: Client, request: ItemsRequest, cache_only: bool
    ) -> ItemsResult | Missed:
        store = self._store_access.require()
        key = (client.profile, request.service.full(), request.node)
        known = self._known.get(key)
        if known is not None and store.versions_rows:
            answer = await self._read_assumed(store, client, request, known)
            if not isinstance(answer, NodeInfo | None):
                return answer
            node_info = answer
        else:
            node_info = await store.get_node(*key)
        behaviour = self._remember(key, node_info)
        if node_info is None or node_info.sync_state is not SyncState.COMPLETED:
            if (
                not cache_only
                and node_info is not None
                and node_info.sync_state is SyncState.IN_PROGRESS
            ):
                self._syncs.restart_if_stale(client, node_info)
            return Missed(Miss.NOT_SYNCHRONISED, node_info)
        held = self._holds.reason(client.profile, node_info.id)
        if held is not None:
            if (
                not cache_only
                and held == Miss.SUSPECT.value
                and self._syncs.running(node_info.key) is None
            ):
                self._syncs.start(client, node_info)
            return Missed(_HOLD_MISSES[held], node_info)
        assert behaviour is not None
        plan = _plan(request, node_info, behaviour)
        if isinstance(plan, Missed):
            return plan
        try:
            page = await store.get_items(node_info.id, synced_by=node_info.sync_token, **plan.page)
        except UnknownRSMKey:
            return Missed(Miss.UNKNOWN_RSM_KEY, node_info)
        except NodeChanged:
            # a sync, a purge or a reset took the node since it was looked up
            return Missed(Miss.NOT_SYNCHRONISED, node_info)
        except ValueError as error:
            log.debug("request the cache cannot answer on node %s: %s", request.node, error)
            return Missed(Miss.UNSUPPORTED, node_info, str(error))
        return self._answer(request, node_info, plan, page)

    async def _read_assumed(
        self, store: Store, client: Client, request: ItemsRequest, known: _Known
    ) -> ItemsResult | Missed | NodeInfo | None:
        """The answer in one round trip, for the node as last read (``known``); or, when
        that cannot be, the node as it is now (for :meth:`_read` to go on with).

        The page is read for the node as last read, and used only if the node's row has
        not changed since (:meth:`Store.get_items_unless_changed`): the answer is then
        the one that reading the row, then the page for it, would give.
        """
        profile, assumed = client.profile, known.node_info
        if (
            assumed.sync_state is SyncState.COMPLETED
            and self._holds.reason(profile, assumed.id) is None
        ):
            plan = _plan(request, assumed, known.behaviour)
            if not isinstance(plan, Missed):
                try:
                    page = await store.get_items_unless_changed(assumed, **plan.page)
                except ValueError:
                    page = None  # get_items says why
                if page is not None and self._holds.reason(profile, assumed.id) is None:
                    return self._answer(request, assumed, plan, page)
        return await store.get_node(profile, assumed.service, assumed.name)

    def _remember(
        self, key: tuple[str, str, str], node_info: NodeInfo | None
    ) -> ServerBehaviour | None:
        """Keep ``node_info`` as the node last seen (the newest :data:`KNOWN_NODES`);
        its server's behaviour."""
        known = self._known
        last = known.pop(key, None)
        if node_info is None:
            return None
        if last is not None and last.node_info is node_info:
            behaviour = last.behaviour
        else:
            behaviour = ServerBehaviour.of(node_info.extra)
        known[key] = _Known(node_info, behaviour)
        if len(known) > KNOWN_NODES:
            del known[next(iter(known))]
        return behaviour

    def _answer(
        self, request: ItemsRequest, node_info: NodeInfo, plan: _Plan, page: ItemsPage
    ) -> ItemsResult | Missed:
        """The answer made of ``page``, read for ``plan``; or why it cannot be one."""
        self._store_access.worked()
        asked, behaviour = plan.asked, plan.behaviour
        if asked.item_ids and len(page.items) < len(set(asked.item_ids)):
            # an id the cache does not hold: older than the cache limit, or unknown to
            # the server too, which some servers answer with an error
            return Missed(Miss.TRUNCATED if node_info.truncated else Miss.UNKNOWN_ID, node_info)
        if (
            node_info.truncated
            and asked.max_items is not None
            and len(page.items) < asked.max_items
        ):
            # the missing items may be among the older ones the cache does not hold
            return Missed(Miss.TRUNCATED, node_info)
        rsm_data = _rsm_data(asked, page, behaviour)
        if (
            rsm_data is not None
            and page.items
            and (rsm_data.get("first") is None or rsm_data.get("last") is None)
        ):
            # the server's key of an end of the page is not learnt yet (ejabberd)
            return Missed(Miss.UNKNOWN_RSM_KEY, node_info, "the server's key is not known yet")
        items: list[Any] = [LazyElement(raw, ITEM_QNAME) for raw in page.items]
        return items, answer_metadata(
            request.service,
            request.node,
            len(items),
            request.rsm_request,
            rsm_data,
            cached=True,
        )


@dataclass(frozen=True)
class _Known:
    """A node as last read, and its server's behaviour (read from its ``extra``)."""

    node_info: NodeInfo
    behaviour: ServerBehaviour


@dataclass(frozen=True)
class _Plan:
    """How the store is asked for a request's page, given the node's server."""

    asked: ItemsRequest
    behaviour: ServerBehaviour
    #: :meth:`Store.get_items` keyword arguments (but ``synced_by``)
    page: dict[str, Any]


def _plan(request: ItemsRequest, node_info: NodeInfo, behaviour: ServerBehaviour) -> _Plan | Missed:
    """How to read ``request``'s page of the (completed, not held) node, or why the
    cache cannot answer it (no side effect: it may be asked of a node assumed)."""
    asked = _as_the_server_reads_it(request, behaviour)
    if isinstance(asked, str):
        return Missed(Miss.UNSUPPORTED, node_info, asked)
    if node_info.truncated and (
        asked.rsm_request is not None
        or (asked.max_items is None and not asked.item_ids)
        # RSM data on max_items answers (ejabberd) counts every item of the node
        or (asked.max_items is not None and behaviour.max_items_rsm)
    ):
        return Missed(Miss.TRUNCATED, node_info)
    page: dict[str, Any] = {
        "max_items": asked.max_items,
        "item_ids": asked.item_ids,
        "keys": behaviour.key_column,
        "ids_order": "asked" if behaviour.ids_as_asked else "node",
    }
    if asked.rsm_request is not None:
        page["rsm_max"] = asked.rsm_request.max
        page["after"] = asked.rsm_request.after
        page["before"] = asked.rsm_request.before
        page["index"] = asked.rsm_request.index
    return _Plan(asked, behaviour, page)


def _as_the_server_reads_it(
    request: ItemsRequest, behaviour: ServerBehaviour
) -> ItemsRequest | str:
    """The request as the node's server takes it (what it ignores dropped), or why the
    cache cannot answer it."""
    rsm_request, max_items = request.rsm_request, request.max_items
    if not behaviour.rsm:
        rsm_request = None  # Prosody 0.12: RSM ignored, max_items or item ids honoured
    elif rsm_request is not None and max_items is not None:
        max_items = None  # ejabberd, libervia-pubsub: RSM wins
    if request.item_ids:
        if rsm_request is not None:
            if not behaviour.keys_are_ids:
                # ejabberd answers ids with RSM with neither: no items, a count
                return "items by id with RSM"
            rsm_request = None  # libervia-pubsub: the ids win, no RSM data
        max_items = None
    if rsm_request is not None and not behaviour.keys_known:
        return "the server's RSM keys are not known yet"
    if rsm_request is request.rsm_request and max_items == request.max_items:
        return request
    return dataclasses.replace(request, rsm_request=rsm_request, max_items=max_items)


def _rsm_data(
    request: ItemsRequest, page: ItemsPage, behaviour: ServerBehaviour
) -> dict[str, Any] | None:
    """The RSM data the node's server puts on this answer, or None."""
    rsm_request = request.rsm_request
    if rsm_request is not None:
        index = page.index
        if (
            behaviour.unclamped_index
            and rsm_request.before is not None
            and page.items
            and page.start == 0
        ):
            # ejabberd: a backward page reaching the oldest item says index = end - max
            index = len(page.items) - rsm_request.max
        return {"first": page.first, "last": page.last, "index": index, "count": page.count}
    if request.max_items is not None and behaviour.max_items_rsm and page.items:
        count = page.node_count or 0
        index = count - request.max_items
        if not behaviour.unclamped_index:
            index = max(0, index)
        return {"first": page.first, "last": page.last, "index": index, "count": count}
    return None


def _unsupported(request: ItemsRequest) -> str | None:
    """Why the cache never answers such a request (None: it may)."""
    if request.sub_id:
        return "a subscription id"
    if request.extra.get("mam"):
        return "a MAM query"
    if request.extra.get("order_by"):
        return "an XEP-0413 order"
    if request.max_items == 0:
        # servers answer every item to max_items=0 (or refuse it): not what a page of 0 is
        return "max_items=0"
    return None
