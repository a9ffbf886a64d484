"""Requests made while the profile's stream is down fail at once as transient
(NotConnected): a sync asking for a page then is redone by the next read after the
reconnection, and a bridge read is an ``unavailable`` error, not an internal one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID

from libervia_cache.backend.daemon import Daemon
from libervia_cache.errors import BridgeError
from libervia_cache.storage import SyncState
from tests.harness.daemon import cache_of, sync_of
from tests.integration.conftest import DaemonFactory
from tests.integration.test_faults_connection import (
    MICROBLOG,
    RECONNECT_TIMEOUT,
    make_node,
    within,
)
from tests.servers.base import XMPPServer
from tests.servers.publisher import Publisher, connect_publisher

#: small pages: a node of a dozen items takes several
pytestmark = pytest.mark.daemon_options(sync_page_size=5)


class HeldRequest:
    """Holds the sync's page request number ``at`` before it is sent, until released."""

    def __init__(self, daemon: Daemon, at: int) -> None:
        self.xep_0060 = daemon.xep_0060
        self.original = daemon.xep_0060.get_items_from_network
        self.at = at
        self.pages = 0
        self.reached: defer.Deferred[None] = defer.Deferred()
        self.release: defer.Deferred[None] = defer.Deferred()
        self.xep_0060.get_items_from_network = self._get_items  # type: ignore[method-assign]

    def _get_items(self, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        if kwargs.get("rsm_request") is None:
            return self.original(*args, **kwargs)
        self.pages += 1
        if self.pages != self.at:
            return self.original(*args, **kwargs)

        async def held() -> Any:
            self.reached.callback(None)
            await self.release
            return await self.original(*args, **kwargs)

        return defer.Deferred.fromCoroutine(held())

    def remove(self) -> None:
        self.xep_0060.get_items_from_network = self.original  # type: ignore[method-assign]


async def test_a_page_asked_while_the_stream_is_down_lets_the_next_read_resync_after_reconnection(
    daemon: Daemon,
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    ids = await make_node(publisher, service, node, 12)
    store = cache_of(daemon).store_access.require()
    client = daemon.get_client("bob")
    gate = HeldRequest(daemon, at=2 if xmpp_server.quirks["rsm"] else 1)
    await daemon.xep_0060.get_items(client, service, node)
    await gate.reached
    lost = client.xmpp.when_disconnected()
    client.xmpp.xmlstream.transport.abortConnection()
    await within(lost, 10)
    sync = sync_of(daemon, service, node)
    assert sync is not None
    gate.release.callback(None)  # the page is asked for on a stream that is gone
    await within(sync.wait(), 30)
    gate.remove()
    node_info = await store.get_node("bob", service.full(), node)
    assert node_info is not None and node_info.sync_state is not SyncState.COMPLETED
    assert await store.count_items(node_info.id) == 0

    await within(client.xmpp.when_connected(), RECONNECT_TIMEOUT)
    items, metadata = await daemon.xep_0060.get_items(client, service, node)
    assert metadata["cached"] is False and [i["id"] for i in items] == ids
    sync = sync_of(daemon, service, node)
    # fails today: the node is ERROR ("'NoneType' object has no attribute '_callLater'")
    assert sync is not None, f"not resynchronised: {node_info.sync_state}"


async def test_a_bridge_read_while_the_server_is_gone_is_an_unavailable_error_not_internal(
    private_server: XMPPServer,
    make_daemon: DaemonFactory,
    fresh_node: Callable[..., str],
) -> None:
    service = JID(private_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    alice = await connect_publisher(private_server, "alice", "publisher")
    try:
        await make_node(alice, service, node, 2)
    finally:
        await alice.close()
    daemon = await make_daemon(server=private_server)
    try:
        client = daemon.get_client("bob")
        daemon.xep_0060.iq_timeout = 3
        lost = client.xmpp.when_disconnected()
        private_server.stop()
        await within(lost, 30)
        with pytest.raises(BridgeError) as failed:
            await daemon.bridge.dispatch("ps_items_get", {"service": service.full(), "node": node})
        # fails today: AttributeError, reported as "internal" over the socket
        assert failed.value.kind in ("unavailable", "timeout"), failed.value
    finally:
        await within(defer.Deferred.fromCoroutine(make_daemon.stop(daemon)), 30)
