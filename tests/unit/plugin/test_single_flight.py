"""Single flight (:mod:`libervia_cache.plugin.syncs`): at most one sync per node at a time.

Reads and explicit syncs of a node whose sync runs follow that sync instead of starting
another; a restart cancels the running sync before starting its replacement.
"""

from __future__ import annotations

from twisted.internet import defer
from tx_xmpp import rsm

from libervia_cache.plugin.sync import Outcome
from libervia_cache.storage import SyncState
from tests.fakes import FakeService
from tests.unit.plugin.conftest import BLOG, Start, ids, items, xml

READERS = 20


async def test_concurrent_reads_of_an_unsynchronised_node_start_one_sync_and_all_get_answers(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(12))
    cache = await start(config={"pubsub_cache.sync_page_size": 5})
    subscribing = service.hold("subscribe")  # the sync runs until every read is answered

    answers = await defer.gatherResults([cache.get() for __ in range(READERS)])
    subscribing.release()
    await cache.settled()

    expected = xml(await cache.network())
    assert [xml(answer) for answer in answers] == [expected] * READERS
    assert cache.plugin.counters.syncs_started == 1
    node = await cache.node()
    assert node is not None and node.sync_state is SyncState.COMPLETED


async def test_reads_arriving_together_start_one_sync(start: Start, service: FakeService) -> None:
    service.publish(BLOG, *items(12))
    cache = await start(config={"pubsub_cache.sync_page_size": 5})

    answers = await defer.gatherResults([cache.get() for __ in range(READERS)])
    await cache.settled()

    assert all(ids(answer) == ids(answers[0]) for answer in answers)
    assert cache.plugin.counters.syncs_started == 1


async def test_an_explicit_sync_while_one_runs_returns_the_running_sync(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    subscribing = service.hold("subscribe")
    running = await cache.start_sync()

    again = await cache.start_sync()
    subscribing.release()
    await running.wait()

    assert again is running
    assert running.outcome is Outcome.COMPLETED
    assert cache.plugin.counters.syncs_started == 1


async def test_a_restart_cancels_the_running_sync_and_its_replacement_completes(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(12))
    cache = await start(config={"pubsub_cache.sync_page_size": 5})
    second_page = service.hold("items", let_through=1)
    first = await cache.start_sync()
    await second_page.reached
    node = await cache.node()
    assert node is not None

    replacement = cache.plugin.syncs.restart(cache.client, node)
    await first.wait()
    second_page.release()
    await replacement.wait()

    assert replacement is not first
    assert first.outcome is Outcome.CANCELLED
    assert replacement.outcome is Outcome.COMPLETED
    cached = await cache.get(rsm_request=rsm.RSMRequest(max_=20, before=""))
    assert cached[1]["cached"] is True
    assert ids(cached) == [f"i{n:02d}" for n in range(1, 13)]


async def test_a_read_of_a_node_whose_sync_outlived_the_deadline_starts_it_again(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(3))
    # a deadline already passed when the sync starts (the configuration allows 1 s at least)
    cache = await start(config={"pubsub_cache.progress_deadline": 0})
    subscribing = service.hold("subscribe")
    stale = await cache.start_sync()
    await subscribing.reached

    await cache.get()
    subscribing.release()
    await stale.wait()
    await cache.settled()

    assert stale.outcome is Outcome.CANCELLED
    assert cache.plugin.counters.syncs_started == 2
    answer = await cache.get()
    assert answer[1]["cached"] is True
    assert ids(answer) == ["i01", "i02", "i03"]
