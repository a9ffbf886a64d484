"""``host.plugins["PUBSUB_CACHE"]`` in Libervia: the cache plugin, on Libervia's host.

:class:`PubsubCache` is the main class Libervia's plugin loader builds. It finds the
cache plugin through its entry point (group ``libervia.backend.plugins``, name
``PUBSUB_CACHE``, as every host finds it), builds the host API on Libervia
(:mod:`.host`, :mod:`.pubsub`, :mod:`.bridge`) and the plugin on it, and offers other
Libervia plugins the stock cache's API: :meth:`PubsubCache.register_analyser` (Libervia's
XEP-0277 plugin registers its analyser there, unchanged) and
:meth:`PubsubCache.synchronise`.

Lifecycle: the store opens as the plugin is built (Libervia has no start hook for
plugins); ``profile_connected`` runs the freshness checks of the profile, and a handler
of each client (:class:`ReconnectionWatcher`) runs them again after every reconnection of
its stream; ``unload`` stops the plugin.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from libervia.backend.core import exceptions
from libervia.backend.core.log import getLogger
from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID
from wokkel import subprotocols

from libervia_cache.hostapi import XEP0060, Host
from libervia_cache.hosts.libervia.bridge import LiberviaBridge
from libervia_cache.hosts.libervia.host import LiberviaConfig, LiberviaHost, LiberviaTrigger
from libervia_cache.hosts.libervia.pubsub import LiberviaPubsub

__all__ = ["AnalyserConflict", "PubsubCache", "find_plugin"]

log = logging.getLogger(__name__)

#: where hosts find the cache plugin
ENTRY_POINT_GROUP = "libervia.backend.plugins"
ENTRY_POINT_NAME = "PUBSUB_CACHE"

#: the analyser keys Libervia documents (``PubsubCache.register_analyser`` of the stock
#: cache); others are ignored, as the stock cache ignores them
LIBERVIA_ANALYSER_KEYS = ("name", "type", "node", "namespace", "to_sync", "parser", "match_cb")


class AnalyserConflict(exceptions.ConflictError, ValueError):
    """An analyser with this name is already registered.

    The stock cache's docstring promises ``exceptions.Conflict``, a name Libervia's
    exceptions module does not have (it has ``ConflictError``): this is a
    ``ConflictError`` and, like the plugin's own ``AnalyserConflict``, a ``ValueError``.
    """


def find_plugin() -> Any:
    """The cache plugin's module, through its entry point."""
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=ENTRY_POINT_NAME)
    for entry_point in found:
        return entry_point.load()
    raise exceptions.NotFound(
        f"no {ENTRY_POINT_NAME} entry point in group {ENTRY_POINT_GROUP}: "
        "is libervia-cache installed in this Python environment?"
    )


class LiberviaLogHandler(logging.Handler):
    """Forwards the plugin's standard logging records to Libervia's logs."""

    LEVELS: Mapping[int, str] = {
        logging.DEBUG: "debug",
        logging.INFO: "info",
        logging.WARNING: "warning",
        logging.ERROR: "error",
        logging.CRITICAL: "critical",
    }

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = self.LEVELS.get(record.levelno, "info")
            getattr(getLogger(record.name), level)(self.format(record))
        except Exception:
            self.handleError(record)


def forward_logs(level: str) -> None:
    """Send ``libervia_cache``'s logs to Libervia's (once), from ``level`` (Libervia's
    ``log_level``: records below it are not even built, as Libervia's own are not)."""
    package_log = logging.getLogger("libervia_cache")
    package_log.setLevel(logging.getLevelName(level.upper()) if level else logging.INFO)
    if not any(isinstance(h, LiberviaLogHandler) for h in package_log.handlers):
        handler = LiberviaLogHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        package_log.addHandler(handler)
        package_log.propagate = False


class ReconnectionWatcher(subprotocols.XMPPHandler):
    """A client's handler: after a reconnection of the stream (not the first
    connection, which ``profile_connected`` covers), the profile's nodes are checked."""

    def __init__(self, cache: PubsubCache, client: Any) -> None:
        super().__init__()
        self._cache = cache
        self._client = client
        self._connections = 0

    def connectionInitialized(self) -> None:
        self._connections += 1
        if self._connections > 1:
            log.info("profile %s reconnected: checking its cached nodes", self._client.profile)
            defer.ensureDeferred(self._cache.profile_connected(self._client))


class PubsubCache:
    """Libervia's ``PUBSUB_CACHE``: libervia-cache's plugin on Libervia's host."""

    def __init__(self, host: Any) -> None:
        forward_logs(str(host.memory.config_get("", "log_level", "info")))
        log.info("libervia-cache: pubsub cache initialisation")
        self.libervia = host
        plugin = find_plugin()
        xep_0060 = host.plugins["XEP-0060"]
        pubsub: XEP0060 = LiberviaPubsub(xep_0060)
        local_dir = Path(host.memory.config_get("", "local_dir")).expanduser()
        self.host: Host = LiberviaHost(
            host,
            config=LiberviaConfig(
                host.memory.config_get, plugin.PLUGIN_INFO.get("config", {}), local_dir
            ),
            trigger=LiberviaTrigger(host.trigger, pubsub),
            bridge=LiberviaBridge(
                host.bridge,
                parse_extra=xep_0060.parse_extra,
                profile_name=lambda key: host.memory.get_profile_name(key),
            ),
            pubsub=pubsub,
        )
        #: the cache plugin itself (``libervia_cache.plugin.PubsubCache``)
        self.cache = getattr(plugin, plugin.PLUGIN_INFO["main"])(self.host)
        self.started: defer.Deferred[None] = defer.ensureDeferred(self.cache.start())

    # --- Libervia's plugin hooks ---------------------------------------------------------

    def get_handler(self, client: Any) -> ReconnectionWatcher:
        return ReconnectionWatcher(self, client)

    async def profile_connected(self, client: Any) -> None:
        if getattr(client, "pubsub_client", None) is None:
            return  # a component without pubsub client
        await self.started
        await self.cache.profile_connected(client)

    async def unload(self) -> None:
        await self.started
        await self.cache.stop()

    # --- the stock cache's API, for other Libervia plugins ---------------------------------

    def register_analyser(self, analyser: dict[str, Any]) -> None:
        """Register an analyser, as Libervia's plugins do with the stock cache.

        The keys Libervia documents are passed on (others are ignored, as the stock
        cache does); the name is normalised in ``analyser`` itself, as the stock cache
        does. A name already registered raises :class:`AnalyserConflict` (a
        ``ConflictError``); a missing ``name`` or ``type``, or neither ``node`` nor
        ``namespace``, a ``ValueError``.
        """
        name = str(analyser.get("name", "")).strip().lower()
        analyser["name"] = name
        if name and self.cache.analysers.get(name) is not None:
            raise AnalyserConflict(f"An analyser with the name {name!r} is already registered")
        ignored = sorted(set(analyser) - set(LIBERVIA_ANALYSER_KEYS))
        if ignored:
            log.debug("analyser %r: key(s) %s ignored", name, ", ".join(ignored))
        self.cache.register_analyser(
            {key: analyser[key] for key in LIBERVIA_ANALYSER_KEYS if key in analyser}
        )

    async def synchronise(
        self, client: Any, service: JID | None, node: str, resync: bool = True
    ) -> None:
        """Synchronise a node and wait for the end (the stock cache's method);
        ``resync=False`` leaves a node the cache already knows alone."""
        await self.started
        service = service or client.jid.userhostJID()
        if not resync:
            store = self.cache.store_access.require()
            if await store.get_node(client.profile, service.full(), node) is not None:
                return
        sync = await self.cache.management.synchronise(client, service, node)
        await sync.wait()
