"""Changes a server makes without telling its subscribers, and how the cache catches up.

Prosody drops the oldest items of a full node when a new one is published, with no
event (even with ``notify_retract``), as ejabberd does without ``notify_retract``; a
retraction without ``notify`` sends nothing on Prosody and libervia-pubsub; Prosody
lowers ``max_items`` silently. The cache checks a node a few seconds after a publication
added items to it, and every synced node every ``check_interval`` seconds: each test
waits for that check (never a sleep), then compares cache and server exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID

from libervia_cache.backend.daemon import Daemon
from tests.harness.daemon import AppliedEvents, atom_entry, cache_of, synced
from tests.integration.conftest import synchronised
from tests.servers.base import XMPPServer
from tests.servers.publisher import Publisher

MICROBLOG = "urn:xmpp:microblog:0"


async def cache_ids(daemon: Daemon, service: JID, node: str) -> list[str] | None:
    answer = await cache_of(daemon).get_items_from_cache(daemon.get_client("bob"), service, node)
    return None if answer is None else [i["id"] for i in answer[0]]


async def server_ids(daemon: Daemon, service: JID, node: str) -> list[str]:
    items, __ = await daemon.xep_0060.get_items_from_network(
        daemon.get_client("bob"), service, node
    )
    return [i["id"] for i in items]


async def checked(daemon: Daemon, service: JID, node: str) -> None:
    """Until the node's next check ended, and the sync it may have started too."""
    cache = cache_of(daemon)
    info = await cache.store_access.require().get_node("bob", service.full(), node)
    assert info is not None
    await cache.freshness.next_check(info.id)
    await synced(daemon, service, node)


async def test_items_a_full_node_drops_silently_are_dropped_after_the_next_check(
    make_daemon: Any,
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await publisher.create_node(
        service, node, {"pubsub#access_model": "open", "pubsub#max_items": "5"}
    )
    await publisher.publish(service, node, [(f"i{n}", atom_entry(f"i{n}", "x")) for n in range(5)])
    daemon = await make_daemon()
    await synchronised(daemon, service, node)
    applied = AppliedEvents(daemon)
    waiting = applied.wait_for_items(node, ["n0", "n1", "n2"], "the publications")
    new = [(f"n{n}", atom_entry(f"n{n}", "y")) for n in range(3)]
    await publisher.publish(service, node, new, depth=1)
    await waiting
    await checked(daemon, service, node)
    expected = await server_ids(daemon, service, node)
    assert len(expected) == 5
    assert await cache_ids(daemon, service, node) == expected
    status = await daemon.bridge.dispatch("ps_cache_status", {"node": node})
    assert status["nodes"][0]["last_checked"] is not None


async def test_a_retraction_without_notification_is_seen_at_the_periodic_check(
    make_daemon: Any,
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await publisher.create_node(service, node, {"pubsub#access_model": "open"})
    await publisher.publish(service, node, [(f"i{n}", atom_entry(f"i{n}", "x")) for n in range(6)])
    daemon = await make_daemon(check_interval=1)
    await synchronised(daemon, service, node)
    await publisher.retract(service, node, ["i5"], notify=False)
    await checked(daemon, service, node)
    expected = await server_ids(daemon, service, node)
    assert "i5" not in expected
    assert await cache_ids(daemon, service, node) == expected


async def test_a_lower_max_items_is_followed_whether_the_server_says_it_or_not(
    make_daemon: Any,
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await publisher.create_node(
        service, node, {"pubsub#access_model": "open", "pubsub#notify_config": "1"}
    )
    await publisher.publish(service, node, [(f"i{n}", atom_entry(f"i{n}", "x")) for n in range(6)])
    daemon = await make_daemon(check_interval=1)
    await synchronised(daemon, service, node)
    try:
        await publisher.configure(service, node, {"pubsub#max_items": "3"})
    except StanzaError as error:
        # libervia-pubsub refuses a max_items below the number of items: nothing changed
        assert (xmpp_server.kind, error.condition) == ("libervia-pubsub", "conflict")
        assert await cache_ids(daemon, service, node) == await server_ids(daemon, service, node)
        return
    # a publication after it: ejabberd drops the oldest items then, without an event
    applied = AppliedEvents(daemon)
    waiting = applied.wait_for_items(node, ["marker"], "the publication after configuring")
    await publisher.publish(service, node, [("marker", atom_entry("marker", "m"))])
    await waiting
    await synced(daemon, service, node)
    await checked(daemon, service, node)
    expected = await server_ids(daemon, service, node)
    assert await cache_ids(daemon, service, node) == expected
