"""Catching up after a gap (:mod:`libervia_cache.plugin.freshness`).

Events sent while a profile was disconnected, or while the store was closed, are lost.
On (re)connection, and when the store opens again, each synchronised node is held back
until one request tells whether it changed; a changed node is synchronised again, an
unchanged one is served again as it is, and a sync left half done is redone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from libervia_cache.plugin import freshness
from libervia_cache.plugin.reader import Miss
from libervia_cache.storage import SyncState
from tests.fakes import FakeService, atom
from tests.unit.plugin.conftest import BLOG, Start, ids, items, xml

#: changes made on the service while the profile was away (no event reached it)
CHANGES: dict[str, Callable[[FakeService], Any]] = {
    "a new item": lambda service: service.publish(BLOG, atom("i04"), notify=False),
    "the newest item retracted": lambda service: service.retract(BLOG, "i03", notify=False),
    "an older item retracted": lambda service: service.retract(BLOG, "i01", notify=False),
    "an older item republished": lambda service: service.publish(
        BLOG, atom("i01", "i01, edited"), notify=False
    ),
}


@pytest.mark.parametrize(
    "service", [True, False], indirect=True, ids=["service with RSM", "service ignoring RSM"]
)
async def test_a_node_unchanged_meanwhile_is_served_again_once_checked_without_a_resync(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    await cache.synchronise()

    await cache.plugin.profile_connected(cache.client)
    await cache.plugin.freshness.checks
    answer = await cache.get()

    assert answer[1]["cached"] is True
    assert ids(answer) == ["i01", "i02", "i03"]
    assert cache.plugin.counters.syncs_started == 1


@pytest.mark.parametrize(
    "service", [True, False], indirect=True, ids=["service with RSM", "service ignoring RSM"]
)
@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
async def test_a_node_changed_meanwhile_is_synchronised_again(
    start: Start, service: FakeService, change: Callable[[FakeService], Any]
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    await cache.synchronise()
    change(service)

    await cache.plugin.profile_connected(cache.client)
    await cache.plugin.freshness.checks
    await cache.settled()
    answer = await cache.get()

    assert cache.plugin.counters.syncs_started == 2
    assert answer[1]["cached"] is True
    assert xml(answer) == xml(await cache.network())


async def test_a_node_left_in_progress_is_synchronised_again_on_connection(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(3))
    before = await start()
    subscribing = service.hold("subscribe")
    await before.start_sync()
    await subscribing.reached
    await before.stop()  # the daemon stops during the sync
    subscribing.release()
    after = await start()
    left = await after.node()
    assert left is not None and left.sync_state is SyncState.IN_PROGRESS

    await after.plugin.profile_connected(after.client)
    await after.settled()

    assert after.plugin.counters.syncs_started == 1
    node = await after.node()
    assert node is not None and node.sync_state is SyncState.COMPLETED
    answer = await after.get()
    assert answer[1]["cached"] is True
    assert ids(answer) == ["i01", "i02", "i03"]


async def test_after_a_connection_a_node_is_answered_by_the_service_until_its_check_ends(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    await cache.synchronise()
    checking = service.hold("items")
    await cache.plugin.profile_connected(cache.client)
    await checking.reached

    during = cache.get()
    await checking.arrived(2)
    checking.release()
    await cache.plugin.freshness.checks
    after = await cache.get()

    assert (await during)[1]["cached"] is False
    assert after[1]["cached"] is True
    assert cache.plugin.counters.miss_reasons == {Miss.RECONNECTED.value: 1}


async def test_after_the_store_reopened_synchronised_nodes_are_checked_again(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    await cache.synchronise()
    service.publish(BLOG, atom("i04"), notify=False)  # lost while the store was closed
    checking = service.hold("items")

    cache.plugin.freshness.store_reopened()
    await checking.reached
    checking.release()
    await cache.plugin.freshness.checks
    await cache.settled()
    answer = await cache.get()

    assert cache.plugin.counters.syncs_started == 2
    assert answer[1]["cached"] is True
    assert ids(answer) == ["i01", "i02", "i03", "i04"]


# --- checks of served nodes: after a publication, periodic -------------------------------


def checks_sent(service: FakeService) -> int:
    """The freshness checks the service was asked: its newest item, with the count."""
    return sum(
        1
        for kind, __, request in service.requests
        if kind == "items"
        and request["rsm"] is not None
        and (request["rsm"].max, request["rsm"].before) == (1, "")
    )


@pytest.fixture
def quick_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks after publications (and their reruns) follow each other at once."""
    monkeypatch.setattr(freshness, "PUBLICATION_CHECK_DELAY", 0.001)


async def test_a_silent_difference_is_confirmed_by_a_second_check_then_synchronised(
    start: Start, service: FakeService, quick_checks: None
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    await cache.synchronise()
    node = await cache.node()
    assert node is not None
    service.publish(BLOG, atom("i04"), notify=False)  # no event: a silent change

    concluded = cache.plugin.freshness.next_check(node.id)
    cache.plugin.freshness.after_publication(cache.client, node)
    await concluded
    await cache.settled()

    assert checks_sent(service) == 2
    assert cache.plugin.counters.syncs_started == 2
    answer = await cache.get()
    assert answer[1]["cached"] is True
    assert xml(answer) == xml(await cache.network())


async def test_a_check_that_crossed_an_event_of_its_node_is_redone_without_a_resync(
    start: Start, service: FakeService, quick_checks: None
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    await cache.synchronise()
    node = await cache.node()
    assert node is not None
    first_check = service.hold("items")
    cache.plugin.freshness.after_publication(cache.client, node)
    await first_check.reached
    # a publication meanwhile, its event still being applied (its payload is fetched)
    fetching = service.hold("payload")
    service.publish(BLOG, atom("i04"), payloads=False)
    await fetching.reached
    second_check = service.hold("items")
    first_check.release()  # the server's answer has i04, the cache not yet: no proof
    await second_check.reached

    assert cache.plugin.counters.syncs_started == 1
    concluded = cache.plugin.freshness.next_check(node.id)
    applied = cache.events.wait(1)
    fetching.release()
    await applied
    second_check.release()
    await concluded

    assert cache.plugin.counters.syncs_started == 1
    answer = await cache.get()
    assert answer[1]["cached"] is True
    assert xml(answer) == xml(await cache.network())
