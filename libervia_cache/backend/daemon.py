"""The reference daemon: the host that plugins receive.

It reads the configuration, loads the plugins from their entry points, opens the control
socket, starts one tx_xmpp client per profile (with the RSM-aware pubsub client of the
XEP-0060 plugin attached) and exposes the transparent items read on the bridge, with
``daemon_status``: what the daemon itself is doing (version, uptime, configuration,
profiles and their connections).

Every profile connects in the background and keeps trying, with a growing delay, until
it is connected (:mod:`.clients`); a profile joins :attr:`Daemon.clients` at its first
connection, when plugins hear of it (``profile_connected``), and again at each
reconnection.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from tx_xmpp.subprotocols import XMPPHandler

from libervia_cache.backend.bridge import Bridge, BridgeError
from libervia_cache.backend.clients import (
    ConnectionState,
    ReconnectingClient,
    disconnect_client,
    start_client,
)
from libervia_cache.backend.config import DaemonConfig, ProfileConfig
from libervia_cache.backend.plugins import load_plugins
from libervia_cache.backend.trigger import TriggerManager
from libervia_cache.backend.xep_0060 import XEP_0060, EventDispatchingPubSubClient
from libervia_cache.errors import describe, kind_of, to_bridge_error
from libervia_cache.hostapi import as_deferred, items_arguments

log = logging.getLogger(__name__)


def daemon_version() -> str:
    """The installed version of libervia-cache."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("libervia-cache")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "(not installed)"


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
    """One profile's client (``hostapi.Client``), connected or trying to be."""

    profile: str
    xmpp: ReconnectingClient
    pubsub_client: EventDispatchingPubSubClient

    @property
    def jid(self) -> JID:
        return self.xmpp.jid


class FileInUse(Exception):
    """A file a plugin needs for itself is used by another daemon (message: one line)."""


class ExclusiveFiles:
    """Locks held for the daemon's lifetime: one ``PATH.lock`` file next to each file a
    plugin needs for itself (an SQLite database), with ``flock``, so that a second daemon
    on the same file refuses to start. The lock goes with the process (even killed); the
    lock file stays, holding the PID and control socket of the last daemon that held it.
    """

    def __init__(self) -> None:
        self._held: dict[Path, int] = {}

    def acquire(self, path: Path, socket_path: Path) -> None:
        """Lock ``path`` (through ``path.lock``); :class:`FileInUse` if another daemon
        holds it."""
        lock_path = path.with_name(path.name + ".lock")
        if lock_path in self._held:
            return
        try:
            lock_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:  # the plugin will say why it cannot use the file either
            log.warning("cannot lock %s: %s", path, error.strerror or error)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").split()
            os.close(fd)
            pid = holder[0] if holder else "unknown"
            where = f", control socket {holder[1]}" if len(holder) > 1 else ""
            raise FileInUse(
                f"{path} is used by another libervia-cache daemon (PID {pid}{where}); "
                "stop it, or give this daemon a database of its own"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket_path}\n".encode())
        self._held[lock_path] = fd

    def release(self) -> None:
        """Let the files go (the lock files stay)."""
        for fd in self._held.values():
            os.close(fd)
        self._held.clear()


class Daemon:
    """The host (``hostapi.Host``) of the reference daemon."""

    def __init__(self, config: DaemonConfig, log_level: str | None = None) -> None:
        self.config = config
        self.trigger = TriggerManager()
        self.bridge = Bridge()
        self.plugins: dict[str, Any] = {}
        #: profiles connected at least once, by name (what plugins see)
        self.clients: dict[str, ProfileClient] = {}
        #: every profile's client, connected or still trying, by name
        self.connections: dict[str, ProfileClient] = {}
        #: the logging levels in use, as given (for the status)
        self.log_level = log_level
        self.started_at = time.time()
        self._exclusive = ExclusiveFiles()
        self._stopping = False

    @property
    def default_profile(self) -> str:
        """The first profile of the configuration ("" when there is none)."""
        return next(iter(self.config.profiles), "")

    def get_client(self, profile: str) -> ProfileClient:
        """The client of ``profile``: ``not_found`` if unknown, ``unavailable`` (saying
        why and when it tries again) if it has never connected."""
        try:
            return self.clients[profile]
        except KeyError:
            pass
        if not self.config.profiles:
            raise BridgeError(
                "not_found",
                f"no profile is configured: add a [profile NAME] section to {self.config.path}",
            )
        if profile not in self.config.profiles:
            known = ", ".join(self.config.profiles)
            raise BridgeError("not_found", f"unknown profile {profile!r} (known: {known})")
        connection = self.connections.get(profile)
        why = describe_connection(connection.xmpp) if connection is not None else "not started"
        raise BridgeError("unavailable", f"profile {profile!r} is not connected: {why}")

    async def start(self, *, listen: bool = True, connect: bool = True) -> None:
        """Load plugins, lock the files they need for themselves, start them, open the
        control socket, start every profile's connection (waiting for the first attempt
        of each: connected, or failed and retrying in the background)."""
        log.info(
            "libervia-cache %s starting (PID %d, configuration %s%s)",
            daemon_version(),
            os.getpid(),
            self.config.path,
            "" if self.config.path.exists() else ", not found: defaults",
        )
        self.plugins = load_plugins(self)
        self._lock_exclusive_files()
        for name, plugin in self.plugins.items():
            if hasattr(plugin, "start"):
                log.debug("starting plugin %s", name)
                await as_deferred(plugin.start)
        self.bridge.register_method("ps_items_get", self._bridge_ps_items_get)
        self.bridge.register_method("daemon_status", self._bridge_daemon_status)
        self.bridge.register_method("ping", lambda: "pong")
        if listen:
            await self.bridge.listen(self.config.socket_path)
        if not self.config.profiles:
            log.warning(
                "no profile configured: add a [profile NAME] section (jid, password) to %s; "
                "until then nothing can be read or synchronised",
                self.config.path,
            )
        if connect:
            await defer.DeferredList(
                [
                    defer.Deferred.fromCoroutine(self.connect_profile(p))
                    for p in self.config.profiles.values()
                ]
            )

    def _lock_exclusive_files(self) -> None:
        """Lock the files plugins need for themselves (``exclusive_files()``, optional):
        a second daemon on the same SQLite database refuses to start."""
        for name, plugin in self.plugins.items():
            files: Iterable[Path] = ()
            if hasattr(plugin, "exclusive_files"):
                files = plugin.exclusive_files()
            for path in files:
                try:
                    self._exclusive.acquire(Path(path), self.config.socket_path)
                except FileInUse as error:
                    self._exclusive.release()
                    raise BridgeError("conflict", str(error)) from None
                log.debug("plugin %s: %s locked", name, path)

    async def connect_profile(self, profile: ProfileConfig) -> ProfileClient | None:
        """Start the connection of one profile, which keeps trying until it succeeds;
        wait for the outcome of its first attempt: the client if it connected, else
        None (it goes on trying in the background)."""
        if profile.name in self.connections:
            client = self.connections[profile.name]
            return client if client.xmpp.is_connected else None
        pubsub_handler = self.xep_0060.make_client_handler()
        log.info(
            "profile %s: connecting as %s to %s:%d",
            profile.name,
            profile.jid.full(),
            profile.host,
            profile.port,
        )
        try:
            xmpp = start_client(
                profile.jid,
                profile.password,
                profile.host,
                profile.port,
                tls=str(profile.tls),
                tls_ca=str(profile.tls_ca) if profile.tls_ca else None,
                handlers=[pubsub_handler, AvailablePresence()],
            )
        except ValueError as error:
            log.error("profile %s: cannot connect: %s", profile.name, error)
            return None
        client = ProfileClient(profile.name, xmpp, pubsub_handler)
        pubsub_handler.client = client
        self.connections[profile.name] = client
        first_outcome: defer.Deferred[None] = defer.Deferred()
        watcher = _ConnectionWatcher(self, client, first_outcome)
        xmpp.observe(watcher)
        await first_outcome
        return client if xmpp.is_connected else None

    async def _notify_connected(self, client: ProfileClient) -> None:
        """Call every plugin's ``profile_connected`` (on connection and reconnection)."""
        for name, plugin in self.plugins.items():
            if hasattr(plugin, "profile_connected"):
                try:
                    await as_deferred(plugin.profile_connected, client)
                except Exception as error:
                    if kind_of(error) == "internal":  # a bug: the traceback says where
                        log.exception("plugin %s failed on connection of %s", name, client.profile)
                    else:  # a known failure (no database, say): one line
                        log.error(
                            "plugin %s, on connection of %s: %s",
                            name,
                            client.profile,
                            describe(error),
                        )

    async def stop(self) -> None:
        self._stopping = True
        for name, plugin in reversed(list(self.plugins.items())):
            if hasattr(plugin, "stop"):
                try:
                    await as_deferred(plugin.stop)
                except Exception:
                    log.exception("plugin %s failed to stop", name)
        connections = list(self.connections.values())
        self.clients.clear()  # first: a disconnection we asked for is no loss
        self.connections.clear()
        for client in connections:
            await disconnect_client(client.xmpp)
        await as_deferred(self.bridge.stop)
        self._exclusive.release()

    @property
    def xep_0060(self) -> XEP_0060:
        return self.plugins["XEP-0060"]

    # --- bridge methods

    def status(self) -> dict[str, Any]:
        """What the daemon is doing (``daemon_status``): version, PID, start time and
        uptime, configuration file, control socket, log levels, plugins, and each
        profile's connection."""
        now = time.time()
        profiles = []
        for name, profile in self.config.profiles.items():
            connection = self.connections.get(name)
            row: dict[str, Any] = {"profile": name, "jid": profile.jid.full()}
            row["server"] = f"{profile.host}:{profile.port}"
            if connection is None:
                row.update(state="not_started", error=None, failures=0, next_retry=None)
            else:
                row.update(connection.xmpp.status.to_json())
                if connection.xmpp.is_connected:
                    row["connected_as"] = connection.jid.full()
            profiles.append(row)
        return {
            "version": daemon_version(),
            "pid": os.getpid(),
            "started": datetime.fromtimestamp(self.started_at, UTC).isoformat(),
            "uptime": round(now - self.started_at, 3),
            "now": datetime.fromtimestamp(now, UTC).isoformat(),
            "config": str(self.config.path),
            "config_exists": self.config.path.exists(),
            "socket": str(self.config.socket_path),
            "log_level": self.log_level,
            "plugins": list(self.plugins),
            "profiles": profiles,
        }

    def _bridge_daemon_status(self) -> dict[str, Any]:
        return self.status()

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
        try:
            arguments = items_arguments(service, node, max_items, item_ids, rsm)
        except (IndexError, UnicodeError):  # what Twisted's JID parser raises for "a..b"
            raise BridgeError("bad_request", f"service: {service!r} is not a valid JID") from None
        if not arguments.node:
            raise BridgeError("bad_request", "node: must not be empty")
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


def describe_connection(xmpp: ReconnectingClient) -> str:
    """Where a client's connection stands, in one line ("failed: ...; next try in 5 s")."""
    status = xmpp.status
    if status.state is ConnectionState.CONNECTED:
        return f"connected as {xmpp.jid.full()}"
    text = status.state.value
    if status.state is ConnectionState.CONNECTING and status.error:
        text += f" (the last attempt failed: {status.error})"
    elif status.error:
        text += f": {status.error}"
    if status.next_retry is not None:
        text += f"; next try in {max(0, round(status.next_retry - time.time()))} s"
    return text


class _ConnectionWatcher:
    """Follows one profile's connection: logs each change, adds the client to the
    daemon's clients at its first connection and tells plugins of every connection."""

    def __init__(
        self, daemon: Daemon, client: ProfileClient, first_outcome: defer.Deferred[None]
    ) -> None:
        self.daemon = daemon
        self.client = client
        self.first_outcome = first_outcome
        self.last_error: str | None = None
        self.ever_connected = False

    def __call__(self, xmpp: ReconnectingClient) -> None:
        status = xmpp.status
        if status.state is ConnectionState.STOPPED:
            self._first_outcome_known()
            return
        if self.daemon._stopping or self.daemon.connections.get(self.client.profile) is not (
            self.client
        ):
            return
        profile = self.client.profile
        if status.state is ConnectionState.CONNECTED:
            self.last_error = None
            if not self.ever_connected:
                self.ever_connected = True
                self.daemon.clients[profile] = self.client
                log.info("profile %s connected as %s", profile, xmpp.jid.full())
            else:
                log.info("profile %s reconnected", profile)
            notified = defer.Deferred.fromCoroutine(self.daemon._notify_connected(self.client))
            # the first connection is known once plugins have heard of it
            notified.addBoth(lambda __: self._first_outcome_known())
        elif status.state in (ConnectionState.FAILED, ConnectionState.DISCONNECTED):
            retry = (
                f"; next try in {max(0, round(status.next_retry - time.time()))} s"
                if status.next_retry is not None
                else ""
            )
            if status.state is ConnectionState.DISCONNECTED:
                log.warning("profile %s: %s%s", profile, status.error, retry)
            elif status.error != self.last_error:
                log.warning("profile %s: cannot connect: %s%s", profile, status.error, retry)
            else:
                log.debug("profile %s: cannot connect: %s%s", profile, status.error, retry)
            self.last_error = status.error
            self._first_outcome_known()

    def _first_outcome_known(self) -> None:
        if not self.first_outcome.called:
            self.first_outcome.callback(None)
