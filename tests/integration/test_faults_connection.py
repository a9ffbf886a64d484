"""The connection to the server drops in the middle of a sync, or the server goes away:
the node is never served half-synced, the daemon stays up, reconnects by itself and the
next read synchronises the node again; reads without a server fail cleanly, in time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.words.protocols.jabber.jid import JID

from libervia_cache.backend.daemon import Daemon
from libervia_cache.plugin.sync import Outcome
from libervia_cache.storage import SyncState
from tests.harness.daemon import atom_entry, cache_of, sync_of
from tests.integration.conftest import DaemonFactory, synchronise, synchronised
from tests.integration.test_sync_lifecycle import assert_cache_equals_server
from tests.servers.base import XMPPServer
from tests.servers.publisher import Publisher, connect_publisher

MICROBLOG = "urn:xmpp:microblog:0"
#: seconds allowed for the daemon to reconnect (its first retry comes after about 1 s)
RECONNECT_TIMEOUT = 30

#: small pages: a node of a dozen items takes several
pytestmark = pytest.mark.daemon_options(sync_page_size=5)


class CutInFlight:
    """Cuts the stream of the sync's page request number ``at`` right after sending it:
    the request is in flight (its answer cannot have been read in the same reactor turn)
    when the connection goes."""

    def __init__(self, daemon: Daemon, at: int) -> None:
        self.xep_0060 = daemon.xep_0060
        self.original = daemon.xep_0060.get_items_from_network
        self.at = at
        self.pages = 0
        self.cut: defer.Deferred[None] = defer.Deferred()
        self.xep_0060.get_items_from_network = self._get_items  # type: ignore[method-assign]

    def _get_items(self, client: Any, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        if kwargs.get("rsm_request") is None:  # not a sync page
            return self.original(client, *args, **kwargs)
        self.pages += 1
        d = self.original(client, *args, **kwargs)
        if self.pages == self.at:
            client.xmpp.xmlstream.transport.abortConnection()
            self.cut.callback(None)
        return d

    def remove(self) -> None:
        self.xep_0060.get_items_from_network = self.original  # type: ignore[method-assign]


def within(d: defer.Deferred[Any], seconds: float) -> defer.Deferred[Any]:
    return d.addTimeout(seconds, reactor)


async def make_node(publisher: Publisher, service: JID, node: str, count: int) -> list[str]:
    await publisher.create_node(service, node, {"pubsub#access_model": "open"})
    ids = [f"i{n:02d}" for n in range(count)]
    await publisher.publish(service, node, [(i, atom_entry(i, i)) for i in ids], depth=1)
    return ids


async def test_a_stream_cut_mid_sync_leaves_the_node_unserved_until_resynced_after_reconnection(
    daemon: Daemon, publisher: Publisher, xmpp_server: XMPPServer, fresh_node: Callable[..., str]
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    ids = await make_node(publisher, service, node, 12)
    cache = cache_of(daemon)
    store = cache.store_access.require()
    client = daemon.get_client("bob")
    # a page is stored first where the server pages (Prosody sends one page)
    gate = CutInFlight(daemon, at=2 if xmpp_server.quirks["rsm"] else 1)
    lost = client.xmpp.when_disconnected()
    items, metadata = await daemon.xep_0060.get_items(client, service, node)
    assert metadata["cached"] is False and [i["id"] for i in items] == ids
    sync = sync_of(daemon, service, node)
    assert sync is not None
    await within(gate.cut, 10)
    await within(lost, 10)
    await within(sync.wait(), 30)
    gate.remove()
    assert gate.pages == gate.at, "the sync stopped at the cut"
    node_info = await store.get_node("bob", service.full(), node)
    assert node_info is not None
    assert node_info.sync_state in (None, SyncState.ERROR)
    assert await store.count_items(node_info.id) == 0
    assert await cache.get_items_from_cache(client, service, node) is None

    await within(client.xmpp.when_connected(), RECONNECT_TIMEOUT)
    items, metadata = await daemon.xep_0060.get_items(client, service, node)
    assert metadata["cached"] is False and [i["id"] for i in items] == ids
    sync = sync_of(daemon, service, node)
    assert sync is not None, "the read after reconnection synchronises the node again"
    await within(sync.wait(), 30)
    await assert_cache_equals_server(daemon, publisher, service, node)
    items, metadata = await daemon.xep_0060.get_items(client, service, node)
    assert metadata["cached"] is True and [i["id"] for i in items] == ids


async def test_a_server_gone_leaves_the_daemon_up_serving_synced_nodes_and_failing_reads_in_time(
    private_server: XMPPServer, make_daemon: DaemonFactory, fresh_node: Callable[..., str]
) -> None:
    service = JID(private_server.pubsub_service)
    synced, other = fresh_node(MICROBLOG), fresh_node(MICROBLOG)
    publisher = await connect_publisher(private_server, "alice", "publisher")
    try:
        synced_ids = await make_node(publisher, service, synced, 4)
        await make_node(publisher, service, other, 3)
    finally:
        await publisher.close()
    daemon = await make_daemon(server=private_server)
    try:
        store = cache_of(daemon).store_access.require()
        client = daemon.get_client("bob")
        await synchronised(daemon, service, synced)
        daemon.xep_0060.iq_timeout = 3
        lost = client.xmpp.when_disconnected()
        private_server.stop()
        await within(lost, 30)

        # the daemon is up: its control socket answers, the cache works offline
        assert await daemon.bridge.dispatch("ping", {}) == "pong"
        status = await daemon.bridge.dispatch("ps_cache_status", {})
        assert [row["state"] for row in status["nodes"]] == ["COMPLETED"]
        items, metadata = await daemon.xep_0060.get_items(client, service, synced)
        assert metadata["cached"] is True and [i["id"] for i in items] == synced_ids
        # what needs the server fails, within the IQ timeout (not a hang)
        for node, extra in ((other, {}), (synced, {"use_cache": False})):
            started = reactor.seconds()  # type: ignore[attr-defined]
            read = daemon.xep_0060.get_items(client, service, node, extra=extra)
            # any error for now: a request on a stream that is down fails with an
            # AttributeError from tx_xmpp, not a connection error (reported on issue 7)
            with pytest.raises(Exception):  # noqa: B017
                await within(read, 2 * daemon.xep_0060.iq_timeout + 5)
            assert reactor.seconds() - started <= daemon.xep_0060.iq_timeout + 1  # type: ignore[attr-defined]
        # an explicit sync fails
        sync = await within(defer.Deferred.fromCoroutine(synchronise(daemon, service, other)), 30)
        assert sync.outcome is not Outcome.COMPLETED and sync.error is not None, sync.outcome
        node_info = await store.get_node("bob", service.full(), other)
        assert node_info is None or node_info.sync_state is not SyncState.COMPLETED
        # still up, still trying to reconnect, the synced node still served
        assert not client.xmpp.is_connected and client.xmpp.factory.continueTrying
        items, metadata = await daemon.xep_0060.get_items(client, service, synced)
        assert metadata["cached"] is True and [i["id"] for i in items] == synced_ids
    finally:
        await within(defer.Deferred.fromCoroutine(make_daemon.stop(daemon)), 30)
