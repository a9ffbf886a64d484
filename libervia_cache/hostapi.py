"""The host API the cache plugin codes against, written down once.

The plugin (``plugin.py``, ``analysis.py``, ``sync.py``, ``search.py``, ``storage/``)
never imports the reference daemon (``backend/``): it receives ``host`` at construction
and uses only what these Protocols describe. The reference daemon implements them; the
Libervia backend has the same shape, so the plugin could be dropped into it.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish
from tx_xmpp import rsm

from libervia_cache.errors import BridgeError

__all__ = [
    "BridgeError",
    "Bridge",
    "Client",
    "Config",
    "ConfigurationEvent",
    "Host",
    "ItemsResult",
    "NotConnected",
    "PubsubEventHandler",
    "ReturnPointResult",
    "TriggerManager",
    "XEP0060",
    "as_deferred",
    "parse_jid",
    "rsm_request",
]

#: Trigger callbacks of ``async_return_point``: ``(True, None)`` to let the flow go on,
#: ``(False, value)`` to answer in place of the normal flow.
ReturnPointResult = tuple[bool, Any]

#: ``(items, metadata)``: what every items request answers, from cache or network.
ItemsResult = tuple[list[domish.Element], dict[str, Any]]


def as_deferred(func: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
    """Call ``func`` and return a Deferred of its result: how hosts and plugins call
    each other's callbacks (trigger callbacks, bridge methods, analyser parsers).

    ``func`` may be a plain function, a coroutine function (run by Twisted, so it may
    await Deferreds) or return a Deferred or another awaitable. Exceptions become failed
    Deferreds.
    """
    try:
        result = func(*args, **kwargs)
    except Exception:
        return defer.fail()
    if isinstance(result, defer.Deferred):
        return result
    if inspect.iscoroutine(result):
        return defer.Deferred.fromCoroutine(result)
    if isinstance(result, Awaitable):
        return defer.Deferred.fromFuture(asyncio.ensure_future(result))
    return defer.succeed(result)


class NotConnected(ConnectionError):
    """The profile's stream to its server is down (the client is reconnecting)."""


class TriggerManager(Protocol):
    """Named trigger points (pluggy-like): callbacks run by decreasing priority."""

    MIN_PRIORITY: int
    MAX_PRIORITY: int

    def add(self, point_name: str, callback: Callable[..., Any], priority: int = 0) -> None:
        """Register ``callback`` on ``point_name``; higher priorities run first."""

    def remove(self, point_name: str, callback: Callable[..., Any]) -> None:
        """Unregister ``callback``; raises ``KeyError`` if it is not registered."""

    def point(self, point_name: str, *args: Any, **kwargs: Any) -> bool:
        """Run synchronous callbacks; the first returning False stops the flow (False)."""

    async def async_point(self, point_name: str, *args: Any, **kwargs: Any) -> bool:
        """Like :meth:`point`, callbacks may be coroutines or return Deferreds."""

    async def async_return_point(
        self, point_name: str, *args: Any, **kwargs: Any
    ) -> ReturnPointResult:
        """Run callbacks until one answers ``(False, value)``; else ``(True, None)``."""


class Config(Protocol):
    """Validated INI configuration."""

    def get(self, section: str, key: str) -> Any:
        """The validated value (with its default) of a known key."""


class Client(Protocol):
    """One connected XMPP account (profile)."""

    profile: str
    pubsub_client: rsm.PubSubClient

    @property
    def jid(self) -> JID:
        """The JID the server bound for this session (full JID)."""


@dataclass(frozen=True)
class ConfigurationEvent:
    """A node configuration change notification (XEP-0060 §8.2.5).

    Items, retract, purge and delete events are tx_xmpp's ``ItemsEvent``,
    ``PurgeEvent`` and ``DeleteEvent``; tx_xmpp has no configuration event.
    """

    sender: JID
    recipient: JID
    nodeIdentifier: str
    options: dict[str, Any]


class PubsubEventHandler(Protocol):
    """Receives pubsub events of every profile (see :meth:`XEP0060.add_event_handler`)."""

    def __call__(self, client: Client, event: Any) -> Any: ...


class XEP0060(Protocol):
    """The daemon's pubsub plugin (``host.plugins["XEP-0060"]``)."""

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
        """Get items: return point ``XEP-0060_getItems``, network, ``XEP-0060_gotItems``."""

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
        """The network request alone: no trigger is called (used by synchronisation)."""

    def subscribe(self, client: Client, service: JID | None, node: str) -> defer.Deferred[Any]: ...

    def get_configuration(
        self, client: Client, service: JID | None, node: str
    ) -> defer.Deferred[dict[str, Any]]: ...

    def add_event_handler(self, handler: PubsubEventHandler) -> None:
        """Call ``handler(client, event)`` for every pubsub event received."""

    def remove_event_handler(self, handler: PubsubEventHandler) -> None: ...


class Bridge(Protocol):
    """Methods exposed to frontends over the local control socket."""

    def register_method(self, name: str, method: Callable[..., Any]) -> None:
        """Expose ``method`` (keyword arguments, JSON in and out; may be async)."""


class Host(Protocol):
    """What a plugin receives at construction."""

    trigger: TriggerManager
    config: Config
    bridge: Bridge
    plugins: Mapping[str, Any]
    clients: Mapping[str, Client]

    @property
    def default_profile(self) -> str:
        """The profile used when a caller names none."""

    def get_client(self, profile: str) -> Client:
        """The connected client of ``profile``; raises ``KeyError`` if unknown."""


# --- JSON forms of bridge arguments (shared by the daemon's and the plugins' methods) --

#: keys of an RSM request in its JSON form
RSM_KEYS = ("max", "after", "before", "index")


def parse_jid(service: str | None, part: str = "service") -> JID | None:
    """A service JID from its string (None or "": the profile's own PEP service);
    ``bad_request`` naming ``part`` for anything else."""
    if not service:
        return None
    if not isinstance(service, str):
        raise BridgeError("bad_request", f"{part}: must be a JID string, not {service!r}")
    try:
        return JID(service)
    except InvalidFormat as e:
        raise BridgeError("bad_request", f"{part}: {service!r} is not a valid JID ({e})") from None


def rsm_request(data: Mapping[str, Any] | None) -> rsm.RSMRequest | None:
    """An RSM request from its JSON form ``{"max", "after", "before", "index"}``."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise BridgeError("bad_request", f"rsm: must be an object, not {data!r}")
    unknown = set(data) - set(RSM_KEYS)
    if unknown:
        raise BridgeError("bad_request", f"rsm: unknown key(s) {', '.join(sorted(unknown))}")
    try:
        return rsm.RSMRequest(
            max_=int(data.get("max", 10)),
            after=data.get("after"),
            before=data.get("before"),
            index=data.get("index"),
        )
    except (AssertionError, ValueError, TypeError):
        raise BridgeError("bad_request", "rsm: use at most one of after, before, index") from None
