"""The life of a synchronised node: single flight, events during a sync, failures,
restarts, the per-node limit, write-back of nodes that are not synchronised."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from twisted.internet import defer, error
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from tx_xmpp import pubsub, rsm

from libervia_cache.backend.daemon import Daemon
from libervia_cache.hostapi import ConfigurationEvent
from libervia_cache.storage import SyncState
from tests.harness.daemon import (
    AppliedEvents,
    atom_entry,
    cache_of,
    connect_profiles,
    sync_of,
    synced,
)
from tests.harness.gates import NetworkGate
from tests.integration.conftest import DaemonFactory, synchronised
from tests.servers.base import XMPPServer
from tests.servers.publisher import Publisher

MICROBLOG = "urn:xmpp:microblog:0"

#: small pages: a node of a dozen items takes several
pytestmark = pytest.mark.daemon_options(sync_page_size=5)


async def make_node(
    publisher: Publisher, service: JID, node: str, count: int, prefix: str = "i"
) -> list[str]:
    await publisher.create_node(service, node, {"pubsub#access_model": "open"})
    ids = [f"{prefix}{n:02d}" for n in range(count)]
    await publisher.publish(service, node, [(i, atom_entry(i, i)) for i in ids], depth=1)
    return ids


async def assert_cache_equals_server(
    daemon: Daemon, publisher: Publisher, service: JID, node: str
) -> None:
    cache = cache_of(daemon)
    node_info = await cache.store_access.require().get_node("bob", service.full(), node)
    assert node_info is not None and node_info.sync_state is SyncState.COMPLETED
    answer = await cache.get_items_from_cache(daemon.get_client("bob"), service, node)
    assert answer is not None
    server = [(i["id"], i.toXml()) for i in await publisher.get_all_items(service, node)]
    assert [(i["id"], i.toXml()) for i in answer[0]] == server


async def test_a_hundred_concurrent_reads_start_one_sync_and_all_get_answers(
    daemon: Daemon, publisher: Publisher, xmpp_server: XMPPServer, fresh_node: Callable[..., str]
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    ids = await make_node(publisher, service, node, 12)
    cache = cache_of(daemon)
    client = daemon.get_client("bob")
    answers = await defer.gatherResults(
        [daemon.xep_0060.get_items(client, service, node) for __ in range(100)],
        consumeErrors=True,
    )
    assert all([i["id"] for i in items] == ids for items, __ in answers)
    assert cache.counters.syncs_started == 1
    await synced(daemon, service, node)
    await assert_cache_equals_server(daemon, publisher, service, node)


async def test_events_during_a_sync_win_over_older_pages(
    daemon: Daemon, publisher: Publisher, xmpp_server: XMPPServer, fresh_node: Callable[..., str]
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    ids = await make_node(publisher, service, node, 18)
    applied = AppliedEvents(daemon)
    gate = NetworkGate(daemon.xep_0060, "page", at=1)
    sync = defer.Deferred.fromCoroutine(synchronised(daemon, service, node))
    await gate.reached  # the newest page is fetched, not stored; bob is subscribed
    # an old item the sync has not stored yet is retracted, a stored-to-be one changes,
    # a new one arrives
    waiting = applied.wait_for_items(node, [ids[1], ids[-1], "new"], "the events")
    await publisher.retract(service, node, [ids[1]], notify=True)
    await publisher.publish(service, node, [(ids[-1], atom_entry(ids[-1], "changed"))])
    await publisher.publish(service, node, [("new", atom_entry("new", "new"))])
    await waiting
    gate.release()
    await sync
    gate.remove()
    await assert_cache_equals_server(daemon, publisher, service, node)


async def test_a_purge_during_a_sync_restarts_it(
    daemon: Daemon, publisher: Publisher, xmpp_server: XMPPServer, fresh_node: Callable[..., str]
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await make_node(publisher, service, node, 12)
    cache = cache_of(daemon)
    applied = AppliedEvents(daemon)
    gate = NetworkGate(daemon.xep_0060, "page", at=1)
    cache.syncs.start(
        daemon.get_client("bob"),
        await cache.store_access.require().get_or_create_node(
            "bob", service.full(), node, analyser="microblog"
        ),
    )
    await gate.reached
    await publisher.purge(service, node)
    await applied.wait(lambda: applied.count(node, pubsub.PurgeEvent) == 1, "the purge")
    assert cache.counters.syncs_started == 2, "the purge restarts the sync"
    waiting = applied.wait_for_items(node, ["after"], "the publication after the purge")
    await publisher.publish(service, node, [("after", atom_entry("after", "after"))])
    await waiting
    await synced(daemon, service, node)
    gate.remove()
    await assert_cache_equals_server(daemon, publisher, service, node)
    # the first sync, cancelled, wrote nothing after the purge
    assert gate.seen == 2


async def test_a_failed_sync_sets_error_keeps_nothing_and_is_retried_only_on_demand(
    daemon: Daemon, publisher: Publisher, xmpp_server: XMPPServer, fresh_node: Callable[..., str]
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await make_node(publisher, service, node, 12)
    cache = cache_of(daemon)
    store = cache.store_access.require()
    client = daemon.get_client("bob")
    # the first page is stored, the second fails (Prosody: the only page fails)
    gate = NetworkGate(
        daemon.xep_0060,
        "page",
        at=1 if not xmpp_server.quirks["rsm"] else 2,
        fail_with=StanzaError("internal-server-error"),
        hold=False,
    )
    __, metadata = await daemon.xep_0060.get_items(client, service, node)
    assert metadata["cached"] is False
    sync = sync_of(daemon, service, node)
    assert sync is not None
    await sync.wait()
    gate.remove()
    node_info = await store.get_node("bob", service.full(), node)
    assert node_info is not None and node_info.sync_state is SyncState.ERROR
    assert await store.count_items(node_info.id) == 0
    # reads go on from the network, and do not retry the sync
    __, metadata = await daemon.xep_0060.get_items(client, service, node)
    assert metadata["cached"] is False
    assert sync_of(daemon, service, node) is None
    assert cache.counters.syncs_started == 1
    # an explicit sync does
    await synchronised(daemon, service, node)
    await assert_cache_equals_server(daemon, publisher, service, node)


async def test_a_sync_cut_by_a_lost_connection_is_redone_on_the_next_read(
    daemon: Daemon, publisher: Publisher, xmpp_server: XMPPServer, fresh_node: Callable[..., str]
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await make_node(publisher, service, node, 12)
    store = cache_of(daemon).store_access.require()
    client = daemon.get_client("bob")
    gate = NetworkGate(daemon.xep_0060, "page", at=1, fail_with=error.ConnectionLost(), hold=False)
    await daemon.xep_0060.get_items(client, service, node)
    sync = sync_of(daemon, service, node)
    assert sync is not None
    await sync.wait()
    gate.remove()
    node_info = await store.get_node("bob", service.full(), node)
    assert node_info is not None and node_info.sync_state is None
    await daemon.xep_0060.get_items(client, service, node)
    sync = sync_of(daemon, service, node)
    assert sync is not None
    await sync.wait()
    await assert_cache_equals_server(daemon, publisher, service, node)


async def test_a_sync_left_in_progress_by_a_crash_is_redone_at_start(
    make_daemon: DaemonFactory,
    xmpp_server: XMPPServer,
    publisher: Publisher,
    fresh_node: Callable[..., str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await make_node(publisher, service, node, 7)
    first = await make_daemon()
    store = cache_of(first).store_access.require()
    node_info = await store.get_or_create_node("bob", service.full(), node, analyser="microblog")
    await store.cache_items(
        node_info.id, [("i00", "<item xmlns='http://jabber.org/protocol/pubsub' id='i00'/>", None)]
    )
    await store.update_node(node_info.id, sync_state=SyncState.IN_PROGRESS)
    await make_daemon.stop(first)

    second = await make_daemon(connect=False)
    # the redone sync is held on its first page: the state is checked while it runs
    gate = NetworkGate(second.xep_0060, "page", node=node)
    await connect_profiles(second)
    cache = cache_of(second)
    await gate.reached
    sync = sync_of(second, service, node)
    assert sync is not None, "the half-done sync is started again"
    # while it runs, the partial node is never served
    assert await cache.get_items_from_cache(second.get_client("bob"), service, node) is None
    gate.remove()
    await sync.wait()
    await assert_cache_equals_server(second, publisher, service, node)


@pytest.mark.daemon_options(sync_page_size=5, cache_limit=8)
async def test_a_node_over_the_limit_keeps_its_newest_items_and_serves_only_what_they_answer(
    daemon: Daemon, publisher: Publisher, xmpp_server: XMPPServer, fresh_node: Callable[..., str]
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    ids = await make_node(publisher, service, node, 13)
    client = daemon.get_client("bob")
    node_info = await synchronised(daemon, service, node)
    assert node_info.extra.get("truncated") is True
    assert await cache_of(daemon).store_access.require().count_items(node_info.id) == 8
    items, metadata = await daemon.xep_0060.get_items(client, service, node, max_items=5)
    assert [i["id"] for i in items] == ids[-5:]
    # ejabberd counts every item of the node in a max_items answer, which the cache,
    # holding 8, cannot give: it answers only items by id there
    assert metadata["cached"] is not xmpp_server.quirks["max_items_rsm"]
    items, metadata = await daemon.xep_0060.get_items(client, service, node, item_ids=ids[-2:])
    assert metadata["cached"] is True
    for request in (
        {},
        {"max_items": 10},
        {"item_ids": [ids[0]]},
        {"rsm_request": rsm.RSMRequest(max_=3)},
    ):
        items, metadata = await daemon.xep_0060.get_items(client, service, node, **request)
        assert metadata["cached"] is False, request


async def test_nodes_not_to_sync_are_written_back_for_search_but_never_served(
    daemon: Daemon, publisher: Publisher, xmpp_server: XMPPServer, fresh_node: Callable[..., str]
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node("urn:test:notes")
    cache = cache_of(daemon)
    cache.register_analyser(
        {
            "name": "notes",
            "type": "note",
            "node": "urn:test:notes",
            "parser": lambda client, item, service, node: {"text": str(item.firstChildElement())},
        }
    )
    await publisher.create_node(service, node, {"pubsub#access_model": "open"})
    await publisher.publish(
        service, node, [("n1", "<note xmlns='urn:test'>remember the milk</note>")]
    )
    client = daemon.get_client("bob")
    for __ in range(2):
        items, metadata = await daemon.xep_0060.get_items(client, service, node)
        assert metadata["cached"] is False and [i["id"] for i in items] == ["n1"]
    assert sync_of(daemon, service, node) is None
    found = await cache.management.search({"fts": "milk"})
    assert [(r["node"], r["item_id"]) for r in found] == [(node, "n1")]
    assert found[0]["parsed"] == {"text": "remember the milk"}


async def test_changes_made_while_the_daemon_was_stopped_are_caught_up_at_start(
    make_daemon: DaemonFactory,
    xmpp_server: XMPPServer,
    publisher: Publisher,
    fresh_node: Callable[..., str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    changed, unchanged = fresh_node(MICROBLOG), fresh_node(MICROBLOG)
    await make_node(publisher, service, changed, 6)
    await make_node(publisher, service, unchanged, 4)
    first = await make_daemon()
    for node in (changed, unchanged):
        await synchronised(first, service, node)
    await make_daemon.stop(first)
    # while no daemon listens: a publication and a retraction nobody tells the cache of
    await publisher.publish(service, changed, [("late", atom_entry("late", "late"))])
    await publisher.retract(service, changed, ["i01"], notify=True)

    second = await make_daemon()
    cache = cache_of(second)
    await cache.freshness.checks
    assert sync_of(second, service, unchanged) is None
    await synced(second, service, changed)
    assert cache.counters.syncs_started == 1
    for node in (changed, unchanged):
        await assert_cache_equals_server(second, publisher, service, node)


async def test_a_configuration_change_resynchronises_where_the_server_notifies_it(
    daemon: Daemon, publisher: Publisher, xmpp_server: XMPPServer, fresh_node: Callable[..., str]
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await publisher.create_node(
        service, node, {"pubsub#access_model": "open", "pubsub#notify_config": "1"}
    )
    await publisher.publish(service, node, [(f"i{n}", atom_entry(f"i{n}", "x")) for n in range(6)])
    cache = cache_of(daemon)
    applied = AppliedEvents(daemon)
    await synchronised(daemon, service, node)
    try:
        await publisher.configure(service, node, {"pubsub#max_items": "3"})
    except StanzaError as error:
        # libervia-pubsub refuses a max_items below the number of items: nothing changed
        assert (xmpp_server.kind, error.condition) == ("libervia-pubsub", "conflict")
        await assert_cache_equals_server(daemon, publisher, service, node)
        return
    # events come in order: once this publication is applied, a configuration event
    # sent before it was applied too
    waiting = applied.wait_for_items(node, ["marker"], "the publication after configuring")
    await publisher.publish(service, node, [("marker", atom_entry("marker", "m"))])
    await waiting
    configuration_events = applied.count(node, ConfigurationEvent)
    if configuration_events:
        assert cache.counters.syncs_started == 2, "a lower max_items resynchronises the node"
        await synced(daemon, service, node)
    else:
        # Prosody drops the oldest items without any notification: the cache cannot
        # know until the node is checked (at reconnection) or synchronised on demand
        assert xmpp_server.kind == "prosody", f"{xmpp_server.kind} notifies configuration"
        assert cache.counters.syncs_started == 1
        await synchronised(daemon, service, node)
    await assert_cache_equals_server(daemon, publisher, service, node)
