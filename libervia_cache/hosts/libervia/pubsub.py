"""``host.plugins["XEP-0060"]`` on Libervia's XEP-0060 plugin.

Network requests go through the profile's pubsub client, Libervia's ``SatPubSubClient``:
its ``items`` runs Libervia's ``XEP-0060_items`` trigger, where encryption plugins
decrypt items, so the cache stores and serves what Libervia's callers would get from
the network. Subscriptions go through ``XEP_0060.subscribe`` (its ``XEP-0060_subscribe``
trigger runs). Events arrive through Libervia's managed nodes (every node: prefix
``""``) as Wokkel event objects, and are handed to the plugin as the tx_xmpp events it
knows (:data:`REWRAP`). Libervia emits no configuration events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from libervia.backend.core import exceptions
from twisted.internet import defer, reactor
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from tx_xmpp import pubsub, rsm

from libervia_cache.hostapi import (
    Client,
    ItemsResult,
    NotConnected,
    PubsubEventHandler,
    answer_metadata,
)

log = logging.getLogger(__name__)

#: seconds before a network request is given up (Libervia's XEP-0060 uses 30 too)
NETWORK_TIMEOUT = 30.0

#: Libervia's event kind (managed node callback) -> the tx_xmpp event it becomes
REWRAP: dict[str, Callable[[Any], Any]] = {
    "items": lambda event: pubsub.ItemsEvent(
        event.sender, event.recipient, event.nodeIdentifier, event.items, event.headers
    ),
    "purge": lambda event: pubsub.PurgeEvent(
        event.sender, event.recipient, event.nodeIdentifier, event.headers
    ),
    "delete": lambda event: pubsub.DeleteEvent(
        event.sender,
        event.recipient,
        event.nodeIdentifier,
        getattr(event, "redirectURI", None),
        event.headers,
    ),
}


def to_libervia_rsm(request: rsm.RSMRequest | None) -> Any:
    """Libervia's RSM request (sat_tmp's Wokkel) from a tx_xmpp one."""
    if request is None:
        return None
    from wokkel import rsm as wokkel_rsm

    return wokkel_rsm.RSMRequest(
        max_=request.max, after=request.after, before=request.before, index=request.index
    )


class LiberviaPubsub:
    """The host API's XEP-0060 plugin, on Libervia's."""

    def __init__(self, xep_0060: Any) -> None:
        self._xep_0060 = xep_0060
        self._handlers: list[PubsubEventHandler] = []
        self._managed: dict[str, Callable[..., Any]] = {
            f"{kind}_cb": self._event_callback(kind) for kind in REWRAP
        }

    # --- items ---------------------------------------------------------------------

    def libervia_get_items(self, *args: Any) -> defer.Deferred[ItemsResult]:
        """Libervia's own ``get_items`` (its triggers, then the network)."""
        return defer.ensureDeferred(self._xep_0060.get_items(*args))

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
        """Libervia's ``get_items`` (the cache's trigger included), metadata in the host
        API's shape."""
        d = self.libervia_get_items(
            client,
            service,
            node,
            max_items,
            list(item_ids) if item_ids else None,
            sub_id,
            to_libervia_rsm(rsm_request),
            dict(extra or {}),
        )

        def convert(answer: ItemsResult) -> ItemsResult:
            items, metadata = answer
            if metadata.get("cached"):
                return items, {**metadata, "service": metadata["service"].full()}
            args = (client, service, node, max_items, item_ids, sub_id, rsm_request)
            return items, self.host_metadata(client, service, node, items, args, metadata)

        return d.addCallback(convert)

    def host_metadata(
        self,
        client: Client,
        service: JID | None,
        node: str,
        items: Sequence[domish.Element],
        args: Sequence[Any],
        metadata: Mapping[str, Any],
    ) -> dict[str, Any]:
        """The host API's metadata of a network answer Libervia built ``metadata`` for
        (``args``: the request, as callbacks receive it)."""
        rsm_request = args[6]
        return answer_metadata(
            service or client.jid.userhostJID(),
            node,
            len(items),
            rsm_request,
            metadata.get("rsm") or None if rsm_request is not None else None,
            cached=False,
        )

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
        """The request to the service, through the profile's pubsub client (Libervia's
        ``XEP-0060_items`` trigger runs); errors of the service come back as
        ``StanzaError``, no answer within :data:`NETWORK_TIMEOUT` as
        ``defer.TimeoutError``."""
        pubsub_client = client.pubsub_client
        if getattr(pubsub_client, "xmlstream", None) is None:
            return defer.fail(NotConnected(f"profile {client.profile} is not connected"))
        d = defer.ensureDeferred(
            pubsub_client.items(
                service,
                node,
                maxItems=max_items,
                subscriptionIdentifier=sub_id,
                itemIdentifiers=list(item_ids) if item_ids else None,
                rsm_request=to_libervia_rsm(rsm_request),
                extra=dict(extra or {}),
            )
        )
        d.addTimeout(NETWORK_TIMEOUT, reactor)

        def build(result: tuple[list[domish.Element], Any]) -> ItemsResult:
            items, rsm_response = result
            # as Libervia's get_items: RSM data only on answers to RSM requests (a
            # server's RSM data on a max_items answer never reaches Libervia's callers)
            with_rsm = rsm_response is not None and rsm_request is not None
            return items, answer_metadata(
                service or client.jid.userhostJID(),
                node,
                len(items),
                rsm_request,
                rsm_response.toDict() if with_rsm else None,
                cached=False,
            )

        return d.addCallback(build)

    # --- subscriptions and configuration ---------------------------------------------

    def subscribe(self, client: Client, service: JID | None, node: str) -> defer.Deferred[Any]:
        """``XEP_0060.subscribe`` (its trigger runs); Libervia's ``NotFound`` for a
        missing node becomes the service's ``item-not-found`` again."""
        if getattr(client.pubsub_client, "xmlstream", None) is None:
            return defer.fail(NotConnected(f"profile {client.profile} is not connected"))
        d = defer.ensureDeferred(self._xep_0060.subscribe(client, service, node))
        d.addTimeout(NETWORK_TIMEOUT, reactor)

        def not_found(failure: Any) -> Any:
            failure.trap(exceptions.NotFound)
            raise StanzaError("item-not-found", text=str(failure.value) or None)

        return d.addErrback(not_found)

    def get_configuration(
        self, client: Client, service: JID | None, node: str
    ) -> defer.Deferred[dict[str, Any]]:
        """The node configuration form's values (``XEP_0060.getConfiguration``)."""
        if getattr(client.pubsub_client, "xmlstream", None) is None:
            return defer.fail(NotConnected(f"profile {client.profile} is not connected"))
        d = defer.maybeDeferred(self._xep_0060.getConfiguration, client, service, node)
        d.addTimeout(NETWORK_TIMEOUT, reactor)
        return d.addCallback(lambda form: dict(form.getValues()))

    # --- events ----------------------------------------------------------------------

    def add_event_handler(self, handler: PubsubEventHandler) -> None:
        if not self._handlers:
            self._xep_0060.add_managed_node("", **self._managed)
        self._handlers.append(handler)

    def remove_event_handler(self, handler: PubsubEventHandler) -> None:
        self._handlers.remove(handler)
        if not self._handlers:
            self._xep_0060.remove_managed_node("", *self._managed.values())

    def _event_callback(self, kind: str) -> Callable[[Any, Any], defer.Deferred[None]]:
        rewrap = REWRAP[kind]

        def on_event(client: Any, event: Any) -> defer.Deferred[None]:
            # Libervia awaits items callbacks one after the other: the event is applied
            # before the next callback (e.g. XEP-0277's notification) runs, as the stock
            # cache does
            return self.dispatch(client, rewrap(event))

        return on_event

    def dispatch(self, client: Any, event: Any) -> defer.Deferred[None]:
        """Hand ``event`` to every handler; a Deferred fired when all are done (a
        failing handler is logged)."""
        waits: list[defer.Deferred[Any]] = []
        for handler in list(self._handlers):
            try:
                result = handler(client, event)
            except Exception:
                log.exception("pubsub event handler %r failed", handler)
                continue
            if isinstance(result, defer.Deferred):
                waits.append(result.addErrback(_log_failure, handler))
        return defer.gatherResults(waits).addCallback(lambda __: None)


def _log_failure(failure: Any, handler: Any) -> None:
    log.error("pubsub event handler %r failed: %s", handler, failure.getTraceback())
