"""Events while a node is being synchronised, and events of several nodes at once.

A sync pages from the newest items backwards; events that arrive meanwhile are newer
than any page, and the pages must neither overwrite nor resurrect what they touched
(:mod:`libervia_cache.plugin.sync`). Events are applied one queue per node
(:mod:`libervia_cache.plugin.events`): a slow event holds only its own node.
"""

from __future__ import annotations

import pytest
from tx_xmpp import rsm

from libervia_cache.plugin.sync import Outcome
from tests.fakes import FakeService, atom
from tests.unit.plugin.conftest import BLOG, COMMENTS, Start, ids, items, without_origin, xml

#: requests compared between the cache and the service once the sync completed
COMPARED = {
    "every item": {},
    "RSM last page": {"rsm_request": rsm.RSMRequest(max_=5, before="")},
    "RSM first page": {"rsm_request": rsm.RSMRequest(max_=5)},
    "RSM index": {"rsm_request": rsm.RSMRequest(max_=4, index=6)},
}


@pytest.mark.parametrize(
    "answer_first",
    [False, True],
    ids=["held page answered after the events", "held page answered before the events"],
)
async def test_events_during_a_sync_leave_the_cache_equal_to_the_service(
    start: Start, service: FakeService, answer_first: bool
) -> None:
    service.publish(BLOG, *items(12))
    cache = await start(config={"pubsub_cache.sync_page_size": 5})
    # the first page (i08..i12) is stored; the second (i03..i07) is held
    second_page = service.hold("items", let_through=1, answer_first=answer_first)
    sync = await cache.start_sync()
    await second_page.reached

    service.publish(BLOG, atom("new"))  # a new item
    service.publish(BLOG, atom("i10", "i10, edited"))  # republished: paged already
    service.publish(BLOG, atom("i04", "i04, edited"))  # republished: the held page has it
    service.retract(BLOG, "i05")  # retracted: the held page has it
    await cache.events.wait(4)
    second_page.release()
    await sync.wait()

    assert sync.outcome is Outcome.COMPLETED
    for request in COMPARED.values():
        cached = await cache.get(**request)
        served = await cache.network(**request)
        assert cached[1]["cached"] is True
        assert xml(cached) == xml(served), request
        assert without_origin(cached[1]) == without_origin(served[1]), request


async def test_events_of_a_node_are_applied_while_another_nodes_payload_fetch_is_held(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(3))
    service.publish(COMMENTS, *items(2, "c"))
    cache = await start()
    await cache.synchronise(BLOG)
    await cache.synchronise(COMMENTS)
    fetch = service.hold("payload")
    service.publish(BLOG, atom("late"), payloads=False)  # its payload must be fetched
    await fetch.reached

    service.publish(COMMENTS, atom("c03"))
    await cache.events.wait(1)

    assert cache.events.nodes == [COMMENTS]
    comments = await cache.get(COMMENTS)
    assert comments[1]["cached"] is True
    assert ids(comments) == ["c01", "c02", "c03"]
    fetch.release()
    await cache.events.wait(2)
    blog = await cache.get(BLOG)
    assert blog[1]["cached"] is True
    assert xml(blog) == xml(await cache.network(BLOG))


async def test_a_purge_event_during_a_sync_restarts_it_and_the_cache_ends_equal_to_the_service(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(12))
    cache = await start(config={"pubsub_cache.sync_page_size": 5})
    second_page = service.hold("items", let_through=1, answer_first=True)
    first = await cache.start_sync()
    await second_page.reached

    service.purge(BLOG)
    await cache.events.wait(1)
    service.publish(BLOG, atom("after"))
    await cache.events.wait(2)
    second_page.release()
    await first.wait()
    await cache.settled()

    assert first.outcome is Outcome.CANCELLED
    assert cache.plugin.counters.syncs_started == 2
    cached = await cache.get()
    assert cached[1]["cached"] is True
    assert ids(cached) == ["after"]


async def test_a_node_deleted_during_its_sync_is_forgotten(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(12))
    cache = await start(config={"pubsub_cache.sync_page_size": 5})
    second_page = service.hold("items", let_through=1, answer_first=True)
    sync = await cache.start_sync()
    await second_page.reached

    service.delete(BLOG)
    await cache.events.wait(1)
    second_page.release()
    await sync.wait()

    assert sync.outcome is Outcome.CANCELLED
    assert await cache.node() is None
    assert cache.plugin.syncs.running(cache.key()) is None


async def test_an_event_applied_after_a_page_came_and_before_it_is_written_wins_over_it(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    # the only page has come (i02 in its old version, in the middle); the sync's last
    # questions (which order items asked by id come in) are held before it writes it
    probing = service.hold("payload")
    sync = await cache.start_sync()
    await probing.reached
    service.publish(BLOG, atom("i02", "i02, edited"))  # republished: moves to the newest
    await cache.events.wait(1)
    probing.release()
    await sync.wait()

    assert sync.outcome is Outcome.COMPLETED
    cached = await cache.get()
    assert cached[1]["cached"] is True
    assert ids(cached) == ["i01", "i03", "i02"]
    assert xml(cached) == xml(await cache.network())
