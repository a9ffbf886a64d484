"""One fake host for the plugin's unit tests, checked by mypy against the host API.

- :class:`FakeHost` (``hostapi.Host``): a real trigger manager, a dictionary bridge,
  a configuration of plugin defaults, fake profiles;
- :class:`FakeXEP0060` (``hostapi.XEP0060``): the items request path with the trigger
  points, answered by :class:`FakeService`, an in-memory pubsub service that pages with
  RSM keyed by item ids (as libervia-pubsub does; ``rsm=False`` ignores RSM, as Prosody
  0.12 does) and sends events of a node to those subscribed to it (with or without
  payloads). Requests of a kind can be held (:meth:`FakeService.hold`: after letting
  some through, answered on arrival or on release) until the test lets them go, or
  made to fail; a held request tells its arrival on the next reactor turn, once its
  requester waits on it.

Integration tests use the real daemon against real servers: these fakes are for the
plugin's logic (read path, single flight, events and purges during a sync, checks after
a reconnection), where a test must hold the world still at a precise point.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from tx_xmpp import pubsub, rsm

from libervia_cache.backend.trigger import TriggerManager
from libervia_cache.hostapi import (
    GET_ITEMS_POINT,
    GOT_ITEMS_POINT,
    XEP0060,
    Bridge,
    Client,
    Config,
    ConfigKey,
    Host,
    ItemsResult,
    PubsubEventHandler,
    answer_metadata,
    as_deferred,
)
from libervia_cache.hostapi import (
    TriggerManager as TriggerManagerProtocol,
)

if TYPE_CHECKING:
    from libervia_cache.plugin import PubsubCache

SERVICE = JID("pubsub.example.org")
ATOM = "http://www.w3.org/2005/Atom"


class FakeConfig:
    """Plugin-declared keys with their defaults, overridden by ``values``."""

    def __init__(
        self, declared: Mapping[str, Sequence[ConfigKey]], values: Mapping[str, Any]
    ) -> None:
        self._values = {
            (section, key.name): key.default for section, keys in declared.items() for key in keys
        }
        for name, value in values.items():
            section, _, key = name.partition(".")
            if (section, key) not in self._values:
                raise KeyError(f"unknown configuration key {name}")
            self._values[(section, key)] = value

    def get(self, section: str, key: str) -> Any:
        return self._values[(section, key)]


class FakeBridge:
    """Bridge methods in a dictionary; :meth:`call` runs one as the host would."""

    def __init__(self) -> None:
        self.methods: dict[str, Callable[..., Any]] = {}

    def register_method(self, name: str, method: Callable[..., Any]) -> None:
        if name in self.methods:
            raise ValueError(f"{name} is already registered")
        self.methods[name] = method

    def unregister_method(self, name: str) -> None:
        del self.methods[name]

    async def call(self, name: str, **params: Any) -> Any:
        return await as_deferred(self.methods[name], **params)


@dataclass
class FakeClient:
    """A profile, connected as ``jid`` (``hostapi.Client``)."""

    profile: str
    bare: str
    pubsub_client: Any = None

    @property
    def jid(self) -> JID:
        return JID(f"{self.bare}/fake")


class FakeHost:
    """``hostapi.Host`` for unit tests."""

    def __init__(
        self,
        service: FakeService,
        declared_config: Mapping[str, Sequence[ConfigKey]],
        config: Mapping[str, Any] | None = None,
        profiles: Sequence[str] = ("bob",),
        bridge: Any = None,
    ) -> None:
        self.trigger: TriggerManagerProtocol = TriggerManager()
        self.config: Config = FakeConfig(declared_config, config or {})
        self.bridge: Bridge = bridge if bridge is not None else FakeBridge()
        self.clients: Mapping[str, Client] = {
            name: FakeClient(name, f"{name}@example.org") for name in profiles
        }
        self.xep_0060 = FakeXEP0060(self, service)
        self._plugins: dict[str, Any] = {"XEP-0060": self.xep_0060}
        self.plugins: Mapping[str, Any] = self._plugins

    def add_plugin(self, import_name: str, plugin: Any) -> None:
        """Make ``plugin`` available as ``host.plugins[import_name]``."""
        self._plugins[import_name] = plugin

    @property
    def default_profile(self) -> str:
        return next(iter(self.clients))

    def get_client(self, profile: str) -> Client:
        return self.clients[profile]


def next_turn(deferred: defer.Deferred[None]) -> None:
    """Fire ``deferred`` on the reactor's next turn, once the current call returned."""
    from twisted.internet import reactor

    clock: Any = reactor
    clock.callLater(0, deferred.callback, None)


class Held:
    """Requests of one kind held by :meth:`FakeService.hold` until :meth:`release`.

    Each held request waits on its own Deferred, so that cancelling one (a sync being
    cancelled) leaves the others held.
    """

    def __init__(self, let_through: int = 0, answer_first: bool = False) -> None:
        #: requests still let through before holding begins
        self.let_through = let_through
        #: the answer is computed when the request arrives and delivered on release:
        #: what happens meanwhile (events) is newer than the answer
        self.answer_first = answer_first
        #: requests held so far
        self.count = 0
        self.released = False
        self._waiting: list[defer.Deferred[None]] = []
        self._arrivals: list[tuple[int, defer.Deferred[None]]] = []
        #: fired when the first request is held
        self.reached = self.arrived(1)

    def arrived(self, count: int) -> defer.Deferred[None]:
        """A Deferred fired once ``count`` requests have been held (on the reactor turn
        after the last one arrived)."""
        arrival: defer.Deferred[None] = defer.Deferred()
        if self.count >= count:
            arrival.callback(None)
        else:
            self._arrivals.append((count, arrival))
        return arrival

    def release(self) -> None:
        """Let every held request go on, and those to come."""
        self.released = True
        waiting, self._waiting = self._waiting, []
        for gate in waiting:
            if not gate.called:
                gate.callback(None)

    def passage(self) -> defer.Deferred[None] | None:
        """The gate a new request waits on (None: it goes on at once)."""
        if self.released:
            return None
        if self.let_through > 0:
            self.let_through -= 1
            return None
        gate: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(gate)
        self.count += 1
        for arrival in [a for a in self._arrivals if a[0] <= self.count]:
            self._arrivals.remove(arrival)
            # on the next turn, as a network would tell: the requester has its Deferred
            # and waits on it, not in the middle of making the request
            next_turn(arrival[1])
        return gate


class FakeService:
    """An in-memory pubsub service: nodes of ``(item id, payload XML)``, oldest first.

    Where servers differ it answers as libervia-pubsub does (RSM keys are item ids, RSM
    wins over ``max_items``, a backward page reaching the oldest item has index 0, a
    ``max_items`` answer carries no RSM data, a republished item moves to the newest
    end), except that items asked by id come in the node's order (as ejabberd sends
    them), unknown ids left out. With ``rsm=False`` it ignores RSM, as Prosody 0.12 does.
    """

    def __init__(self, jid: JID = SERVICE, rsm: bool = True) -> None:
        self.jid = jid
        self.rsm = rsm
        self.nodes: dict[str, list[tuple[str, str]]] = {}
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self._holds: dict[str, Held] = {}
        self.failures: dict[str, BaseException] = {}
        #: node -> who gets its events
        self._subscribers: dict[str, list[tuple[FakeXEP0060, Client]]] = {}

    # --- the test's side ---------------------------------------------------------------

    def hold(self, kind: str, *, let_through: int = 0, answer_first: bool = False) -> Held:
        """Hold every request of ``kind`` (``items``; ``payload``: items asked by id;
        ``subscribe``) after the first ``let_through``, until the returned handle is
        released. With ``answer_first``, a held request's answer is the node as it was
        when the request arrived (a page in flight while events are sent)."""
        held = self._holds[kind] = Held(let_through, answer_first)
        return held

    def fail(self, kind: str, error: BaseException) -> None:
        """Make every request of ``kind`` fail with ``error`` (until :meth:`heal`)."""
        self.failures[kind] = error

    def heal(self, kind: str) -> None:
        """Requests of ``kind`` succeed again."""
        self.failures.pop(kind, None)

    def create(self, node: str) -> None:
        """Create an empty node."""
        self.nodes.setdefault(node, [])

    def publish(
        self, node: str, *items: tuple[str, str], notify: bool = True, payloads: bool = True
    ) -> None:
        """Publish (or republish: the item moves to the newest end) and notify, with the
        payloads unless ``payloads`` is False (the node option ``deliver_payloads``)."""
        entries = self.nodes.setdefault(node, [])
        for item_id, payload in items:
            entries[:] = [e for e in entries if e[0] != item_id]
            entries.append((item_id, payload))
        if notify:
            elements = [
                self._item(item_id, payload if payloads else "", pubsub.NS_PUBSUB_EVENT)
                for item_id, payload in items
            ]
            self._notify(
                node,
                lambda sender, recipient: pubsub.ItemsEvent(sender, recipient, node, elements, {}),
            )

    def retract(self, node: str, *item_ids: str, notify: bool = True) -> None:
        self.nodes[node] = [e for e in self.nodes.get(node, []) if e[0] not in item_ids]
        if notify:
            elements = []
            for item_id in item_ids:
                element = domish.Element((pubsub.NS_PUBSUB_EVENT, "retract"))
                element["id"] = item_id
                elements.append(element)
            self._notify(
                node,
                lambda sender, recipient: pubsub.ItemsEvent(sender, recipient, node, elements, {}),
            )

    def purge(self, node: str) -> None:
        self.nodes[node] = []
        self._notify(node, lambda sender, recipient: pubsub.PurgeEvent(sender, recipient, node, {}))

    def delete(self, node: str) -> None:
        del self.nodes[node]
        self._notify(
            node, lambda sender, recipient: pubsub.DeleteEvent(sender, recipient, node, {})
        )
        self._subscribers.pop(node, None)

    def _notify(self, node: str, build: Callable[[JID, JID], Any]) -> None:
        for plugin, client in list(self._subscribers.get(node, ())):
            plugin.dispatch_event(client, build(self.jid, client.jid))

    # --- the plugin's side -------------------------------------------------------------

    @staticmethod
    def _item(item_id: str, payload: str, namespace: str = pubsub.NS_PUBSUB) -> domish.Element:
        from libervia_cache.plugin.xml import parse_element

        element = domish.Element((namespace, "item"))
        element["id"] = item_id
        if payload:
            element.addChild(parse_element(payload))
        return element

    async def _gate(self, kind: str) -> None:
        held = self._holds.get(kind)
        gate = held.passage() if held is not None else None
        if gate is not None:
            await gate
        if kind in self.failures:
            raise self.failures[kind]

    async def items(
        self,
        node: str,
        max_items: int | None,
        item_ids: Sequence[str] | None,
        rsm_request: rsm.RSMRequest | None,
    ) -> tuple[list[domish.Element], dict[str, Any] | None]:
        self.requests.append(
            ("items", node, {"max_items": max_items, "item_ids": item_ids, "rsm": rsm_request})
        )
        kind = "payload" if item_ids else "items"
        held = self._holds.get(kind)
        if held is None or not held.answer_first:
            await self._gate(kind)
            return self._answer(node, max_items, item_ids, rsm_request)
        try:
            answer = self._answer(node, max_items, item_ids, rsm_request)
        except StanzaError as error:
            await self._gate(kind)
            raise error from None
        await self._gate(kind)
        return answer

    def _answer(
        self,
        node: str,
        max_items: int | None,
        item_ids: Sequence[str] | None,
        rsm_request: rsm.RSMRequest | None,
    ) -> tuple[list[domish.Element], dict[str, Any] | None]:
        if node not in self.nodes:
            raise StanzaError("item-not-found")
        entries = self.nodes[node]
        if item_ids:
            return [self._item(i, p) for i, p in entries if i in item_ids], None
        if rsm_request is None or not self.rsm:
            # without RSM (or ignoring it): max_items newest items (0: every item)
            if max_items:
                entries = entries[-max_items:]
            return [self._item(i, p) for i, p in entries], None
        # RSM wins over max_items, as ejabberd and libervia-pubsub do
        ids = [i for i, __ in entries]
        limit = rsm_request.max
        if rsm_request.before is not None:
            end = (
                len(ids)
                if rsm_request.before == ""
                else ids.index(rsm_request.before)
                if rsm_request.before in ids
                else 0
            )
            start = max(0, end - limit)
        else:
            if rsm_request.after is not None:
                start = ids.index(rsm_request.after) + 1 if rsm_request.after in ids else len(ids)
            else:
                start = min(rsm_request.index or 0, len(ids))
            end = min(len(ids), start + limit)
        page = entries[start:end]
        rsm_data = {
            "count": len(ids),
            "index": start if page else None,
            "first": page[0][0] if page else None,
            "last": page[-1][0] if page else None,
        }
        return [self._item(i, p) for i, p in page], rsm_data

    async def subscribe(self, plugin: FakeXEP0060, client: Client, node: str) -> None:
        self.requests.append(("subscribe", node, {}))
        await self._gate("subscribe")
        if node not in self.nodes:
            raise StanzaError("item-not-found")
        subscribers = self._subscribers.setdefault(node, [])
        if (plugin, client) not in subscribers:
            subscribers.append((plugin, client))


class FakeXEP0060:
    """``hostapi.XEP0060`` over a :class:`FakeService`, with the host's trigger points."""

    def __init__(self, host: FakeHost, service: FakeService) -> None:
        self.host = host
        self.service = service
        #: the event handlers added, in order
        self.handlers: list[PubsubEventHandler] = []

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
        async def run() -> ItemsResult:
            args = (
                client,
                service,
                node,
                max_items,
                item_ids,
                sub_id,
                rsm_request,
                dict(extra or {}),
            )
            keep_going, answer = await self.host.trigger.async_return_point(GET_ITEMS_POINT, *args)
            if not keep_going:
                result: ItemsResult = answer
                return result
            items, metadata = await self.get_items_from_network(*args)
            await self.host.trigger.async_point(GOT_ITEMS_POINT, *args, items, metadata)
            return items, metadata

        return defer.Deferred.fromCoroutine(run())

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
        async def run() -> ItemsResult:
            items, rsm_data = await self.service.items(node, max_items, item_ids, rsm_request)
            return items, answer_metadata(
                service or client.jid.userhostJID(),
                node,
                len(items),
                rsm_request,
                rsm_data if rsm_request is not None else None,
                cached=False,
            )

        return defer.Deferred.fromCoroutine(run())

    def subscribe(self, client: Client, service: JID | None, node: str) -> defer.Deferred[Any]:
        return defer.Deferred.fromCoroutine(self.service.subscribe(self, client, node))

    def get_configuration(
        self, client: Client, service: JID | None, node: str
    ) -> defer.Deferred[dict[str, Any]]:
        if node not in self.service.nodes:
            return defer.fail(StanzaError("item-not-found"))
        return defer.succeed({"pubsub#max_items": "max"})

    def add_event_handler(self, handler: PubsubEventHandler) -> None:
        self.handlers.append(handler)

    def remove_event_handler(self, handler: PubsubEventHandler) -> None:
        self.handlers.remove(handler)

    def dispatch_event(self, client: Client, event: Any) -> None:
        for handler in list(self.handlers):
            handler(client, event)


def atom(item_id: str, title: str = "") -> tuple[str, str]:
    """A microblog item: ``(id, Atom entry XML)``."""
    return item_id, (
        f"<entry xmlns='{ATOM}'><id>urn:uuid:{item_id}</id><title>{title or item_id}</title>"
        "<published>2026-01-01T00:00:00Z</published></entry>"
    )


def conforms(host: FakeHost) -> tuple[Host, XEP0060]:
    """The fakes as the Protocols they stand for (mypy checks that they conform)."""
    return host, host.xep_0060


async def start_plugin(
    service: FakeService,
    directory: Path,
    config: Mapping[str, Any] | None = None,
    profiles: Sequence[str] = ("bob",),
    bridge: Any = None,
    microblog: bool = True,
) -> tuple[PubsubCache, FakeHost]:
    """The cache plugin on a :class:`FakeHost`, its store in ``directory``, started and
    with the shipped microblog analyser registered (stop it with ``plugin.stop()``)."""
    from libervia_cache.analysers.microblog import MicroblogAnalyser
    from libervia_cache.plugin import PLUGIN_INFO, PubsubCache

    settings = {
        "pubsub_cache.db_url": f"sqlite+aiosqlite:///{directory / 'cache.db'}",
        **(config or {}),
    }
    host = FakeHost(service, PLUGIN_INFO["config"], settings, profiles, bridge)  # type: ignore[arg-type]
    plugin = PubsubCache(host)
    host.add_plugin("PUBSUB_CACHE", plugin)
    if microblog:
        MicroblogAnalyser(host)
    await plugin.start()
    return plugin, host
