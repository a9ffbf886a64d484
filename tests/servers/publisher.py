"""An independent pubsub test client: fills and inspects nodes, collects events.

Built on :func:`libervia_cache.backend.clients.connect_client` and tx_xmpp's RSM-aware
``PubSubClient``, so that tests prepare the server's state without going through the
code under test (the cache). Every method returns a Deferred (Twisted coroutines may
``await`` it).

    publisher = await connect_publisher(server, "alice")
    await publisher.create_node(service, node)
    await publisher.publish(service, node, [(f"i{n}", "<entry xmlns='...'/>") ...])
    event = await publisher.wait_for_event(lambda e: e.kind == "purge", timeout=5)
    await publisher.close()
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from tx_xmpp import data_form, disco, pubsub, rsm

from libervia_cache.backend.clients import (
    ReconnectingClient,
    connect_client,
    disconnect_client,
)
from libervia_cache.plugin.xml import parse_element

if TYPE_CHECKING:
    from .base import XMPPServer

#: default concurrency of publish/retract pipelines (requests in flight at once)
PIPELINE_DEPTH = 32
#: nodes are created with this many items allowed (Prosody's default is 20)
NODE_MAX_ITEMS = 100000
DEFAULT_NODE_OPTIONS: dict[str, Any] = {"pubsub#max_items": str(NODE_MAX_ITEMS)}

Payload = domish.Element | str


@dataclasses.dataclass
class Event:
    """A pubsub event received by the publisher.

    ``kind`` is "items", "purge" or "delete". For "items", ``items`` holds the
    ``<item/>`` and ``<retract/>`` elements of the notification.
    """

    kind: str
    sender: JID
    recipient: JID
    node: str
    items: list[domish.Element] = dataclasses.field(default_factory=list)

    @property
    def item_ids(self) -> list[str]:
        """Ids of published (or updated) items in the notification."""
        return [e.getAttribute("id") for e in self.items if e.name == "item"]

    @property
    def retracted_ids(self) -> list[str]:
        """Ids of retracted items in the notification."""
        return [e.getAttribute("id") for e in self.items if e.name == "retract"]


def as_element(payload: Payload) -> domish.Element:
    """An item payload as an element (XML strings are parsed)."""
    return parse_element(payload) if isinstance(payload, str) else payload


class Publisher(rsm.PubSubClient):
    """Pubsub client handler with bulk helpers and an event collector."""

    def __init__(self) -> None:
        super().__init__()
        self.client: ReconnectingClient | None = None
        self.events: list[Event] = []
        self._waiters: list[tuple[Callable[[Event], bool], defer.Deferred[Event]]] = []

    def connectionInitialized(self) -> None:
        super().connectionInitialized()
        # Available presence: servers deliver notifications sent to the bare JID (a
        # bare-JID subscription) only to resources that are available.
        self.send(domish.Element((None, "presence")))

    @property
    def jid(self) -> JID:
        """The full JID the publisher is bound to."""
        assert self.client is not None, "not connected"
        return self.client.jid

    # --- events ----------------------------------------------------------------

    def _record(self, event: Event) -> None:
        self.events.append(event)
        for waiter in list(self._waiters):
            predicate, d = waiter
            if predicate(event):
                self._waiters.remove(waiter)
                d.callback(event)

    def itemsReceived(self, event: pubsub.ItemsEvent) -> None:
        self._record(
            Event("items", event.sender, event.recipient, event.nodeIdentifier, event.items)
        )

    def purgeReceived(self, event: pubsub.PurgeEvent) -> None:
        self._record(Event("purge", event.sender, event.recipient, event.nodeIdentifier))

    def deleteReceived(self, event: pubsub.DeleteEvent) -> None:
        self._record(Event("delete", event.sender, event.recipient, event.nodeIdentifier))

    def clear_events(self) -> None:
        """Forget the events received so far."""
        self.events.clear()

    def wait_for_event(
        self, predicate: Callable[[Event], bool], timeout: float = 10.0
    ) -> defer.Deferred[Event]:
        """Fire with the first event (already received or coming) matching ``predicate``.

        Fails with ``defer.TimeoutError`` if none comes within ``timeout`` seconds.
        """
        for event in self.events:
            if predicate(event):
                return defer.succeed(event)
        d: defer.Deferred[Event] = defer.Deferred()
        waiter = (predicate, d)
        self._waiters.append(waiter)

        def forget(result: Any) -> Any:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            return result

        from twisted.internet import reactor

        d.addTimeout(timeout, reactor)
        d.addBoth(forget)
        return d

    # --- node management -------------------------------------------------------

    def create_node(
        self, service: JID | str, node: str, options: dict[str, Any] | None = None
    ) -> defer.Deferred[str]:
        """Create ``node``; options are merged over :data:`DEFAULT_NODE_OPTIONS`.

        Fires with the node name (a server MAY assign another one).
        """
        return self.createNode(
            JID(str(service)), node, options={**DEFAULT_NODE_OPTIONS, **(options or {})}
        )

    def delete_node(self, service: JID | str, node: str) -> defer.Deferred[Any]:
        """Delete ``node``."""
        return self.deleteNode(JID(str(service)), node)

    def purge(self, service: JID | str, node: str) -> defer.Deferred[Any]:
        """Remove every item of ``node`` (owner ``purge``)."""
        request = pubsub.PubSubRequest("purge")
        request.recipient = JID(str(service))
        request.nodeIdentifier = node
        return request.send(self.xmlstream)

    def configure(
        self, service: JID | str, node: str, options: dict[str, Any]
    ) -> defer.Deferred[Any]:
        """Change the configuration of ``node`` (``pubsub#...`` fields)."""
        request = pubsub.PubSubRequest("configureSet")
        request.recipient = JID(str(service))
        request.nodeIdentifier = node
        form = data_form.Form(formType="submit", formNamespace=pubsub.NS_PUBSUB_NODE_CONFIG)
        form.makeFields(options)
        request.options = form
        return request.send(self.xmlstream)

    async def get_configuration(self, service: JID | str, node: str) -> dict[str, Any]:
        """The configuration form of ``node`` as a dict of field values."""
        request = pubsub.PubSubRequest("configureGet")
        request.recipient = JID(str(service))
        request.nodeIdentifier = node
        iq = await request.send(self.xmlstream)
        form = data_form.findForm(iq.pubsub.configure, pubsub.NS_PUBSUB_NODE_CONFIG)
        return {} if form is None else dict(form.getValues())

    def subscribe_node(self, service: JID | str, node: str) -> defer.Deferred[Any]:
        """Subscribe the publisher's bare JID to ``node``."""
        return self.subscribe(JID(str(service)), node, self.jid.userhostJID())

    async def disco_item_ids(self, service: JID | str, node: str) -> list[str]:
        """Item ids listed by disco#items on ``node`` (Prosody lists them, newest first)."""
        items = await disco.DiscoClientProtocol.requestItems(self, JID(str(service)), node)
        return [str(item.name) for item in items if item.name]

    # --- items -----------------------------------------------------------------

    async def publish(
        self,
        service: JID | str,
        node: str,
        items: Iterable[tuple[str | None, Payload]],
        depth: int = PIPELINE_DEPTH,
    ) -> list[str]:
        """Publish ``(id, payload)`` items, one per request, ``depth`` requests in flight.

        Items are sent in the given order; with ``depth > 1`` the server may commit
        neighbours in another order (use ``depth=1`` when the order matters).
        Returns the item ids (those assigned by the server for ``None`` ids).
        """
        service_jid = JID(str(service))
        elements = [pubsub.Item(id=item_id, payload=as_element(p)) for item_id, p in items]

        async def publish_one(item: pubsub.Item) -> str:
            iq = await super(Publisher, self).publish(service_jid, node, [item])
            if item.getAttribute("id"):
                return str(item["id"])
            published = iq.pubsub.publish if iq.pubsub else None
            return str(published.item["id"]) if published and published.item else ""

        return await self._pipeline([publish_one(item) for item in elements], depth)

    async def retract(
        self,
        service: JID | str,
        node: str,
        ids: Sequence[str],
        notify: bool = True,
        depth: int = PIPELINE_DEPTH,
    ) -> None:
        """Retract items, one per request (Prosody accepts only one), pipelined."""
        service_jid = JID(str(service))

        async def retract_one(item_id: str) -> None:
            await self.retractItems(service_jid, node, [item_id], notify=notify)

        await self._pipeline([retract_one(item_id) for item_id in ids], depth)

    def get_items(
        self,
        service: JID | str,
        node: str,
        max_items: int | None = None,
        item_ids: Sequence[str] | None = None,
        rsm_request: rsm.RSMRequest | None = None,
        order_by: Sequence[str] | None = None,
    ) -> defer.Deferred[tuple[list[domish.Element], rsm.RSMResponse | None]]:
        """Items of ``node``: fires with ``(items, RSMResponse or None)``."""
        return self.items(
            JID(str(service)),
            node,
            maxItems=max_items,
            itemIdentifiers=list(item_ids) if item_ids is not None else None,
            orderBy=list(order_by) if order_by else None,
            rsm_request=rsm_request,
        )

    async def get_all_items(
        self, service: JID | str, node: str, page: int = 100
    ) -> list[domish.Element]:
        """Every item of ``node``, paging with RSM ``after`` (or one request without RSM)."""
        items: list[domish.Element] = []
        after: str | None = None
        while True:
            page_items, response = await self.get_items(
                service, node, rsm_request=rsm.RSMRequest(max_=page, after=after)
            )
            items.extend(page_items)
            if response is None or not page_items or response.last is None:
                return items
            if response.count is not None and len(items) >= response.count:
                return items
            after = response.last

    @staticmethod
    async def _pipeline(coros: list[Any], depth: int) -> list[Any]:
        """Await coroutines with at most ``depth`` running; results in input order."""
        semaphore = defer.DeferredSemaphore(max(1, depth))
        try:
            return list(
                await defer.gatherResults(
                    [semaphore.run(defer.Deferred.fromCoroutine, coro) for coro in coros],
                    consumeErrors=True,
                )
            )
        except defer.FirstError as e:
            e.subFailure.raiseException()
            raise

    async def close(self) -> None:
        """Disconnect for good."""
        if self.client is not None:
            await disconnect_client(self.client)


async def connect_publisher(
    server: XMPPServer, user: str = "alice", resource: str = "publisher"
) -> Publisher:
    """A :class:`Publisher` connected to ``server`` as ``user`` (TLS, server's CA)."""
    publisher = Publisher()
    publisher.client = await connect_client(
        JID(f"{server.jid(user)}/{resource}"),
        server.accounts[user],
        server.host,
        server.c2s_port,
        tls="required",
        tls_ca=str(server.ca_file),
        handlers=[publisher],
    )
    return publisher
