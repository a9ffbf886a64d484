"""Purge and reset while a sync runs, and a sync of a node the service does not have.

Purge and reset cancel the syncs they affect and wait for their end
(:mod:`libervia_cache.plugin.manage`); what a cancelled sync still had in flight never
lands (:mod:`libervia_cache.plugin.sync`). A sync that finds no such node on the service
makes the cache forget it.
"""

from __future__ import annotations

from libervia_cache.plugin.reader import Miss
from libervia_cache.plugin.sync import Outcome
from libervia_cache.storage import SyncState
from tests.fakes import FakeService
from tests.unit.plugin.conftest import BLOG, COMMENTS, Start, items, without_origin, xml


async def test_a_purge_during_a_sync_cancels_it_and_leaves_the_node_unsynchronised(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(12))
    cache = await start(config={"pubsub_cache.sync_page_size": 5})
    second_page = service.hold("items", let_through=1)
    sync = await cache.start_sync()
    await second_page.reached

    purged = await cache.plugin.management.purge({"nodes": [BLOG]})
    second_page.release()

    assert purged == 5  # the first page
    assert sync.outcome is Outcome.CANCELLED
    node = await cache.node()
    assert node is not None and node.sync_state is not SyncState.COMPLETED
    assert await cache.store.count_items(node.id) == 0
    assert cache.plugin.syncs.running(cache.key()) is None


async def test_after_a_purge_during_its_sync_the_next_read_synchronises_the_node_again(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(12))
    cache = await start(config={"pubsub_cache.sync_page_size": 5})
    second_page = service.hold("items", let_through=1)
    await cache.start_sync()
    await second_page.reached
    await cache.plugin.management.purge({"nodes": [BLOG]})
    second_page.release()

    missed = await cache.get()
    await cache.settled()
    cached = await cache.get()

    assert missed[1]["cached"] is False
    assert cache.plugin.counters.miss_reasons == {Miss.NOT_SYNCHRONISED.value: 1}
    assert cache.plugin.counters.syncs_started == 2
    assert cached[1]["cached"] is True
    served = await cache.network()
    assert xml(cached) == xml(served)
    assert without_origin(cached[1]) == without_origin(served[1])


async def test_the_page_a_reset_sync_held_is_never_written_anywhere(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(12))
    service.publish(COMMENTS, *items(3, "c"))
    cache = await start(config={"pubsub_cache.sync_page_size": 5}, profiles=("bob", "alice"))
    # bob's second page is answered, and held on its way
    second_page = service.hold("items", let_through=1, answer_first=True)
    sync = await cache.start_sync()
    await second_page.reached

    forgotten = await cache.plugin.management.reset()
    alice = cache.for_profile("alice")
    second_page.release()  # only now may alice's page requests go through
    await alice.synchronise(COMMENTS)

    assert forgotten == (1, 5)
    assert sync.outcome is Outcome.CANCELLED
    nodes = await cache.store.get_nodes()
    assert [node.key for node in nodes] == [alice.key(COMMENTS)]
    assert await cache.store.count_items(nodes[0].id) == 3
    cached = await alice.get(COMMENTS)
    assert cached[1]["cached"] is True
    assert xml(cached) == xml(await alice.network(COMMENTS))


async def test_an_explicit_sync_of_a_node_the_service_does_not_have_forgets_the_node(
    start: Start, service: FakeService
) -> None:
    cache = await start()
    missing = f"{BLOG}:nosuch"

    sync = await cache.start_sync(missing)
    await sync.wait()

    assert sync.outcome is Outcome.NOT_FOUND
    assert await cache.node(missing) is None
