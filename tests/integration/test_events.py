"""Live events keep a synced node equal to the server: publish, republish, retract,
purge, delete, in random sequences, with the daemon online."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.words.protocols.jabber.jid import JID
from tx_xmpp import pubsub

from libervia_cache.backend.daemon import Daemon
from libervia_cache.plugin import EVENT_APPLIED_POINT, PubsubCache
from libervia_cache.storage import SyncState
from tests.harness.daemon import atom_entry, cache_of
from tests.integration.conftest import synchronised
from tests.servers.base import XMPPServer
from tests.servers.publisher import Publisher

MICROBLOG = "urn:xmpp:microblog:0"
EVENT_TIMEOUT = 20


class AppliedEvents:
    """Records the events the cache applied; waits for them (never sleep-and-hope)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.events: list[Any] = []
        self._waiters: list[tuple[Callable[[], bool], defer.Deferred[None]]] = []
        daemon.trigger.add(EVENT_APPLIED_POINT, self._applied)

    def _applied(self, client: Any, event: Any) -> bool:
        self.events.append(event)
        for waiter in list(self._waiters):
            condition, deferred = waiter
            if condition():
                self._waiters.remove(waiter)
                deferred.callback(None)
        return True

    def count(self, node: str, kind: type) -> int:
        return sum(1 for e in self.events if e.nodeIdentifier == node and isinstance(e, kind))

    def mentions(self, node: str, item_id: str) -> int:
        """How many applied items events of ``node`` published or retracted ``item_id``."""
        return sum(
            1
            for e in self.events
            if e.nodeIdentifier == node
            and isinstance(e, pubsub.ItemsEvent)
            and any(i.getAttribute("id") == item_id for i in e.items)
        )

    def wait_for_items(self, node: str, item_ids: list[str], what: str) -> defer.Deferred[None]:
        """Wait until one more event mentioning each of ``item_ids`` was applied."""
        targets = {i: self.mentions(node, i) + 1 for i in item_ids}
        return self.wait(lambda: all(self.mentions(node, i) >= n for i, n in targets.items()), what)

    def wait(self, condition: Callable[[], bool], what: str) -> defer.Deferred[None]:
        deferred: defer.Deferred[None] = defer.Deferred()
        if condition():
            deferred.callback(None)
            return deferred
        self._waiters.append((condition, deferred))

        def timed_out(failure: Any) -> None:
            raise AssertionError(f"the cache did not apply {what} within {EVENT_TIMEOUT} s")

        deferred.addTimeout(EVENT_TIMEOUT, reactor, onTimeoutCancel=lambda *a: None)
        deferred.addErrback(timed_out)
        return deferred


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
