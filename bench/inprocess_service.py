"""An in-process Tx-XMPP pubsub service speaking real XMPP over a loopback TCP stream.

For the figures where a real server makes the setup impractical (P5: syncing a
100k-item node through ejabberd would take tens of minutes: its page cost grows with
node size). The service is tx_xmpp's RSM-aware ``PubSubService`` with a resource whose
nodes are *generated*: item ``n`` of a node of size ``N`` is built on request from
``n``, so the service holds nothing in memory and the RSS of the process measures the
daemon side only. It answers RSM ``before``/``after``/``index``/``max`` with
``first``/``last``/``index``/``count`` (item ids as keys), ``subscribe`` and nothing
else (the cache's node analysis tolerates a missing configuration).

Streams are opened without SASL or TLS (both ends are in this process); stanzas are
serialised, sent over a real socket and parsed again on both sides, like with a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.words.protocols.jabber import error, xmlstream
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from tx_xmpp import pubsub, rsm
from tx_xmpp.subprotocols import StreamManager

from libervia_cache.backend.xep_0060 import EventDispatchingPubSubClient

#: the reactor, untyped (its zope interfaces confuse mypy)
reactor: Any = _reactor

SERVICE = "pubsub.localhost"
ATOM = "http://www.w3.org/2005/Atom"


def generated_payload(n: int) -> str:
    """The Atom entry of item ``n`` (about 600 bytes, like a short blog post)."""
    words = " ".join(f"w{(n * 7 + k * 13) % 2000:04d}" for k in range(40))
    return (
        f"<entry xmlns='{ATOM}'><id>urn:uuid:item-{n}</id><title>post {n}</title>"
        f"<content>{words}</content><published>2026-01-01T00:00:00Z</published>"
        f"<updated>2026-01-01T00:00:00Z</updated>"
        f"<category term='tag{n % 50}'/><category term='tag{n % 7}'/></entry>"
    )


class GeneratedNodes(pubsub.PubSubResource):
    """Nodes of generated items: ``{node name: number of items}``."""

    features = ["retrieve-items", "subscribe", "rsm"]

    def __init__(self, nodes: dict[str, int]) -> None:
        self.nodes = nodes

    def subscribe(self, request: Any) -> defer.Deferred[pubsub.Subscription]:
        return defer.succeed(
            pubsub.Subscription(request.nodeIdentifier, request.subscriber, "subscribed")
        )

    def items(self, request: Any) -> defer.Deferred[Any]:
        size = self.nodes.get(request.nodeIdentifier)
        if size is None:
            return defer.fail(error.StanzaError("item-not-found"))
        if request.itemIdentifiers:  # items by id (the sync's last probe), node order
            wanted = {_index_of(i) for i in request.itemIdentifiers if _is_item_id(i, size)}
            return defer.succeed(
                [element for n in sorted(wanted) for element in self._elements(n, n + 1)]
            )
        page: rsm.RSMRequest | None = request.rsm
        if page is None:
            start, end = (0, size) if not request.maxItems else (size - request.maxItems, size)
            return defer.succeed(self._elements(max(0, start), end))
        if page.before is not None:
            end = size if page.before == "" else _index_of(page.before)
            start = max(0, end - page.max)
        elif page.after is not None:
            start = _index_of(page.after) + 1
            end = min(size, start + page.max)
        else:
            start = min(page.index or 0, size)
            end = min(size, start + page.max)
        elements = self._elements(start, end)
        response = rsm.RSMResponse(
            first=f"item-{start}" if end > start else None,
            last=f"item-{end - 1}" if end > start else None,
            index=start if end > start else None,
            count=size,
        )
        return defer.succeed((elements, response))

    @staticmethod
    def _elements(start: int, end: int) -> list[domish.Element]:
        elements = []
        for n in range(start, end):
            item = domish.Element((pubsub.NS_PUBSUB, "item"))
            item["id"] = f"item-{n}"
            item.addRawXml(generated_payload(n))
            elements.append(item)
        return elements


def _index_of(item_id: str) -> int:
    return int(item_id.rsplit("-", 1)[1])


def _is_item_id(item_id: str, size: int) -> bool:
    prefix, __, number = item_id.rpartition("-")
    return prefix == "item" and number.isdigit() and int(number) < size


class _ServerAuthenticator(xmlstream.ListenAuthenticator):
    """Accept the stream at once: no SASL, no TLS, no features to negotiate."""

    namespace = "jabber:client"

    def streamStarted(self, rootElement: domish.Element) -> None:
        super().streamStarted(rootElement)
        xs: Any = self.xmlstream
        xs.version = (0, 0)
        xs.sendHeader()
        xs.dispatch(xs, xmlstream.STREAM_AUTHD_EVENT)


class _ClientAuthenticator(xmlstream.ConnectAuthenticator):
    """The client end: a pre-1.0 stream (no features), authenticated at once."""

    namespace = "jabber:client"

    def associateWithStream(self, xs: xmlstream.XmlStream) -> None:
        super().associateWithStream(xs)
        xs.version = (0, 0)
        xs.initializers = []


class _Service(rsm.PubSubService):
    """The service end; stamps the client's JID on requests (a server would)."""

    def __init__(self, resource: GeneratedNodes, client_jid: JID) -> None:
        super().__init__(resource)
        self.client_jid = client_jid

    def connectionInitialized(self) -> None:
        self.xmlstream.addObserver("/iq", self._stamp, priority=100)
        super().connectionInitialized()

    def _stamp(self, iq: domish.Element) -> None:
        iq["from"] = self.client_jid.full()
        iq["to"] = iq.getAttribute("to", SERVICE)


@dataclass
class LoopbackClient:
    """A ``hostapi.Client`` connected to the in-process service."""

    profile: str
    pubsub_client: EventDispatchingPubSubClient
    _jid: JID
    port: Any
    manager: StreamManager

    @property
    def jid(self) -> JID:
        return self._jid

    async def close(self) -> None:
        self.manager.factory.stopTrying()
        if self.manager.xmlstream is not None:
            self.manager.xmlstream.transport.loseConnection()
        await defer.maybeDeferred(self.port.stopListening)


async def connect_loopback(
    pubsub_handler: EventDispatchingPubSubClient,
    nodes: dict[str, int],
    profile: str = "bob",
    jid: str = "bob@localhost/bench",
) -> LoopbackClient:
    """Start the service on a free loopback port and connect ``pubsub_handler`` to it."""
    client_jid = JID(jid)
    resource = GeneratedNodes(nodes)

    server_factory = xmlstream.XmlStreamServerFactory(_ServerAuthenticator)
    server_manager = StreamManager(server_factory)  # one connection: one manager
    _Service(resource, client_jid).setHandlerParent(server_manager)
    port = reactor.listenTCP(0, server_factory, interface="127.0.0.1")

    client_factory = xmlstream.XmlStreamFactory(_ClientAuthenticator(SERVICE))
    client_factory.maxRetries = 0  # type: ignore[assignment]
    manager = StreamManager(client_factory)
    pubsub_handler.setHandlerParent(manager)
    ready: defer.Deferred[None] = defer.Deferred()
    client_factory.addBootstrap(xmlstream.STREAM_AUTHD_EVENT, lambda xs: ready.callback(None))
    reactor.connectTCP("127.0.0.1", port.getHost().port, client_factory)
    await ready
    client = LoopbackClient(profile, pubsub_handler, client_jid, port, manager)
    pubsub_handler.client = client
    return client
