"""The host API (:mod:`libervia_cache.hostapi`) on the Libervia backend.

:class:`LiberviaHost` is what the cache plugin receives as ``host``. Each Protocol maps
onto Libervia's own machinery:

==================  ====================================================================
host API            Libervia
==================  ====================================================================
``trigger``         its trigger manager (:class:`LiberviaTrigger`); the point
                    ``XEP-0060_gotItems``, which Libervia lacks, is emulated there
``config``          its configuration file, section ``[pubsub_cache]``
                    (:class:`LiberviaConfig`); the database in its local directory
``plugins``         ``{"XEP-0060": LiberviaPubsub}`` (:mod:`.pubsub`)
``clients``         its started profiles that have a pubsub client
``get_client``      ``host.get_client`` (profile keys like ``@DEFAULT@`` accepted)
``bridge``          :class:`~.bridge.LiberviaBridge`
==================  ====================================================================
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from libervia.backend.core import exceptions
from libervia.backend.tools import trigger as libervia_trigger
from twisted.words.protocols.jabber.jid import JID
from tx_xmpp import rsm

from libervia_cache.errors import BridgeError
from libervia_cache.hostapi import (
    GET_ITEMS_POINT,
    GOT_ITEMS_POINT,
    Bridge,
    Client,
    Config,
    ConfigKey,
    ReturnPointResult,
    TriggerManager,
    as_deferred,
)

log = logging.getLogger(__name__)

SECTION = "pubsub_cache"
#: file name of the database in Libervia's local directory (``local_dir``)
DB_FILE_NAME = "pubsub_cache.db"
#: the stock cache's option ([DEFAULT] pubsub_cache_strategy), honoured when the
#: ``[pubsub_cache]`` section does not say
STOCK_OPTIONS: dict[tuple[str, str], tuple[str, str]] = {
    (SECTION, "strategy"): ("", "pubsub_cache_strategy"),
}
#: marks the network request made on behalf of a request the cache did not answer, so
#: that the cache's own callbacks let it through
NETWORK_MARK = "_libervia_cache_network"


class ConfigurationError(ValueError):
    """A ``[pubsub_cache]`` value is invalid; the message names the key."""


class LiberviaConfig:
    """The values of the keys plugins declare, read from Libervia's configuration.

    ``declared`` is ``PLUGIN_INFO["config"]`` (``{section: (ConfigKey, ...)}``).
    Relative paths are taken from Libervia's local directory, where the database lives by
    default (``local_dir/pubsub_cache.db``).
    """

    def __init__(
        self,
        config_get: Callable[[str, str, Any], Any],
        declared: Mapping[str, Sequence[ConfigKey]],
        local_dir: Path,
    ) -> None:
        self._values: dict[tuple[str, str], Any] = {}
        defaults: dict[tuple[str, str], str] = {
            (SECTION, "db_url"): f"sqlite+aiosqlite:///{local_dir / DB_FILE_NAME}",
        }
        for section, keys in declared.items():
            for key in keys:
                raw = config_get(section, key.name, None)
                if raw is None and (section, key.name) in STOCK_OPTIONS:
                    raw = config_get(*STOCK_OPTIONS[section, key.name], None)
                if raw is None:
                    raw = defaults.get((section, key.name))
                if raw is None:
                    self._values[section, key.name] = key.default
                    continue
                try:
                    self._values[section, key.name] = key.parse(str(raw), local_dir)
                except ValueError as error:
                    raise ConfigurationError(f"[{section}] {key.name}: {error}") from None

    def get(self, section: str, key: str) -> Any:
        return self._values[section, key]


class LiberviaTrigger:
    """The host API's trigger manager on Libervia's.

    Callbacks of ``XEP-0060_getItems`` receive the request as the reference daemon gives
    it (``item_ids`` None rather than ``[]``, a tx_xmpp RSM request) and their answer is
    given back in Libervia's shape. Libervia has no ``XEP-0060_gotItems`` point: while
    callbacks are registered on it, a last ``XEP-0060_getItems`` callback (lowest
    priority, so after every other) makes the network request itself, through Libervia's
    ``get_items`` marked with :data:`NETWORK_MARK` (every trigger runs again, and
    ``XEP-0060_items`` too), runs the ``gotItems`` callbacks, and answers with the
    network's answer. Requests made by the cache itself (synchronisation) go through
    ``XEP-0060``'s network path alone (:class:`~.pubsub.LiberviaPubsub`).
    """

    def __init__(self, trigger: Any, pubsub: Any) -> None:
        self._trigger = trigger
        self._pubsub = pubsub
        self.MIN_PRIORITY: int = trigger.MIN_PRIORITY
        self.MAX_PRIORITY: int = trigger.MAX_PRIORITY
        #: (point, callback) -> what is registered on Libervia's trigger
        self._registered: dict[tuple[str, Callable[..., Any]], Callable[..., Any]] = {}
        self._got_items: list[tuple[int, Callable[..., Any]]] = []

    def add(self, point_name: str, callback: Callable[..., Any], priority: int = 0) -> None:
        if (point_name, callback) in self._registered or any(
            cb == callback for __, cb in self._got_items if point_name == GOT_ITEMS_POINT
        ):
            raise ValueError(f"{callback!r} is already registered on {point_name!r}")
        if point_name == GOT_ITEMS_POINT:
            if not self._got_items:
                self._trigger.add(GET_ITEMS_POINT, self._network_and_got_items, self.MIN_PRIORITY)
            self._got_items.append((priority, callback))
            self._got_items.sort(key=lambda entry: entry[0], reverse=True)
            return
        registered = _get_items_callback(callback) if point_name == GET_ITEMS_POINT else callback
        self._registered[point_name, callback] = registered
        self._trigger.add(point_name, registered, priority)

    def remove(self, point_name: str, callback: Callable[..., Any]) -> None:
        if point_name == GOT_ITEMS_POINT:
            entries = [entry for entry in self._got_items if entry[1] == callback]
            if not entries:
                raise KeyError(f"{callback!r} is not registered on {point_name!r}")
            self._got_items.remove(entries[0])
            if not self._got_items:
                self._trigger.remove(GET_ITEMS_POINT, self._network_and_got_items)
            return
        try:
            registered = self._registered.pop((point_name, callback))
        except KeyError:
            raise KeyError(f"{callback!r} is not registered on {point_name!r}") from None
        try:
            self._trigger.remove(point_name, registered)
        except libervia_trigger.TriggerException:
            raise KeyError(f"{callback!r} is not registered on {point_name!r}") from None

    def point(self, point_name: str, *args: Any, **kwargs: Any) -> bool:
        return bool(self._trigger.point(point_name, *args, **kwargs))

    async def async_point(self, point_name: str, *args: Any, **kwargs: Any) -> bool:
        if point_name == GOT_ITEMS_POINT:
            for __, callback in list(self._got_items):
                if not await as_deferred(callback, *args, **kwargs):
                    return False
            return True
        return bool(await self._trigger.async_point(point_name, *args, **kwargs))

    async def async_return_point(
        self, point_name: str, *args: Any, **kwargs: Any
    ) -> ReturnPointResult:
        result: ReturnPointResult = await self._trigger.async_return_point(
            point_name, *args, **kwargs
        )
        return result

    async def _network_and_got_items(
        self,
        client: Any,
        service: JID | None,
        node: str,
        max_items: int | None,
        item_ids: Sequence[str] | None,
        sub_id: str | None,
        rsm_request: Any,
        extra: dict[str, Any],
    ) -> ReturnPointResult:
        if extra.get(NETWORK_MARK):
            return True, None
        network_extra = {**extra, NETWORK_MARK: True}
        items, metadata = await self._pubsub.libervia_get_items(
            client, service, node, max_items, item_ids, sub_id, rsm_request, network_extra
        )
        if "encrypted" in network_extra:
            extra["encrypted"] = network_extra["encrypted"]
        args = request_arguments(
            client, service, node, max_items, item_ids, sub_id, rsm_request, extra
        )
        host_metadata = self._pubsub.host_metadata(client, service, node, items, args, metadata)
        for __, callback in list(self._got_items):
            try:
                await as_deferred(callback, *args, items, host_metadata)
            except Exception:
                log.exception("%s callback %r failed", GOT_ITEMS_POINT, callback)
        metadata["cached"] = False
        return False, (items, metadata)


def to_tx_rsm(request: Any) -> rsm.RSMRequest | None:
    """A tx_xmpp RSM request from Libervia's (sat_tmp's, the same attributes)."""
    if request is None or isinstance(request, rsm.RSMRequest):
        return request
    return rsm.RSMRequest(
        max_=request.max, after=request.after, before=request.before, index=request.index
    )


def request_arguments(
    client: Any,
    service: JID | None,
    node: str,
    max_items: int | None,
    item_ids: Sequence[str] | None,
    sub_id: str | None,
    rsm_request: Any,
    extra: dict[str, Any],
) -> tuple[Any, ...]:
    """Libervia's items request arguments as the host API gives them to callbacks."""
    return (
        client,
        service,
        node,
        max_items,
        list(item_ids) if item_ids else None,
        sub_id or None,
        to_tx_rsm(rsm_request),
        extra,
    )


def _get_items_callback(callback: Callable[..., Any]) -> Callable[..., Any]:
    """``callback`` (host API form) as a callback of Libervia's ``XEP-0060_getItems``."""

    async def on_get_items(
        client: Any,
        service: JID | None,
        node: str,
        max_items: int | None,
        item_ids: Sequence[str] | None,
        sub_id: str | None,
        rsm_request: Any,
        extra: dict[str, Any],
    ) -> ReturnPointResult:
        if extra.get(NETWORK_MARK):
            return True, None
        args = request_arguments(
            client, service, node, max_items, item_ids, sub_id, rsm_request, extra
        )
        keep_going, answer = await as_deferred(callback, *args)
        if keep_going:
            return True, None
        items, metadata = answer
        return False, (items, libervia_metadata(client, service, node, rsm_request, metadata))

    return on_get_items


def libervia_metadata(
    client: Any,
    service: JID | None,
    node: str,
    rsm_request: Any,
    metadata: Mapping[str, Any],
) -> dict[str, Any]:
    """The metadata of an answer from the cache, in the shape of Libervia's network
    answers: ``service`` as a JID, ``uri``, ``rsm`` and ``complete`` only for an RSM
    request; plus ``cached``, which says where the answer came from."""
    service_jid = service or client.jid.userhostJID()
    result: dict[str, Any] = {
        "service": service_jid,
        "node": node,
        "uri": node_uri(service_jid, node),
        "cached": metadata.get("cached", True),
    }
    if rsm_request is not None and "rsm" in metadata:
        result["rsm"] = dict(metadata["rsm"])
        result["complete"] = metadata.get("complete")
    return result


def node_uri(service: JID, node: str) -> str:
    """The node's XMPP URI, as Libervia's ``XEP_0060.get_node_uri`` builds it."""
    return _node_uri(service.userhost(), node)


@functools.lru_cache(maxsize=1024)
def _node_uri(service: str, node: str) -> str:
    # urlencode costs more than the rest of a cached read's metadata: the same few nodes
    # are read again and again
    return f"xmpp:{service}?;{urlencode([('node', node.encode('utf-8'))])}"


class LiberviaClients(Mapping[str, Client]):
    """Libervia's started profiles that have a pubsub client (components may not)."""

    def __init__(self, profiles: Mapping[str, Any]) -> None:
        self._profiles = profiles

    def _clients(self) -> dict[str, Client]:
        return {
            name: client
            for name, client in self._profiles.items()
            if getattr(client, "pubsub_client", None) is not None
        }

    def __getitem__(self, profile: str) -> Client:
        return self._clients()[profile]

    def __iter__(self) -> Any:
        return iter(self._clients())

    def __len__(self) -> int:
        return len(self._clients())


class LiberviaHost:
    """The host the cache plugin is built with, inside Libervia."""

    def __init__(
        self,
        libervia: Any,
        *,
        config: LiberviaConfig,
        trigger: LiberviaTrigger,
        bridge: Any,
        pubsub: Any,
    ) -> None:
        self.libervia = libervia
        self.config: Config = config
        self.trigger: TriggerManager = trigger
        self.bridge: Bridge = bridge
        self.plugins: Mapping[str, Any] = {"XEP-0060": pubsub}
        self.clients: Mapping[str, Client] = LiberviaClients(libervia.profiles)

    @property
    def default_profile(self) -> str:
        return str(self.libervia.memory.get_profile_name("@DEFAULT@") or "@DEFAULT@")

    def get_client(self, profile: str) -> Client:
        """The started client of ``profile`` (or a profile key such as ``@DEFAULT@``);
        ``KeyError`` for a profile Libervia does not know, ``unavailable`` for one that
        is not connected."""
        try:
            client: Client = self.libervia.get_client(profile)
        except (exceptions.ProfileKeyUnknown, exceptions.ProfileUnknownError):
            raise KeyError(profile) from None
        except exceptions.NotFound:
            raise BridgeError("unavailable", f"profile {profile!r} is not connected") from None
        return client
