"""XEP-0060 (Publish-Subscribe) plugin of the reference daemon.

It owns the items request path that the cache hooks into::

    get_items -> return point "XEP-0060_getItems"   (a trigger may answer here)
              -> network request (tx_xmpp.rsm.PubSubClient.items)
              -> point "XEP-0060_gotItems"           (write-back)

and dispatches pubsub events (items, retract, purge, delete, configuration) of every
profile to the handlers registered with :meth:`XEP_0060.add_event_handler`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, reactor
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from tx_xmpp import data_form, pubsub, rsm

from libervia_cache.hostapi import (
    GET_ITEMS_POINT,
    GOT_ITEMS_POINT,
    Client,
    ConfigurationEvent,
    ItemsResult,
    NotConnected,
    PubsubEventHandler,
    answer_metadata,
)

if TYPE_CHECKING:
    from libervia_cache.hostapi import Host

log = logging.getLogger(__name__)

PLUGIN_INFO = {
    "name": "Publish-Subscribe",
    "import_name": "XEP-0060",
    "dependencies": [],
    "recommendations": [],
    "main": "XEP_0060",
    "description": "XEP-0060 items requests with trigger points, subscriptions and events",
}

#: Seconds to wait for a pubsub IQ answer before failing the request.
DEFAULT_IQ_TIMEOUT = 60.0

NS_PUBSUB_EVENT = pubsub.NS_PUBSUB_EVENT


class EventDispatchingPubSubClient(rsm.PubSubClient):
    """RSM-aware pubsub client of one profile that forwards events to the plugin."""

    def __init__(self, plugin: XEP_0060, client: Client | None = None) -> None:
        super().__init__()
        self._plugin = plugin
        self.client = client

    def itemsReceived(self, event: pubsub.ItemsEvent) -> None:
        self._plugin.dispatch_event(self.client, event)

    def deleteReceived(self, event: pubsub.DeleteEvent) -> None:
        self._plugin.dispatch_event(self.client, event)

    def purgeReceived(self, event: pubsub.PurgeEvent) -> None:
        self._plugin.dispatch_event(self.client, event)

    def _onEvent_configuration(
        self, sender: JID, recipient: JID, action: domish.Element, headers: Any
    ) -> None:
        options: dict[str, Any] = {}
        for child in action.elements(data_form.NS_X_DATA, "x"):
            options = data_form.Form.fromElement(child).getValues()
        event = ConfigurationEvent(sender, recipient, action.getAttribute("node", ""), options)
        self._plugin.dispatch_event(self.client, event)


class XEP_0060:
    """Pubsub requests of the daemon: items with cache triggers, subscribe, configuration."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.iq_timeout = DEFAULT_IQ_TIMEOUT
        self._event_handlers: list[PubsubEventHandler] = []

    # --- clients -----------------------------------------------------------------

    def make_client_handler(self) -> EventDispatchingPubSubClient:
        """The pubsub handler the daemon attaches to each profile's XMPP client."""
        return EventDispatchingPubSubClient(self)

    # --- events ------------------------------------------------------------------

    def add_event_handler(self, handler: PubsubEventHandler) -> None:
        """Call ``handler(client, event)`` for every pubsub event of every profile."""
        self._event_handlers.append(handler)

    def remove_event_handler(self, handler: PubsubEventHandler) -> None:
        self._event_handlers.remove(handler)

    def dispatch_event(self, client: Client | None, event: Any) -> None:
        """Hand ``event`` to every handler; a failing handler is logged, not fatal."""
        if client is None:
            return
        for handler in list(self._event_handlers):
            try:
                result = handler(client, event)
            except Exception:
                log.exception("pubsub event handler %r failed", handler)
                continue
            if isinstance(result, defer.Deferred):
                result.addErrback(_log_handler_failure, handler)

    # --- items -------------------------------------------------------------------

    def get_items(
        self,
        client: Client,
        service: JID | None,
        node: str,
        max_items: int | None = None,
        item_ids: Sequence[str] | None = None,
        sub_id: str | None = None,
        rsm_request: rsm.RSMRequest | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> defer.Deferred[ItemsResult]:
        """Retrieve items of a node (XEP-0060 §6.5), through the cache triggers.

        The return point ``XEP-0060_getItems`` is called first with ``(client,
        service, node, max_items, item_ids, sub_id, rsm_request, extra)``: a trigger
        (the cache) may answer in place of the network. Otherwise the request goes to
        the service and the point ``XEP-0060_gotItems`` is called with the same
        arguments followed by ``items`` and ``metadata`` (write-back).

        Returns ``(items, metadata)``: ``items`` are ``<item/>`` elements, oldest
        first as servers send them; ``metadata`` holds ``service``, ``node``,
        ``cached`` (False here), ``rsm`` (``first``, ``last``, ``index``, ``count``
        when the service sent them) and ``complete``.
        """
        return defer.Deferred.fromCoroutine(
            self._get_items(client, service, node, max_items, item_ids, sub_id, rsm_request, extra)
        )

    async def _get_items(
        self,
        client: Client,
        service: JID | None,
        node: str,
        max_items: int | None,
        item_ids: Sequence[str] | None,
        sub_id: str | None,
        rsm_request: rsm.RSMRequest | None,
        extra: Mapping[str, Any] | None,
    ) -> ItemsResult:
        extra = dict(extra or {})
        args = (client, service, node, max_items, item_ids, sub_id, rsm_request, extra)
        keep_going, answer = await self.host.trigger.async_return_point(GET_ITEMS_POINT, *args)
        if not keep_going:
            return answer
        items, metadata = await self.get_items_from_network(*args)
        await self.host.trigger.async_point(GOT_ITEMS_POINT, *args, items, metadata)
        return items, metadata

    def get_items_from_network(
        self,
        client: Client,
        service: JID | None,
        node: str,
        max_items: int | None = None,
        item_ids: Sequence[str] | None = None,
        sub_id: str | None = None,
        rsm_request: rsm.RSMRequest | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> defer.Deferred[ItemsResult]:
        """The network request alone, no trigger called (used by synchronisation).

        Errors of the service come back as ``StanzaError``; no answer within
        ``iq_timeout`` seconds fails with ``defer.TimeoutError``.
        """
        if not_connected := _not_connected(client):
            return defer.fail(not_connected)
        d = client.pubsub_client.items(
            service,
            node,
            maxItems=max_items,
            subscriptionIdentifier=sub_id,
            itemIdentifiers=list(item_ids) if item_ids else None,
            rsm_request=rsm_request,
        )
        d.addTimeout(self.iq_timeout, reactor)

        def build(result: tuple[list[domish.Element], rsm.RSMResponse | None]) -> ItemsResult:
            items, rsm_response = result
            return items, network_metadata(
                client, service, node, items, max_items, rsm_request, rsm_response
            )

        d.addCallback(build)
        return d

    # --- subscriptions and configuration -------------------------------------------

    def subscribe(self, client: Client, service: JID | None, node: str) -> defer.Deferred[Any]:
        """Subscribe the profile's bare JID to ``node`` (XEP-0060 §6.1).

        The service MAY answer ``pending`` or ``unconfigured``: that fails with
        tx_xmpp's ``SubscriptionPending``/``SubscriptionUnconfigured``.
        """
        if not_connected := _not_connected(client):
            return defer.fail(not_connected)
        d = client.pubsub_client.subscribe(service, node, client.jid.userhostJID())
        d.addTimeout(self.iq_timeout, reactor)
        return d

    def get_configuration(
        self, client: Client, service: JID | None, node: str
    ) -> defer.Deferred[dict[str, Any]]:
        """The node configuration form values (XEP-0060 §8.2, owner only)."""
        if not_connected := _not_connected(client):
            return defer.fail(not_connected)
        request = pubsub.PubSubRequest("configureGet")
        request.recipient = service
        request.nodeIdentifier = node
        d = request.send(client.pubsub_client.xmlstream)
        d.addTimeout(self.iq_timeout, reactor)

        def parse(iq: domish.Element) -> dict[str, Any]:
            for configure in iq.pubsub.elements(pubsub.NS_PUBSUB_OWNER, "configure"):
                for form in configure.elements(data_form.NS_X_DATA, "x"):
                    return dict(data_form.Form.fromElement(form).getValues())
            return {}

        d.addCallback(parse)
        return d


def _not_connected(client: Client) -> NotConnected | None:
    """A NotConnected error when the profile's stream is down: requests cannot be sent
    (tx_xmpp would fail on the missing stream), callers treat it as transient."""
    if client.pubsub_client.xmlstream is None:
        return NotConnected(f"profile {client.profile} is not connected to its server")
    return None


def _log_handler_failure(failure: Failure, handler: PubsubEventHandler) -> None:
    log.error("pubsub event handler %r failed: %s", handler, failure.getTraceback())


def network_metadata(
    client: Client,
    service: JID | None,
    node: str,
    items: Sequence[domish.Element],
    max_items: int | None,
    rsm_request: rsm.RSMRequest | None,
    rsm_response: rsm.RSMResponse | None,
) -> dict[str, Any]:
    """Metadata of an answer that came from the network (see
    :func:`libervia_cache.hostapi.answer_metadata`, the rule shared with the cache)."""
    return answer_metadata(
        service or client.jid.userhostJID(),
        node,
        len(items),
        rsm_request,
        rsm_response.toDict() if rsm_response is not None else None,
        cached=False,
    )
