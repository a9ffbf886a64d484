"""The reference daemon: the host that plugins receive.

It reads the configuration, loads the plugins from their entry points, opens the control
socket, connects one tx_xmpp client per profile (with the RSM-aware pubsub client of the
XEP-0060 plugin attached) and exposes the transparent items read on the bridge.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from tx_xmpp.subprotocols import XMPPHandler

from libervia_cache.backend.bridge import Bridge, BridgeError
from libervia_cache.backend.clients import ReconnectingClient, connect_client, disconnect_client
from libervia_cache.backend.config import DaemonConfig, ProfileConfig
from libervia_cache.backend.plugins import load_plugins
from libervia_cache.backend.trigger import TriggerManager
from libervia_cache.backend.xep_0060 import XEP_0060, EventDispatchingPubSubClient
from libervia_cache.errors import to_bridge_error
from libervia_cache.hostapi import as_deferred, items_arguments

log = logging.getLogger(__name__)


class AvailablePresence(XMPPHandler):
    """Sends an available presence on every (re)connection.

    Servers deliver pubsub notifications addressed to the bare JID (subscriptions,
    PEP) only to available resources with a non-negative priority: without this,
    the cache would never hear of the changes of the nodes it keeps.
    """

    def connectionInitialized(self) -> None:
        self.send(domish.Element((None, "presence")))


@dataclass
class ProfileClient:
    """One connected profile (``hostapi.Client``)."""

    profile: str
    xmpp: ReconnectingClient
    pubsub_client: EventDispatchingPubSubClient

    @property
    def jid(self) -> JID:
        return self.xmpp.jid


class Daemon:
    """The host (``hostapi.Host``) of the reference daemon."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.trigger = TriggerManager()
        self.bridge = Bridge()
        self.plugins: dict[str, Any] = {}
        self.clients: dict[str, ProfileClient] = {}

    @property
    def default_profile(self) -> str:
        return self.config.default_profile

    def get_client(self, profile: str) -> ProfileClient:
        try:
            return self.clients[profile]
        except KeyError:
            if profile in self.config.profiles:
                raise BridgeError("unavailable", f"profile {profile!r} is not connected") from None
            known = ", ".join(self.config.profiles) or "none"
            raise BridgeError(
                "not_found", f"unknown profile {profile!r} (known: {known})"
            ) from None

    async def start(self, *, listen: bool = True, connect: bool = True) -> None:
        """Load plugins, open the control socket, connect every profile."""
        self.plugins = load_plugins(self)
        for name, plugin in self.plugins.items():
            if hasattr(plugin, "start"):
                log.debug("starting plugin %s", name)
                await as_deferred(plugin.start)
        self.bridge.register_method("ps_items_get", self._bridge_ps_items_get)
        self.bridge.register_method("ping", lambda: "pong")
        if listen:
            await self.bridge.listen(self.config.socket_path)
            log.info("control socket listening on %s", self.config.socket_path)
        if connect:
            await defer.DeferredList(
                [
                    defer.Deferred.fromCoroutine(self.connect_profile(p))
                    for p in self.config.profiles.values()
                ]
            )

    async def connect_profile(self, profile: ProfileConfig) -> ProfileClient | None:
        """Connect one profile; a failure is logged and leaves the profile offline."""
        pubsub_handler = self.xep_0060.make_client_handler()
        try:
            xmpp = await connect_client(
                profile.jid,
                profile.password,
                profile.host,
                profile.port,
                tls=str(profile.tls),
                tls_ca=str(profile.tls_ca) if profile.tls_ca else None,
                handlers=[pubsub_handler, AvailablePresence()],
            )
        except Exception as error:
            log.error("profile %s: could not connect: %s", profile.name, error)
            return None
        client = ProfileClient(profile.name, xmpp, pubsub_handler)
        pubsub_handler.client = client
        self.clients[profile.name] = client
        log.info("profile %s connected as %s", profile.name, client.jid.full())
        await self._notify_connected(client)
        self._watch_reconnections(client)
        return client

    async def _notify_connected(self, client: ProfileClient) -> None:
        """Call every plugin's ``profile_connected`` (on connection and reconnection)."""
        for name, plugin in self.plugins.items():
            if hasattr(plugin, "profile_connected"):
                try:
                    await as_deferred(plugin.profile_connected, client)
                except Exception:
                    log.exception("plugin %s failed on connection of %s", name, client.profile)

    def _watch_reconnections(self, client: ProfileClient) -> None:
        """After each loss of the stream, tell plugins when it is back: what happened
        meanwhile was not notified to us (e.g. pubsub events)."""

        def lost(__: Any) -> None:
            if self.clients.get(client.profile) is not client:
                return  # stopped
            log.warning("profile %s: connection lost, reconnecting", client.profile)
            client.xmpp.when_connected().addCallback(back)

        def back(__: Any) -> None:
            if self.clients.get(client.profile) is not client:
                return
            log.info("profile %s: reconnected", client.profile)
            defer.Deferred.fromCoroutine(self._notify_connected(client))
            client.xmpp.when_disconnected().addCallback(lost)

        client.xmpp.when_disconnected().addCallback(lost)

    async def stop(self) -> None:
        for name, plugin in reversed(list(self.plugins.items())):
            if hasattr(plugin, "stop"):
                try:
                    await as_deferred(plugin.stop)
                except Exception:
                    log.exception("plugin %s failed to stop", name)
        clients = list(self.clients.values())
        self.clients.clear()  # first: a disconnection we asked for is no loss
        for client in clients:
            await disconnect_client(client.xmpp)
        await as_deferred(self.bridge.stop)

    @property
    def xep_0060(self) -> XEP_0060:
        return self.plugins["XEP-0060"]

    async def _bridge_ps_items_get(
        self,
        service: str,
        node: str,
        profile: str | None = None,
        max_items: int | None = None,
        item_ids: Sequence[str] | None = None,
        rsm: dict[str, Any] | None = None,
        use_cache: bool = True,
    ) -> dict[str, Any]:
        """The transparent read: items as XML strings and the metadata of the answer."""
        arguments = items_arguments(service, node, max_items, item_ids, rsm)
        if not isinstance(use_cache, bool):
            raise BridgeError("bad_request", f"use_cache: must be true or false, not {use_cache!r}")
        if profile is not None and not isinstance(profile, str):
            raise BridgeError("bad_request", f"profile: must be a string, not {profile!r}")
        client = self.get_client(profile or self.default_profile)
        try:
            items, metadata = await self.xep_0060.get_items(
                client,
                arguments.service,
                arguments.node,
                max_items=arguments.max_items,
                item_ids=arguments.item_ids,
                rsm_request=arguments.rsm_request,
                extra={"use_cache": use_cache},
            )
            return {"items": [item.toXml() for item in items], "metadata": metadata}
        except BridgeError:
            raise
        except Exception as error:
            converted = to_bridge_error(error)
            if converted.kind == "internal":
                raise
            raise converted from None
