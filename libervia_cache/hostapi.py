"""The host API the cache plugin codes against, written down once.

The plugin (``libervia_cache.plugin``, with ``storage/``) never imports a host: it
receives ``host`` at construction and uses only what these Protocols describe. The
reference daemon (``backend/``) implements them, and so does the adapter that runs the
plugin inside the Libervia backend.

Besides the Protocols, this module holds what both sides must agree on: the trigger
point names, the calling convention of callbacks (:func:`as_deferred`), configuration
keys a plugin declares (:class:`ConfigKey`), the metadata of an items answer
(:func:`answer_metadata`) and the JSON forms of bridge arguments (:func:`parse_jid`,
:func:`rsm_request`, :func:`items_arguments`).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish
from tx_xmpp import rsm

from libervia_cache.errors import BridgeError

__all__ = [
    "GET_ITEMS_POINT",
    "GOT_ITEMS_POINT",
    "XEP0060",
    "Bridge",
    "BridgeError",
    "Client",
    "Config",
    "ConfigKey",
    "ConfigurationEvent",
    "Host",
    "ItemsResult",
    "NotConnected",
    "PubsubEventHandler",
    "ReturnPointResult",
    "TriggerManager",
    "answer_metadata",
    "as_deferred",
    "choice",
    "integer",
    "items_arguments",
    "parse_jid",
    "rsm_request",
]

#: Return point of the items request path: a callback may answer in place of the network.
GET_ITEMS_POINT = "XEP-0060_getItems"
#: Point after a network answer to an items request (write-back).
GOT_ITEMS_POINT = "XEP-0060_gotItems"

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


# --- configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigKey:
    """One key of a configuration section that a plugin declares.

    Plugins list theirs in ``PLUGIN_INFO["config"]`` (``{section: (ConfigKey, ...)}``);
    a host merges them into what it validates, so that it never needs to know a
    plugin's keys. ``parse(raw, base)`` turns the file's text into the value (``base``:
    the configuration file's directory, for relative paths) or raises ``ValueError``
    with a one-line reason; ``default`` is the value when the key is absent.
    """

    name: str
    parse: Callable[[str, Path], Any]
    default: Any
    help: str


def choice(enum_class: type[enum.StrEnum]) -> Callable[[str, Path], Any]:
    """A parser accepting one of the values of ``enum_class`` (case-insensitive)."""

    def parse(raw: str, base: Path) -> Any:
        try:
            return enum_class(raw.strip().lower())
        except ValueError:
            choices = ", ".join(member.value for member in enum_class)
            raise ValueError(f"{raw!r} is not one of {choices}") from None

    return parse


def integer(low: int, high: int | None = None) -> Callable[[str, Path], int]:
    """A parser of integers from ``low`` to ``high`` (included)."""

    def parse(raw: str, base: Path) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            wanted = f"between {low} and {high}" if high is not None else f">= {low}"
            raise ValueError(f"{value} is out of range (must be {wanted})")
        return value

    return parse


# --- Protocols ----------------------------------------------------------------------------


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
    """Validated configuration."""

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
    """The host's pubsub plugin (``host.plugins["XEP-0060"]``)."""

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
    """Methods exposed to frontends (the reference daemon: its local control socket)."""

    def register_method(self, name: str, method: Callable[..., Any]) -> None:
        """Expose ``method`` (keyword arguments, JSON in and out; may be async)."""

    def unregister_method(self, name: str) -> None:
        """Stop exposing ``name``; raises ``KeyError`` if it is not registered."""


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


# --- the metadata of an items answer ------------------------------------------------------


def answer_metadata(
    service: JID,
    node: str,
    returned: int,
    rsm_request: rsm.RSMRequest | None,
    rsm_data: Mapping[str, Any] | None,
    *,
    cached: bool,
) -> dict[str, Any]:
    """The metadata of an answer to an items request, from cache or network alike.

    ``service``, ``node``, ``cached`` (where it came from) and, when the answer carries
    RSM data (``first``, ``last``, ``index``, ``count``), ``rsm``. ``complete`` says
    whether no item of the node comes after the answer's last one: from ``index`` and
    ``count`` when given; else, for an RSM request, whether the page is short; an answer
    without RSM data holds every item, or the newest ones asked (a service that ignores
    RSM, like Prosody 0.12, sends every item).
    """
    metadata: dict[str, Any] = {"service": service.full(), "node": node, "cached": cached}
    if rsm_data is None:
        metadata["complete"] = True
        return metadata
    metadata["rsm"] = {k: v for k, v in rsm_data.items() if v is not None}
    index, count = rsm_data.get("index"), rsm_data.get("count")
    if index is not None and count is not None:
        metadata["complete"] = index + returned >= count
    else:
        metadata["complete"] = rsm_request is not None and returned < (rsm_request.max or 0)
    return metadata


# --- JSON forms of bridge arguments (shared by every host's and plugin's methods) --------

#: keys of an RSM request in its JSON form
RSM_KEYS = ("max", "after", "before", "index")


@functools.lru_cache(maxsize=256)
def _jid(text: str) -> JID:
    # building a JID runs stringprep: half the cost of a cached read over the bridge;
    # the same few services are asked again and again (bounded, unlike internJID)
    return JID(text)


def parse_jid(service: Any, part: str = "service") -> JID | None:
    """A service JID from its string (None or "": the profile's own PEP service);
    ``bad_request`` naming ``part`` for anything else."""
    if service is None or service == "":
        return None
    if not isinstance(service, str):
        raise BridgeError("bad_request", f"{part}: must be a JID string, not {service!r}")
    try:
        return _jid(service)
    except InvalidFormat as e:
        raise BridgeError("bad_request", f"{part}: {service!r} is not a valid JID ({e})") from None


def _count(value: Any, part: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BridgeError("bad_request", f"{part}: must be a non-negative integer, not {value!r}")
    return value


def _key(value: Any, part: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise BridgeError("bad_request", f"{part}: must be a string, not {value!r}")


def rsm_request(data: Any) -> rsm.RSMRequest | None:
    """An RSM request from its JSON form ``{"max", "after", "before", "index"}``;
    ``bad_request`` naming the bad key otherwise."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise BridgeError("bad_request", f"rsm: must be an object, not {data!r}")
    unknown = set(data) - set(RSM_KEYS)
    if unknown:
        raise BridgeError("bad_request", f"rsm: unknown key(s) {', '.join(sorted(unknown))}")
    max_ = _count(data.get("max", 10), "rsm.max")
    after = _key(data.get("after"), "rsm.after")
    before = _key(data.get("before"), "rsm.before")
    index = _count(data.get("index"), "rsm.index")
    if sum(anchor is not None for anchor in (after, before, index)) > 1:
        raise BridgeError("bad_request", "rsm: use at most one of after, before, index")
    return rsm.RSMRequest(
        max_=10 if max_ is None else max_, after=after, before=before, index=index
    )


@dataclass(frozen=True)
class ItemsArguments:
    """The validated arguments of an items request made over a bridge."""

    service: JID | None
    node: str
    max_items: int | None
    item_ids: list[str] | None
    rsm_request: rsm.RSMRequest | None


def items_arguments(
    service: Any, node: Any, max_items: Any = None, item_ids: Any = None, rsm: Any = None
) -> ItemsArguments:
    """Check the JSON arguments of an items request (``ps_items_get``, ``ps_cache_get``):
    ``bad_request`` naming the first bad one."""
    if not isinstance(node, str):
        raise BridgeError("bad_request", f"node: must be a string, not {node!r}")
    if item_ids is not None and (
        isinstance(item_ids, str)
        or not isinstance(item_ids, list | tuple)
        or not all(isinstance(i, str) for i in item_ids)
    ):
        raise BridgeError("bad_request", f"item_ids: must be a list of strings, not {item_ids!r}")
    return ItemsArguments(
        service=parse_jid(service),
        node=node,
        max_items=_count(max_items, "max_items"),
        item_ids=list(item_ids) or None if item_ids is not None else None,
        rsm_request=rsm_request(rsm),
    )
