"""Pubsub events keep the nodes the cache tracks fresh: a table from event to handler.

Events of one node are applied one at a time, in arrival order, in the node's queue
(the queue in which a sync also begins, see :mod:`.sync`); nodes do not wait for each
other, so a slow payload fetch holds only its own node. An event the cache cannot apply
(the store fails, a notified item's payload cannot be fetched, an item cannot be
stored) makes its node *suspect*: it is not served again until a new sync replaced it,
and that sync is started at once (:mod:`.holds`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from tx_xmpp import pubsub

from libervia_cache.errors import describe
from libervia_cache.hostapi import XEP0060, Client, ConfigurationEvent, TriggerManager
from libervia_cache.plugin.analysis import AnalyserRegistry
from libervia_cache.plugin.behaviour import ServerBehaviour, server_max_items
from libervia_cache.plugin.counters import Counters
from libervia_cache.plugin.freshness import Freshness
from libervia_cache.plugin.holds import Holds
from libervia_cache.plugin.items import UnstorableItem, parse_items
from libervia_cache.plugin.serial import KeyedQueues
from libervia_cache.plugin.settings import Settings
from libervia_cache.plugin.store_access import STORE_ERRORS, StoreAccess
from libervia_cache.plugin.syncs import SyncManager
from libervia_cache.storage import NodeGone, NodeInfo, SyncState

log = logging.getLogger(__name__)

#: Trigger point called (synchronously) after each event of a tracked node was handled
#: (applied, or its node made suspect), with ``(client, event)``: lets tests and other
#: plugins wait for the cache to have taken an event into account.
EVENT_APPLIED_POINT = "PUBSUB_CACHE_eventApplied"

#: states of the nodes whose items events update
SYNCED = (SyncState.COMPLETED, SyncState.IN_PROGRESS)

Handler = Callable[[Client, NodeInfo, Any], Awaitable[None]]


class EventApplier:
    """``host.plugins["XEP-0060"]`` event handler of the cache."""

    def __init__(
        self,
        *,
        trigger: TriggerManager,
        store_access: StoreAccess,
        pubsub_plugin: XEP0060,
        analysers: AnalyserRegistry,
        syncs: SyncManager,
        holds: Holds,
        queues: KeyedQueues,
        settings: Settings,
        counters: Counters,
        freshness: Freshness,
    ) -> None:
        self._freshness = freshness
        self._trigger = trigger
        self._store_access = store_access
        self._pubsub = pubsub_plugin
        self._analysers = analysers
        self._syncs = syncs
        self._holds = holds
        self._queues = queues
        self._settings = settings
        self._counters = counters
        #: event type -> handler
        self._handlers: dict[type, Handler] = {
            pubsub.ItemsEvent: self._items,
            pubsub.PurgeEvent: self._purge,
            pubsub.DeleteEvent: self._delete,
            ConfigurationEvent: self._configuration,
        }

    def __call__(self, client: Client, event: Any) -> defer.Deferred[None]:
        handler = self._handlers.get(type(event))
        if handler is None:
            handler = next(
                (h for kind, h in self._handlers.items() if isinstance(event, kind)), None
            )
        if handler is None or self._store_access.store is None:
            # without a store the event is lost: its reopening checks every synced node
            return defer.succeed(None)
        key = (client.profile, event.sender.full(), event.nodeIdentifier)
        self._freshness.event_received(key)
        return self._queues.run(key, lambda: self._apply(client, event, handler))

    async def _apply(self, client: Client, event: Any, handler: Handler) -> None:
        store = self._store_access.store
        if store is None:
            return
        node_info: NodeInfo | None = None
        try:
            # looked up by the event's sender: events whose sender is not the node's
            # service are ignored
            node_info = await store.get_node(
                client.profile, event.sender.full(), event.nodeIdentifier
            )
            if node_info is None:
                return
            await handler(client, node_info, event)
        except NodeGone:
            return  # reset or deleted meanwhile: nothing left to update
        except STORE_ERRORS as error:
            self._store_access.failed(error, f"applying an event of node {event.nodeIdentifier}")
            if node_info is None:
                return
            self.suspect(client, node_info, f"an event could not be stored ({describe(error)})")
        self._counters.events_applied += 1
        self._trigger.point(EVENT_APPLIED_POINT, client, event)

    def suspect(self, client: Client, node_info: NodeInfo, why: str) -> None:
        """The node may now differ from the server: hold it, and sync it again."""
        if node_info.sync_state not in SYNCED:
            return
        log.warning(
            "node %s on %s may differ from the server: %s; synchronising it again",
            node_info.name,
            node_info.service,
            why,
        )
        self._holds.suspect(node_info.id, why)
        self._syncs.restart(client, node_info)

    # --- handlers: (client, node, event) ----------------------------------------------

    async def _items(self, client: Client, node_info: NodeInfo, event: pubsub.ItemsEvent) -> None:
        if node_info.sync_state not in SYNCED:
            return
        store = self._store_access.require()
        retracted = [
            e.getAttribute("id")
            for e in event.items
            if e.name == "retract" and e.getAttribute("id")
        ]
        published = [e for e in event.items if e.name == "item"]
        running = self._syncs.running(node_info.key)
        if running is not None:
            # before any await: a page fetched from now on may hold an older version
            running.note_event(
                [i.getAttribute("id") for i in published if i.getAttribute("id")], retracted
            )
        if published:
            service = JID(node_info.service)
            published, missing = await self._with_payloads(
                client, service, node_info.name, published
            )
            if missing:
                self.suspect(
                    client,
                    node_info,
                    f"the payload of notified item(s) {', '.join(missing)} could not be fetched",
                )
                return
            try:
                parsed = await parse_items(
                    self._analysers.get(node_info.analyser),
                    client,
                    service,
                    node_info.name,
                    published,
                )
            except UnstorableItem as error:
                self.suspect(client, node_info, str(error))
                return
            completed = node_info.sync_state is SyncState.COMPLETED
            behaviour = ServerBehaviour.of(node_info.extra)
            republished = await store.held_item_ids(node_info.id, [row[0] for row in parsed])
            newest_before = await self._newest(node_info) if republished else None
            await store.cache_items(
                node_info.id,
                parsed,
                where="newest",
                limit=self._settings.cache_limit if completed else None,
                # where the server keeps a republished item: in its place, or moved
                keep_place=not behaviour.republish_moves,
                # a full node on its server drops its oldest items
                server_max=server_max_items(node_info.extra) if completed else None,
            )
            if completed and len(republished) < len(parsed):
                # new items: the server may have dropped old ones without a word
                self._freshness.after_publication(client, node_info)
            if completed and republished and not behaviour.republish_checked:
                await self._check_republish(
                    client, node_info, behaviour, republished, newest_before
                )
        if retracted:
            await store.delete_items(node_info.id, retracted)

    async def _newest(self, node_info: NodeInfo) -> str | None:
        page = await self._store_access.require().get_items(node_info.id, max_items=1)
        return page.item_ids[-1] if page.item_ids else None

    async def _check_republish(
        self,
        client: Client,
        node_info: NodeInfo,
        behaviour: ServerBehaviour,
        republished: set[str],
        newest_before: str | None,
    ) -> None:
        """The node's first republication: ask the server where it put the item (one
        request: its newest item) and follow it. A wrong guess resynchronises the node;
        until the answer, the node is held."""
        candidates = republished - {newest_before}
        if not candidates:
            return  # the newest item again: both ways agree, nothing learnt
        self._holds.checking(node_info.id, "where the server puts republished items")
        try:
            items, __ = await self._pubsub.get_items_from_network(
                client, JID(node_info.service), node_info.name, max_items=1
            )
        except Exception as error:
            self._holds.checked_with_server(node_info.id)
            self.suspect(client, node_info, f"the republication check failed: {describe(error)}")
            return
        newest = items[-1].getAttribute("id") if items else None
        if newest in candidates:
            measured = behaviour.replace(republish_moves=True, republish_checked=True)
        elif newest == newest_before:
            measured = behaviour.replace(republish_moves=False, republish_checked=True)
        else:  # something else came meanwhile: learn nothing, trust nothing
            self._holds.checked_with_server(node_info.id)
            self.suspect(client, node_info, "the republication check was inconclusive")
            return
        store = self._store_access.require()
        await store.update_node(
            node_info.id, extra={**node_info.extra, "server": measured.to_json()}
        )
        self._holds.checked_with_server(node_info.id)
        if measured.republish_moves != behaviour.republish_moves:
            self.suspect(client, node_info, "the server orders republished items otherwise")

    async def _purge(self, client: Client, node_info: NodeInfo, event: Any) -> None:
        if node_info.sync_state not in SYNCED:
            return
        await self._store_access.require().purge_node_items(node_info.id)
        if self._syncs.running(node_info.key) is not None:
            # pages fetched before the purge hold items that are gone
            self._syncs.restart(client, node_info)

    async def _delete(self, client: Client, node_info: NodeInfo, event: Any) -> None:
        # whatever its state: a node created again under this name is a new node
        self._syncs.cancel(node_info.key)
        await self._store_access.require().delete_node(node_info.id)
        log.info("node %s on %s was deleted: forgotten", node_info.name, node_info.service)

    async def _configuration(
        self, client: Client, node_info: NodeInfo, event: ConfigurationEvent
    ) -> None:
        if node_info.sync_state not in SYNCED or "pubsub#max_items" not in event.options:
            return
        extra = {**node_info.extra, "max_items": str(event.options["pubsub#max_items"])}
        await self._store_access.require().update_node(node_info.id, extra=extra)
        log.info(
            "configuration of node %s on %s changed: synchronising it again",
            node_info.name,
            node_info.service,
        )
        self._syncs.restart(client, dataclasses.replace(node_info, extra=extra))

    async def _with_payloads(
        self, client: Client, service: JID, node: str, items: list[domish.Element]
    ) -> tuple[list[domish.Element], list[str]]:
        """Items with their payloads (notifications may come without: a node option),
        and the ids of those whose payload could not be fetched."""
        missing = [i.getAttribute("id") for i in items if not list(i.elements())]
        if not missing:
            return items, []
        try:
            fetched, __ = await self._pubsub.get_items_from_network(
                client, service, node, item_ids=missing
            )
        except Exception as error:
            log.warning(
                "could not fetch the payload of notified items %s of node %s: %s",
                missing,
                node,
                describe(error),
            )
            return items, missing
        # an item the service answers without payload has none: it is the truth
        by_id = {i.getAttribute("id"): i for i in fetched}
        return [by_id.get(i.getAttribute("id"), i) for i in items], [
            item_id for item_id in missing if item_id not in by_id
        ]
