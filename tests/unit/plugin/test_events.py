"""Events keep a synchronised node equal to its service (:mod:`libervia_cache.plugin.events`).

Publications, republications and retractions are applied as they come. The first
republication of a node is checked against the service (where does it put a republished
item?): the node is held meanwhile, and a right guess changes nothing else.
"""

from __future__ import annotations

from tx_xmpp import rsm

from libervia_cache.plugin.reader import Miss
from tests.fakes import FakeService, atom
from tests.unit.plugin.conftest import BLOG, Start, ids, items, without_origin, xml

#: requests compared between the cache and the service
COMPARED = {
    "every item": {},
    "RSM last page": {"rsm_request": rsm.RSMRequest(max_=3, before="")},
    "RSM first page": {"rsm_request": rsm.RSMRequest(max_=3)},
}


async def test_events_keep_a_synchronised_node_equal_to_its_service(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(5))
    cache = await start()
    await cache.synchronise()

    service.publish(BLOG, atom("new"))
    service.publish(BLOG, atom("i02", "i02, edited"))
    service.retract(BLOG, "i04")
    await cache.events.wait(3)

    for request in COMPARED.values():
        cached = await cache.get(**request)
        served = await cache.network(**request)
        assert cached[1]["cached"] is True
        assert xml(cached) == xml(served), request
        assert without_origin(cached[1]) == without_origin(served[1]), request


async def test_during_the_first_republication_check_the_node_is_answered_by_the_service(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    await cache.synchronise()
    checking = service.hold("items")

    service.publish(BLOG, atom("i01", "i01, edited"))
    await checking.reached  # where did the service put i01?
    read = cache.get()
    await checking.arrived(2)
    checking.release()
    answer = await read

    assert answer[1]["cached"] is False
    assert cache.plugin.counters.miss_reasons == {Miss.CHECKING.value: 1}


async def test_a_read_during_a_republication_check_that_proves_right_starts_no_sync(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    await cache.synchronise()
    checking = service.hold("items")
    service.publish(BLOG, atom("i01", "i01, edited"))
    await checking.reached

    read = cache.get()
    await checking.arrived(2)
    checking.release()
    await read
    await cache.events.wait(1)
    await cache.settled()

    assert cache.plugin.counters.syncs_started == 1
    answer = await cache.get()
    assert answer[1]["cached"] is True
    assert ids(answer) == ["i02", "i03", "i01"]
