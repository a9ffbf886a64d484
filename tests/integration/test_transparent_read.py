"""The walking skeleton: a read goes to the network, the node is synchronised, the same
read is then answered from the cache with the same items in the same order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from twisted.words.protocols.jabber.jid import JID
from tx_xmpp import rsm

from libervia_cache.backend.daemon import Daemon
from libervia_cache.storage import SyncState
from tests.harness.daemon import atom_entry, cache_of, sync_of
from tests.integration.conftest import synchronised
from tests.servers.base import XMPPServer
from tests.servers.publisher import Publisher

MICROBLOG = "urn:xmpp:microblog:0"


def ids(items: list) -> list[str]:
    return [item["id"] for item in items]


def xml(items: list) -> list[str]:
    return [item.toXml() for item in items]


def without_cached(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metadata.items() if key != "cached"}


async def publish_blog(publisher: Publisher, service: JID, node: str, count: int) -> list[str]:
    await publisher.create_node(service, node, {"pubsub#access_model": "open"})
    return await publisher.publish(
        service,
        node,
        [(f"post-{n:03d}", atom_entry(f"post-{n:03d}", f"Post {n}")) for n in range(count)],
        depth=1,
    )


async def test_a_synced_node_is_answered_from_the_cache_with_the_same_items(
    daemon: Daemon,
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    published = await publish_blog(publisher, service, node, 30)
    client = daemon.get_client("bob")
    xep_0060 = daemon.xep_0060

    items, metadata = await xep_0060.get_items(client, service, node)
    assert metadata["cached"] is False
    assert ids(items) == published

    sync = sync_of(daemon, service, node)
    assert sync is not None, "reading an unknown microblog node starts its synchronisation"
    await sync.wait()
    node_info = await cache_of(daemon).store_access.require().get_node("bob", service.full(), node)
    assert node_info is not None and node_info.sync_state is SyncState.COMPLETED

    cached_items, cached_metadata = await xep_0060.get_items(client, service, node)
    assert cached_metadata["cached"] is True
    assert ids(cached_items) == published
    assert xml(cached_items) == xml(items)

    network_items, network_metadata = await xep_0060.get_items(
        client, service, node, max_items=5, extra={"use_cache": False}
    )
    cached_items, cached_metadata = await xep_0060.get_items(client, service, node, max_items=5)
    assert network_metadata["cached"] is False and cached_metadata["cached"] is True
    assert ids(cached_items) == ids(network_items) == published[-5:]


async def test_rsm_requests_are_answered_from_the_cache_as_the_server_answers_them(
    daemon: Daemon,
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    published = await publish_blog(publisher, service, node, 25)
    client = daemon.get_client("bob")
    await synchronised(daemon, service, node)

    if not xmpp_server.quirks["rsm"]:
        # the server ignores RSM: whatever the page asked, every item and no RSM data;
        # the cache answers each request exactly as the server does
        for request in (
            rsm.RSMRequest(max_=10),
            rsm.RSMRequest(max_=10, after=published[9]),
            rsm.RSMRequest(max_=10, before=""),
        ):
            network, network_metadata = await daemon.xep_0060.get_items(
                client, service, node, rsm_request=request, extra={"use_cache": False}
            )
            cached, cached_metadata = await daemon.xep_0060.get_items(
                client, service, node, rsm_request=request
            )
            assert network_metadata["cached"] is False and cached_metadata["cached"] is True
            assert ids(network) == published
            assert xml(cached) == xml(network)
            assert without_cached(cached_metadata) == without_cached(network_metadata)
            assert "rsm" not in cached_metadata and cached_metadata["complete"] is True
        return

    # RSM pages carry the server's keys, index and count; where the keys are the
    # server's own (ejabberd's timestamps), the cache learns those of a page the first
    # time the network answers it, and answers it from then on
    __, server_first = await daemon.xep_0060.get_items(
        client, service, node, rsm_request=rsm.RSMRequest(max_=10), extra={"use_cache": False}
    )
    for request in (
        rsm.RSMRequest(max_=10),
        rsm.RSMRequest(max_=10, after=server_first["rsm"]["last"]),
        rsm.RSMRequest(max_=10, before=""),
    ):
        network, network_metadata = await daemon.xep_0060.get_items(
            client, service, node, rsm_request=request, extra={"use_cache": False}
        )
        cached, cached_metadata = await daemon.xep_0060.get_items(
            client, service, node, rsm_request=request
        )
        if not cached_metadata["cached"]:
            assert not xmpp_server.quirks["rsm_keys_are_item_ids"]
            cached, cached_metadata = await daemon.xep_0060.get_items(
                client, service, node, rsm_request=request
            )
        assert cached_metadata["cached"] is True
        assert xml(cached) == xml(network)
        assert without_cached(cached_metadata) == without_cached(network_metadata)
        assert cached_metadata["rsm"]["count"] == 25
    assert ids(cached) == published[15:]
    assert cached_metadata["complete"] is True


@pytest.mark.daemon_options(strategy="no_cache")
async def test_no_cache_strategy_always_asks_the_network(
    daemon: Daemon,
    xmpp_server: XMPPServer,
    publisher: Publisher,
    fresh_node: Callable[..., str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await publish_blog(publisher, service, node, 3)
    client = daemon.get_client("bob")
    for __ in range(2):
        __, metadata = await daemon.xep_0060.get_items(client, service, node)
        assert metadata["cached"] is False
    assert sync_of(daemon, service, node) is None
