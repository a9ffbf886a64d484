"""Live events keep a synced node equal to the server: publish, republish, retract,
purge, delete, in random sequences, with the daemon online."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from twisted.words.protocols.jabber.jid import JID
from tx_xmpp import pubsub

from libervia_cache.backend.daemon import Daemon
from libervia_cache.plugin import PubsubCache
from libervia_cache.storage import SyncState
from tests.harness.daemon import AppliedEvents, atom_entry, cache_of
from tests.integration.conftest import synchronised
from tests.servers.base import XMPPServer
from tests.servers.publisher import Publisher

MICROBLOG = "urn:xmpp:microblog:0"


async def cache_ids(cache: PubsubCache, daemon: Daemon, service: JID, node: str) -> list[str]:
    answer = await cache.get_items_from_cache(daemon.get_client("bob"), service, node)
    assert answer is not None, "the node is no longer served from the cache"
    return [item["id"] for item in answer[0]]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_publish_republish_retract_purge_keep_the_cache_equal_to_the_server(
    daemon: Daemon,
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
    seed: int,
) -> None:
    rng = random.Random(seed)
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    cache = cache_of(daemon)
    applied = AppliedEvents(daemon)
    await publisher.create_node(service, node, {"pubsub#access_model": "open"})
    await publisher.publish(service, node, [(f"i{n}", atom_entry(f"i{n}", "v0")) for n in range(8)])
    node_info = await synchronised(daemon, service, node)
    assert node_info.subscribed
    republish_moves = xmpp_server.quirks["republish_moves_to_newest"]
    republished = False
    next_id = 8

    for step in range(25):
        existing = await cache_ids(cache, daemon, service, node)
        operation = rng.choice(
            ["publish", "publish", "republish", "retract", "retract"]
            + (["purge"] if step % 9 == 8 else [])
        )
        if operation == "publish" or (operation in ("republish", "retract") and not existing):
            new_ids = [f"i{next_id + n}" for n in range(rng.randint(1, 3))]
            next_id += len(new_ids)
            # one at a time, each event awaited: libervia-pubsub may send the
            # notifications of quick successive publications out of order, and an
            # event carries nothing the cache could order them by
            for item_id in new_ids:
                waiting = applied.wait_for_items(node, [item_id], f"the publication of {item_id}")
                await publisher.publish(service, node, [(item_id, atom_entry(item_id, "v0"))])
                await waiting
        elif operation == "republish":
            item_id = rng.choice(existing)
            republished = True
            waiting = applied.wait_for_items(node, [item_id], f"the republication of {item_id}")
            await publisher.publish(service, node, [(item_id, atom_entry(item_id, f"v{step}"))])
            await waiting
        elif operation == "retract":
            item_id = rng.choice(existing)
            waiting = applied.wait_for_items(node, [item_id], f"the retraction of {item_id}")
            await publisher.retract(service, node, [item_id], notify=True)
            await waiting
        else:
            purges = applied.count(node, pubsub.PurgeEvent)
            await publisher.purge(service, node)
            await applied.wait(
                lambda purges=purges: applied.count(node, pubsub.PurgeEvent) > purges, "the purge"
            )

        server_items = await publisher.get_all_items(service, node)
        cached_items, __ = await cache.get_items_from_cache(  # type: ignore[misc]
            daemon.get_client("bob"), service, node
        )
        server = {i["id"]: i.toXml() for i in server_items}
        cached = {i["id"]: i.toXml() for i in cached_items}
        assert cached == server, f"after {operation} (step {step})"
        if republish_moves or not republished:
            # ejabberd keeps a republished item in place; the cache follows XEP-0060
            # ("most recent") and moves it to the newest place, as Prosody and
            # libervia-pubsub do: order is compared where the server moves it too.
            assert list(cached) == list(server), f"order after {operation} (step {step})"


async def test_node_deletion_forgets_the_node(
    daemon: Daemon, publisher: Publisher, xmpp_server: XMPPServer, fresh_node: Callable[..., str]
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    store = cache_of(daemon).store_access.require()
    applied = AppliedEvents(daemon)
    await publisher.create_node(service, node, {"pubsub#access_model": "open"})
    await publisher.publish(service, node, [("a", atom_entry("a", "a"))])
    await synchronised(daemon, service, node)
    await publisher.delete_node(service, node)
    await applied.wait(lambda: applied.count(node, pubsub.DeleteEvent) == 1, "the deletion")
    assert await store.get_node("bob", service.full(), node) is None


async def test_events_of_a_node_the_cache_does_not_track_change_nothing(
    daemon: Daemon, publisher: Publisher, xmpp_server: XMPPServer, fresh_node: Callable[..., str]
) -> None:
    service = JID(xmpp_server.pubsub_service)
    tracked, untracked = fresh_node(MICROBLOG), fresh_node(MICROBLOG)
    cache = cache_of(daemon)
    store = cache.store_access.require()
    applied = AppliedEvents(daemon)
    for node in (tracked, untracked):
        await publisher.create_node(service, node, {"pubsub#access_model": "open"})
        await publisher.publish(service, node, [("a", atom_entry("a", "a"))])
    await synchronised(daemon, service, tracked)
    # bob subscribes to the untracked node by hand: its events reach the daemon
    bob_subscription = await daemon.xep_0060.subscribe(daemon.get_client("bob"), service, untracked)
    assert bob_subscription is not None
    waiting = applied.wait_for_items(tracked, ["c"], "the tracked event")
    await publisher.publish(service, untracked, [("b", atom_entry("b", "b"))])
    await publisher.publish(service, tracked, [("c", atom_entry("c", "c"))])
    # events are applied in order: once the tracked node's one is, the other was seen
    await waiting
    assert applied.mentions(untracked, "b") == 0
    assert await store.get_node("bob", service.full(), untracked) is None
    tracked_info = await store.get_node("bob", service.full(), tracked)
    assert tracked_info is not None and tracked_info.sync_state is SyncState.COMPLETED
    assert await cache_ids(cache, daemon, service, tracked) == ["a", "c"]
