"""The test servers work, and behave as their ``quirks`` say (one run per server kind)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from twisted.words.protocols.jabber import error
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from tx_xmpp import rsm

from libervia_cache.backend.clients import (
    ClientConnectionError,
    connect_client,
    disconnect_client,
)
from tests.servers.base import XMPPServer, free_port
from tests.servers.publisher import Publisher

pytestmark = pytest.mark.integration

NS_TEST = "urn:example:libervia-cache:test"
QUIRK_KEYS = {
    "rsm",
    "rsm_advertised",
    "rsm_keys_are_item_ids",
    "rsm_index",
    "rsm_count",
    "items_by_id_order",
    "max_items_order",
    "retract_notify_needed",
    "delete_event",
    "purge_event",
    "owner_events_without_subscription",
    "unknown_id_fails",
    "auto_create_on_publish",
    "order_by",
    "republish_moves_to_newest",
    "disco_items_order",
    "rsm_unknown_key",
    "rsm_last_page_index",
}


def payload(n: int | str) -> str:
    return f"<entry xmlns='{NS_TEST}'><title>item {n}</title></entry>"


def ids_of(items: list[domish.Element]) -> list[str]:
    return [item["id"] for item in items]


async def make_node(publisher: Publisher, server: XMPPServer, node: str, count: int) -> list[str]:
    """Create ``node`` and publish ``count`` items in order; return their ids."""
    await publisher.create_node(server.pubsub_service, node)
    ids = [f"item-{n:03d}" for n in range(count)]
    await publisher.publish(server.pubsub_service, node, [(i, payload(i)) for i in ids], depth=1)
    return ids


async def barrier(publisher: Publisher, server: XMPPServer, node: str) -> None:
    """A round trip to the service: whatever it sent us before is received by now."""
    await publisher.get_items(server.pubsub_service, node, max_items=1)


def test_quirks_are_documented(xmpp_server: XMPPServer) -> None:
    assert set(xmpp_server.quirks) >= QUIRK_KEYS
    assert xmpp_server.startup_time > 0


async def test_accounts_connect_with_verified_tls(
    xmpp_server: XMPPServer, connect_user: Callable[[str], Coroutine[Any, Any, Publisher]]
) -> None:
    for user in ("alice", "bob", "carol", "dave"):
        client = await connect_user(user)
        assert client.jid.userhost() == xmpp_server.jid(user)


async def test_wrong_password_is_a_clear_error(xmpp_server: XMPPServer) -> None:
    with pytest.raises(ClientConnectionError, match="authentication failed"):
        await connect_client(
            JID(xmpp_server.jid("alice")),
            "wrong",
            xmpp_server.host,
            xmpp_server.c2s_port,
            tls_ca=str(xmpp_server.ca_file),
            timeout=10,
        )


async def test_untrusted_certificate_is_a_tls_error(xmpp_server: XMPPServer) -> None:
    with pytest.raises(ClientConnectionError, match="TLS"):
        await connect_client(
            JID(xmpp_server.jid("alice")),
            xmpp_server.accounts["alice"],
            xmpp_server.host,
            xmpp_server.c2s_port,
            tls="required",
            timeout=10,
        )


async def test_tls_off_connects_in_clear(xmpp_server: XMPPServer) -> None:
    client = await connect_client(
        JID(xmpp_server.jid("bob")),
        xmpp_server.accounts["bob"],
        xmpp_server.host,
        xmpp_server.c2s_port,
        tls="off",
        timeout=10,
    )
    try:
        assert client.is_connected
        assert not client.xmlstream.transport.TLS
    finally:
        await disconnect_client(client)


async def test_publish_and_read_back_without_rsm(
    xmpp_server: XMPPServer, publisher: Publisher, fresh_node: Callable[[], str]
) -> None:
    node = fresh_node()
    ids = await make_node(publisher, xmpp_server, node, 30)
    items, _ = await publisher.get_items(xmpp_server.pubsub_service, node)
    assert ids_of(items) == ids
    assert items[0].firstChildElement().uri == NS_TEST


async def test_max_items_gives_the_newest_oldest_first(
    xmpp_server: XMPPServer, publisher: Publisher, fresh_node: Callable[[], str]
) -> None:
    assert xmpp_server.quirks["max_items_order"] == "oldest_first"
    node = fresh_node()
    ids = await make_node(publisher, xmpp_server, node, 30)
    items, _ = await publisher.get_items(xmpp_server.pubsub_service, node, max_items=5)
    assert ids_of(items) == ids[-5:]


async def test_rsm_pages(
    xmpp_server: XMPPServer, publisher: Publisher, fresh_node: Callable[[], str]
) -> None:
    quirks = xmpp_server.quirks
    node = fresh_node()
    ids = await make_node(publisher, xmpp_server, node, 30)
    items, response = await publisher.get_items(
        xmpp_server.pubsub_service, node, rsm_request=rsm.RSMRequest(max_=10)
    )
    if not quirks["rsm"]:
        assert ids_of(items) == ids  # RSM ignored
        assert response is None
        return
    assert ids_of(items) == ids[:10]
    assert response is not None
    if quirks["rsm_count"]:
        assert int(response.count) == 30
    assert (response.first == ids[0] and response.last == ids[9]) == quirks["rsm_keys_are_item_ids"]
    items, response = await publisher.get_items(
        xmpp_server.pubsub_service, node, rsm_request=rsm.RSMRequest(max_=10, after=response.last)
    )
    assert ids_of(items) == ids[10:20]
    all_items = await publisher.get_all_items(xmpp_server.pubsub_service, node, page=7)
    assert ids_of(all_items) == ids


async def test_rsm_index(
    xmpp_server: XMPPServer, publisher: Publisher, fresh_node: Callable[[], str]
) -> None:
    node = fresh_node()
    ids = await make_node(publisher, xmpp_server, node, 30)
    request = rsm.RSMRequest(max_=5, index=10)
    if xmpp_server.quirks["rsm_index"]:
        items, _ = await publisher.get_items(xmpp_server.pubsub_service, node, rsm_request=request)
        assert ids_of(items) == ids[10:15]
    elif xmpp_server.quirks["rsm"]:
        with pytest.raises(error.StanzaError):
            await publisher.get_items(xmpp_server.pubsub_service, node, rsm_request=request)


async def test_items_by_id_order(
    xmpp_server: XMPPServer, publisher: Publisher, fresh_node: Callable[[], str]
) -> None:
    node = fresh_node()
    ids = await make_node(publisher, xmpp_server, node, 30)
    asked = [ids[5], ids[2], ids[8]]
    items, _ = await publisher.get_items(xmpp_server.pubsub_service, node, item_ids=asked)
    expected = {"creation": [ids[2], ids[5], ids[8]], "asked": asked}
    assert ids_of(items) == expected[xmpp_server.quirks["items_by_id_order"]]


async def test_unknown_item_id(
    xmpp_server: XMPPServer, publisher: Publisher, fresh_node: Callable[[], str]
) -> None:
    node = fresh_node()
    ids = await make_node(publisher, xmpp_server, node, 3)
    request = publisher.get_items(xmpp_server.pubsub_service, node, item_ids=[ids[1], "nope"])
    if xmpp_server.quirks["unknown_id_fails"]:
        with pytest.raises(error.StanzaError):
            await request
    else:
        items, _ = await request
        assert ids_of(items) == [ids[1]]


async def test_republish_order_and_order_by_creation(
    xmpp_server: XMPPServer, publisher: Publisher, fresh_node: Callable[[], str]
) -> None:
    service = xmpp_server.pubsub_service
    node = fresh_node()
    ids = await make_node(publisher, xmpp_server, node, 3)
    await publisher.publish(service, node, [(ids[0], payload("again"))])
    by_modification = [ids[1], ids[2], ids[0]]
    default = by_modification if xmpp_server.quirks["republish_moves_to_newest"] else ids
    items, _ = await publisher.get_items(service, node)
    assert ids_of(items) == default
    items, _ = await publisher.get_items(service, node, max_items=2)
    assert ids_of(items) == default[-2:]
    items, _ = await publisher.get_items(service, node, order_by=["creation"])
    assert ids_of(items) == (ids if xmpp_server.quirks["order_by"] else default)


async def test_disco_items_list_item_ids(
    xmpp_server: XMPPServer, publisher: Publisher, fresh_node: Callable[[], str]
) -> None:
    node = fresh_node()
    ids = await make_node(publisher, xmpp_server, node, 3)
    await publisher.publish(xmpp_server.pubsub_service, node, [(ids[0], payload("again"))])
    expected = {
        "creation": ids,
        "modification": [ids[1], ids[2], ids[0]],
        "newest_first": [ids[0], ids[2], ids[1]],
    }
    listed = await publisher.disco_item_ids(xmpp_server.pubsub_service, node)
    assert listed == expected[xmpp_server.quirks["disco_items_order"]]


async def test_rsm_edge_cases(
    xmpp_server: XMPPServer, publisher: Publisher, fresh_node: Callable[[], str]
) -> None:
    quirks = xmpp_server.quirks
    service = xmpp_server.pubsub_service
    node = fresh_node()
    ids = await make_node(publisher, xmpp_server, node, 30)
    if not quirks["rsm"]:
        # Prosody: RSM ignored, every item comes back and no <set/> in the answer
        items, response = await publisher.get_items(
            service, node, rsm_request=rsm.RSMRequest(max_=0)
        )
        assert ids_of(items) == ids and response is None
        return
    # max=0: count only
    items, response = await publisher.get_items(service, node, rsm_request=rsm.RSMRequest(max_=0))
    assert items == [] and response is not None and int(response.count) == 30
    # an unknown after key
    items, _ = await publisher.get_items(
        service, node, rsm_request=rsm.RSMRequest(max_=5, after="no-such-key")
    )
    assert items == [] if quirks["rsm_unknown_key"] == "empty" else items
    # last page (before="") with max larger than the node
    items, response = await publisher.get_items(
        service, node, rsm_request=rsm.RSMRequest(max_=50, before="")
    )
    assert ids_of(items) == ids
    assert response is not None
    expected_index = 30 - 50 if quirks["rsm_last_page_index"] == "count-max" else 0
    assert int(response.index) == expected_index


async def test_auto_create_on_publish(
    xmpp_server: XMPPServer, publisher: Publisher, fresh_node: Callable[[], str]
) -> None:
    publishing = publisher.publish(xmpp_server.pubsub_service, fresh_node(), [("a", payload(1))])
    if xmpp_server.quirks["auto_create_on_publish"]:
        await publishing
    else:
        with pytest.raises(error.StanzaError):
            await publishing


async def test_rsm_advertised(xmpp_server: XMPPServer, publisher: Publisher) -> None:
    from tx_xmpp import disco

    info = await disco.DiscoClientProtocol.requestInfo(publisher, JID(xmpp_server.pubsub_service))
    advertised = any(feature.endswith("rsm") for feature in info.features)
    assert advertised == xmpp_server.quirks["rsm_advertised"]


async def test_events_purge_and_delete(
    xmpp_server: XMPPServer,
    publisher: Publisher,
    connect_user: Callable[[str], Coroutine[Any, Any, Publisher]],
    fresh_node: Callable[[], str],
) -> None:
    quirks = xmpp_server.quirks
    service = xmpp_server.pubsub_service
    node = fresh_node()
    await publisher.create_node(service, node)
    subscriber = await connect_user("bob")
    await subscriber.subscribe_node(service, node)

    # publish: the subscriber gets the item, the owner only if the server says so
    await publisher.publish(service, node, [("a", payload("a")), ("b", payload("b"))], depth=1)
    await subscriber.wait_for_event(lambda e: e.node == node and "b" in e.item_ids)
    await barrier(publisher, xmpp_server, node)
    owner_got_events = any(e.node == node and e.kind == "items" for e in publisher.events)
    assert owner_got_events == quirks["owner_events_without_subscription"]

    # retract without notify, then with: events arrive in order on one stream
    await publisher.retract(service, node, ["a"], notify=False)
    await publisher.retract(service, node, ["b"], notify=True)
    await subscriber.wait_for_event(lambda e: e.node == node and "b" in e.retracted_ids)
    silent = not any("a" in e.retracted_ids for e in subscriber.events)
    assert silent == quirks["retract_notify_needed"]

    # purge
    await publisher.publish(service, node, [("c", payload("c"))])
    await publisher.purge(service, node)
    if quirks["purge_event"]:
        await subscriber.wait_for_event(lambda e: e.node == node and e.kind == "purge")
    items, _ = await publisher.get_items(service, node)
    assert items == []

    # delete
    await publisher.delete_node(service, node)
    if quirks["delete_event"]:
        await subscriber.wait_for_event(lambda e: e.node == node and e.kind == "delete")
    with pytest.raises(error.StanzaError):
        await publisher.get_items(service, node)


async def test_publish_many_items_is_pipelined(
    xmpp_server: XMPPServer, publisher: Publisher, fresh_node: Callable[[], str]
) -> None:
    service = xmpp_server.pubsub_service
    node = fresh_node()
    await publisher.create_node(service, node)
    ids = await publisher.publish(service, node, [(f"n{i}", payload(i)) for i in range(300)])
    assert len(ids) == 300
    items = await publisher.get_all_items(service, node)
    assert sorted(ids_of(items)) == sorted(ids)


async def test_tls_optional_uses_starttls_when_offered(xmpp_server: XMPPServer) -> None:
    client = await connect_client(
        JID(xmpp_server.jid("carol")),
        xmpp_server.accounts["carol"],
        xmpp_server.host,
        xmpp_server.c2s_port,
        tls="optional",
        tls_ca=str(xmpp_server.ca_file),
        timeout=10,
    )
    try:
        assert client.xmlstream.transport.TLS
    finally:
        await disconnect_client(client)


async def test_client_reconnects_after_connection_loss(xmpp_server: XMPPServer) -> None:
    client = await connect_client(
        JID(xmpp_server.jid("dave") + "/reconnect"),
        xmpp_server.accounts["dave"],
        xmpp_server.host,
        xmpp_server.c2s_port,
        tls_ca=str(xmpp_server.ca_file),
        timeout=10,
        max_retry_delay=2,
    )
    try:
        first_stream = client.xmlstream
        lost = client.when_disconnected()
        first_stream.transport.abortConnection()
        await lost
        assert not client.is_connected
        await client.when_connected()
        assert client.is_connected
        assert client.xmlstream is not first_stream
    finally:
        await disconnect_client(client)
    assert not client.is_connected


async def test_connection_refused_is_a_clear_error() -> None:
    with pytest.raises(ClientConnectionError, match="connection refused"):
        await connect_client(JID("alice@localhost"), "pw", "127.0.0.1", free_port(), timeout=10)


async def test_silent_server_times_out() -> None:
    with socket.socket() as listener:  # accepts TCP (kernel backlog) but never speaks
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(ClientConnectionError, match=r"timed out after 0\.5 s"):
            await connect_client(JID("alice@localhost"), "pw", "127.0.0.1", port, timeout=0.5)


async def test_max_items_answers_and_max_items_with_rsm(
    xmpp_server: XMPPServer, publisher: Publisher, fresh_node: Callable[[], str]
) -> None:
    """A ``max_items`` answer carries RSM data on ejabberd only (index count - max, even
    negative); with RSM too, a server honouring RSM answers the RSM request (max_items
    ignored), Prosody the max_items one."""
    quirks = xmpp_server.quirks
    service = xmpp_server.pubsub_service
    node = fresh_node()
    ids = await make_node(publisher, xmpp_server, node, 8)
    items, response = await publisher.get_items(service, node, max_items=3)
    assert ids_of(items) == ids[-3:]
    assert (response is not None) == quirks["max_items_rsm"]
    if response is not None:
        assert (int(response.index), int(response.count)) == (5, 8)
        __, response = await publisher.get_items(service, node, max_items=20)
        assert response is not None and int(response.index) == 8 - 20
    items, response = await publisher.get_items(
        service, node, max_items=3, rsm_request=rsm.RSMRequest(max_=2)
    )
    assert ids_of(items) == (ids[:2] if quirks["rsm"] else ids[-3:])


@pytest.mark.parametrize("xmpp_server", ["ejabberd"], indirect=True)
async def test_ejabberd_replays_the_last_published_item_to_a_new_subscriber(
    xmpp_server: XMPPServer,
    publisher: Publisher,
    fresh_node: Callable[[], str],
    connect_user: Callable[[str], Any],
) -> None:
    """ejabberd sends the last *published* item (a republished old one included) to a new
    subscriber, as an ordinary items event, when the node says so
    (``send_last_published_item``, which the test servers' default turns off)."""
    service = xmpp_server.pubsub_service
    node = fresh_node()
    await publisher.create_node(
        service, node, {"pubsub#send_last_published_item": "on_sub_and_presence"}
    )
    ids = [f"item-{n}" for n in range(3)]
    await publisher.publish(service, node, [(i, payload(i)) for i in ids], depth=1)
    await publisher.publish(service, node, [(ids[0], payload("again"))])
    bob = await connect_user("bob")
    await bob.subscribe_node(service, node)
    event = await bob.wait_for_event(lambda e: e.node == node)
    assert event.item_ids == [ids[0]]
    items, __ = await publisher.get_items(service, node)
    assert ids_of(items) == ids  # republished, yet in its first place


async def test_lowering_max_items(
    xmpp_server: XMPPServer, publisher: Publisher, fresh_node: Callable[[], str]
) -> None:
    service = xmpp_server.pubsub_service
    node = fresh_node()
    ids = await make_node(publisher, xmpp_server, node, 6)
    behaviour = xmpp_server.quirks["lowered_max_items"]
    configuring = publisher.configure(service, node, {"pubsub#max_items": "3"})
    if behaviour == "refused":
        with pytest.raises(error.StanzaError):
            await configuring
        return
    await configuring
    items, __ = await publisher.get_items(service, node)
    assert ids_of(items) == (ids if behaviour == "at_next_publication" else ids[-3:])
    await publisher.publish(service, node, [("new", payload("new"))])
    items, __ = await publisher.get_items(service, node)
    assert ids_of(items) == [*ids[-2:], "new"]
