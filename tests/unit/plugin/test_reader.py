"""The cached read (:mod:`libervia_cache.plugin.reader`) through the host's request path.

A synchronised node is answered from the cache exactly as its service answers; every
other read is a miss with its reason (:class:`Miss`), answered by the service, and
counted. Reads go through ``host.xep_0060.get_items`` (the trigger points), as a caller's
do; ``metadata["cached"]`` says where an answer came from.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.words.protocols.jabber.error import StanzaError
from tx_xmpp import rsm

from libervia_cache.plugin.reader import Miss
from libervia_cache.plugin.settings import CacheStrategy
from libervia_cache.storage import SyncState
from tests.fakes import FakeService, atom
from tests.unit.plugin.conftest import BLOG, Cache, Start, ids, items, without_origin, xml

#: requests a synchronised node of 12 items (i01..i12) answers from the cache
REQUESTS: dict[str, dict[str, Any]] = {
    "every item": {},
    "max_items": {"max_items": 3},
    "item ids": {"item_ids": ["i07", "i02", "i11"]},
    "RSM last page": {"rsm_request": rsm.RSMRequest(max_=5, before="")},
    "RSM first page": {"rsm_request": rsm.RSMRequest(max_=5)},
    "RSM after": {"rsm_request": rsm.RSMRequest(max_=4, after="i03")},
    "RSM after, last items": {"rsm_request": rsm.RSMRequest(max_=4, after="i10")},
    "RSM before": {"rsm_request": rsm.RSMRequest(max_=4, before="i06")},
    "RSM before, first items": {"rsm_request": rsm.RSMRequest(max_=4, before="i03")},
    "RSM index": {"rsm_request": rsm.RSMRequest(max_=5, index=7)},
    "RSM larger than the node": {"rsm_request": rsm.RSMRequest(max_=50, before="")},
    "max_items with RSM": {"max_items": 2, "rsm_request": rsm.RSMRequest(max_=4, after="i03")},
    "item ids with RSM": {"item_ids": ["i07", "i02"], "rsm_request": rsm.RSMRequest(max_=1)},
}


def misses(cache: Cache) -> dict[str, int]:
    return cache.plugin.counters.miss_reasons


# --- the hit ----------------------------------------------------------------------------


@pytest.mark.parametrize("request_", REQUESTS.values(), ids=REQUESTS.keys())
async def test_a_synchronised_node_is_answered_from_the_cache_as_its_service_answers(
    start: Start, service: FakeService, request_: dict[str, Any]
) -> None:
    service.publish(BLOG, *items(12))
    cache = await start(config={"pubsub_cache.sync_page_size": 5})
    await cache.synchronise()

    cached = await cache.get(**request_)
    served = await cache.network(**request_)

    assert cached[1]["cached"] is True
    assert xml(cached) == xml(served)
    assert without_origin(cached[1]) == without_origin(served[1])


IGNORED_RSM: dict[str, dict[str, Any]] = {
    "RSM last page": {"rsm_request": rsm.RSMRequest(max_=5, before="")},
    "RSM after": {"rsm_request": rsm.RSMRequest(max_=4, after="i03")},
    "max_items": {"max_items": 3},
}


@pytest.mark.parametrize("service", [False], indirect=True, ids=["service ignoring RSM"])
@pytest.mark.parametrize("request_", IGNORED_RSM.values(), ids=IGNORED_RSM.keys())
async def test_a_node_of_a_service_ignoring_rsm_is_answered_as_that_service_answers(
    start: Start, service: FakeService, request_: dict[str, Any]
) -> None:
    service.publish(BLOG, *items(12))
    cache = await start(config={"pubsub_cache.sync_page_size": 5})
    await cache.synchronise()

    cached = await cache.get(**request_)
    served = await cache.network(**request_)

    assert cached[1]["cached"] is True
    assert xml(cached) == xml(served)
    assert without_origin(cached[1]) == without_origin(served[1])


async def test_hits_and_misses_are_counted_with_the_reason_of_each_miss(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()

    await cache.get()  # unknown: missed, and its sync starts
    await cache.settled()
    await cache.get()
    await cache.get(max_items=1)

    counters = cache.plugin.counters
    assert (counters.hits, counters.misses) == (2, 1)
    assert counters.miss_reasons == {Miss.NOT_SYNCHRONISED.value: 1}


# --- DISABLED ---------------------------------------------------------------------------


async def test_with_the_no_cache_strategy_a_synchronised_node_is_answered_by_its_service(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start(config={"pubsub_cache.strategy": CacheStrategy.NO_CACHE})
    await cache.synchronise()
    asked = len(service.requests)

    answer = await cache.get()

    assert answer[1]["cached"] is False
    assert ids(answer) == ["i01", "i02", "i03"]
    assert len(service.requests) == asked + 1
    # a disabled cache is not a miss: nothing was asked of it
    assert (cache.plugin.counters.hits, cache.plugin.counters.misses) == (0, 0)


async def test_use_cache_false_sends_one_request_of_a_synchronised_node_to_its_service(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    await cache.synchronise()

    bypassed = await cache.get(extra={"use_cache": False})
    cached = await cache.get()

    assert bypassed[1]["cached"] is False
    assert cached[1]["cached"] is True
    assert (cache.plugin.counters.hits, cache.plugin.counters.misses) == (1, 0)


# --- UNSUPPORTED ------------------------------------------------------------------------

UNSUPPORTED: dict[str, dict[str, Any]] = {
    "subscription id": {"sub_id": "sub-1"},
    "MAM query": {"extra": {"mam": {"start": "2026-01-01T00:00:00Z"}}},
    "XEP-0413 order": {"extra": {"order_by": "creation"}},
    "max_items=0": {"max_items": 0},
}


@pytest.mark.parametrize("request_", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
async def test_a_request_the_cache_cannot_reproduce_is_answered_by_the_service(
    start: Start, service: FakeService, request_: dict[str, Any]
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    await cache.synchronise()

    answer = await cache.get(**request_)

    assert answer[1]["cached"] is False
    assert misses(cache) == {Miss.UNSUPPORTED.value: 1}


async def test_an_rsm_request_on_a_node_synchronised_empty_is_answered_by_the_service(
    start: Start, service: FakeService
) -> None:
    # an empty first page shows nothing of the server's RSM keys (item ids or its own)
    service.create(BLOG)
    cache = await start()
    await cache.synchronise()
    service.publish(BLOG, atom("i01"))
    await cache.events.wait(1)

    answer = await cache.get(rsm_request=rsm.RSMRequest(max_=5, before=""))

    assert answer[1]["cached"] is False
    assert misses(cache) == {Miss.UNSUPPORTED.value: 1}


# --- UNAVAILABLE ------------------------------------------------------------------------


async def test_a_closed_store_sends_reads_to_the_service(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    await cache.synchronise()
    await cache.plugin.store_access.close()

    answer = await cache.get()

    assert answer[1]["cached"] is False
    assert ids(answer) == ["i01", "i02", "i03"]
    assert misses(cache) == {Miss.UNAVAILABLE.value: 1}


async def test_a_store_that_could_not_be_opened_sends_reads_to_the_service(
    start: Start, service: FakeService, tmp_path: Path
) -> None:
    service.publish(BLOG, *items(3))
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an SQLite database" * 100)
    cache = await start(config={"pubsub_cache.db_url": f"sqlite+aiosqlite:///{garbage}"})
    assert cache.plugin.store_access.store is None

    answer = await cache.get()

    assert answer[1]["cached"] is False
    assert ids(answer) == ["i01", "i02", "i03"]
    assert misses(cache) == {Miss.UNAVAILABLE.value: 1}


# --- NOT_SYNCHRONISED -------------------------------------------------------------------


async def test_a_node_the_cache_does_not_know_is_answered_by_the_service(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()

    answer = await cache.get()

    assert answer[1]["cached"] is False
    assert ids(answer) == ["i01", "i02", "i03"]
    assert misses(cache) == {Miss.NOT_SYNCHRONISED.value: 1}


async def test_a_node_whose_sync_is_in_progress_is_answered_by_the_service(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    subscribing = service.hold("subscribe")  # the sync began: its node is IN_PROGRESS
    sync = await cache.start_sync()
    await subscribing.reached
    node = await cache.node()
    assert node is not None and node.sync_state is SyncState.IN_PROGRESS

    answer = await cache.get()

    assert answer[1]["cached"] is False
    assert misses(cache) == {Miss.NOT_SYNCHRONISED.value: 1}
    assert cache.running() is sync  # a sync younger than the deadline is left to run
    subscribing.release()


# --- RECONNECTED ------------------------------------------------------------------------


async def test_after_a_reconnection_a_node_is_answered_by_the_service_until_checked(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    await cache.synchronise()
    checking = service.hold("items")
    await cache.plugin.profile_connected(cache.client)
    await checking.reached  # the check of the node is in flight

    read = cache.get()
    await checking.arrived(2)  # the read went to the service too
    checking.release()
    answer = await read

    assert answer[1]["cached"] is False
    assert misses(cache) == {Miss.RECONNECTED.value: 1}


# --- SUSPECT ----------------------------------------------------------------------------


def fail_writes(monkeypatch: pytest.MonkeyPatch, store: Any, *methods: str) -> None:
    """Make these methods of the store fail as a locked database does."""

    def failing(*args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        return defer.fail(sqlite3.OperationalError("database is locked"))

    for method in methods:
        monkeypatch.setattr(store, method, failing)


async def test_a_node_an_event_could_not_be_stored_into_is_answered_by_the_service(
    start: Start, service: FakeService, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    await cache.synchronise()
    fail_writes(monkeypatch, cache.store, "cache_items", "begin_sync")

    service.publish(BLOG, atom("new"))
    await cache.events.wait(1)
    await cache.settled()  # the sync the event started could not begin either
    assert cache.plugin.counters.syncs_failed == 1
    answer = await cache.get()

    assert answer[1]["cached"] is False
    assert ids(answer) == ["i01", "i02", "i03", "new"]
    assert misses(cache) == {Miss.SUSPECT.value: 1}


async def test_a_node_whose_notified_payload_could_not_be_fetched_is_answered_by_the_service(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    await cache.synchronise()
    # n1's payload fetch fails; n2's is held, so that the sync n1's failure starts waits
    # behind it in the node's queue, and the node stays suspect meanwhile
    first_fetch = service.hold("payload")
    service.publish(BLOG, atom("n1"), payloads=False)
    await first_fetch.reached
    service.publish(BLOG, atom("n2"), payloads=False)
    service.fail("payload", StanzaError("internal-server-error"))
    second_fetch = service.hold("payload")
    first_fetch.release()
    await second_fetch.reached
    service.heal("payload")

    answer = await cache.get()

    assert answer[1]["cached"] is False
    assert ids(answer) == ["i01", "i02", "i03", "n1", "n2"]
    assert misses(cache) == {Miss.SUSPECT.value: 1}
    second_fetch.release()


async def test_a_suspect_node_is_served_again_once_a_new_sync_replaced_it(
    start: Start, service: FakeService, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    await cache.synchronise()
    fail_writes(monkeypatch, cache.store, "cache_items", "begin_sync")
    service.publish(BLOG, atom("new"))
    await cache.events.wait(1)
    await cache.settled()
    monkeypatch.undo()

    await cache.get()  # suspect: a miss, which starts a new sync
    await cache.settled()
    answer = await cache.get()

    assert answer[1]["cached"] is True
    assert ids(answer) == ["i01", "i02", "i03", "new"]


# --- TRUNCATED --------------------------------------------------------------------------

BEYOND_THE_LIMIT: dict[str, dict[str, Any]] = {
    "every item": {},
    "RSM last page": {"rsm_request": rsm.RSMRequest(max_=2, before="")},
    "RSM first page": {"rsm_request": rsm.RSMRequest(max_=2)},
    "more newest items than kept": {"max_items": 4},
    "an item older than those kept": {"item_ids": ["i01"]},
}


@pytest.mark.parametrize("request_", BEYOND_THE_LIMIT.values(), ids=BEYOND_THE_LIMIT.keys())
async def test_a_node_larger_than_the_cache_limit_answers_by_the_service_what_it_lacks(
    start: Start, service: FakeService, request_: dict[str, Any]
) -> None:
    service.publish(BLOG, *items(5))
    cache = await start(config={"pubsub_cache.cache_limit": 3})
    await cache.synchronise()

    answer = await cache.get(**request_)

    assert answer[1]["cached"] is False
    assert misses(cache) == {Miss.TRUNCATED.value: 1}


async def test_a_node_events_took_beyond_the_cache_limit_answers_by_the_service_what_it_lacks(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start(config={"pubsub_cache.cache_limit": 3})
    await cache.synchronise()
    service.publish(BLOG, atom("i04"))
    await cache.events.wait(1)

    answer = await cache.get()

    assert answer[1]["cached"] is False
    assert ids(answer) == ["i01", "i02", "i03", "i04"]
    assert misses(cache) == {Miss.TRUNCATED.value: 1}


WITHIN_THE_LIMIT: dict[str, dict[str, Any]] = {
    "newest items": {"max_items": 2},
    "as many newest items as kept": {"max_items": 3},
    "items kept": {"item_ids": ["i05", "i03"]},
}


@pytest.mark.parametrize("request_", WITHIN_THE_LIMIT.values(), ids=WITHIN_THE_LIMIT.keys())
async def test_a_node_larger_than_the_cache_limit_answers_from_the_cache_what_it_keeps(
    start: Start, service: FakeService, request_: dict[str, Any]
) -> None:
    service.publish(BLOG, *items(5))
    cache = await start(config={"pubsub_cache.cache_limit": 3})
    await cache.synchronise()

    cached = await cache.get(**request_)
    served = await cache.network(**request_)

    assert cached[1]["cached"] is True
    assert xml(cached) == xml(served)


# --- UNKNOWN_ID -------------------------------------------------------------------------


async def test_an_item_id_the_node_does_not_hold_is_asked_of_the_service(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    await cache.synchronise()

    answer = await cache.get(item_ids=["i02", "nosuch"])

    assert answer[1]["cached"] is False
    assert ids(answer) == ["i02"]
    assert misses(cache) == {Miss.UNKNOWN_ID.value: 1}


# --- UNKNOWN_RSM_KEY --------------------------------------------------------------------


@pytest.mark.parametrize("anchor", ["after", "before"])
async def test_an_rsm_key_the_node_does_not_hold_is_asked_of_the_service(
    start: Start, service: FakeService, anchor: str
) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    await cache.synchronise()

    answer = await cache.get(rsm_request=rsm.RSMRequest(max_=2, **{anchor: "a-server-key"}))

    assert answer[1]["cached"] is False
    assert misses(cache) == {Miss.UNKNOWN_RSM_KEY.value: 1}


# --- an analyser's match_cb decides for one node ------------------------------------------


@pytest.mark.parametrize("analyser_syncs", [True, False])
async def test_match_cb_may_decide_whether_one_node_is_synchronised(
    start: Start, service: FakeService, analyser_syncs: bool
) -> None:
    chosen, other = "urn:test:lists/chosen", "urn:test:lists/other"
    service.publish(chosen, *items(2))
    service.publish(other, *items(2))
    cache = await start()

    def decide(client: Any, analysis: dict[str, Any]) -> None:
        if analysis["node"] == chosen:
            analysis["to_sync"] = not analyser_syncs

    cache.plugin.register_analyser(
        {
            "name": "lists",
            "node": "urn:test:lists/",
            "type": "list",
            "to_sync": analyser_syncs,
            "match_cb": decide,
        }
    )
    for node in (chosen, other):
        await cache.get(node)  # analysed, and synchronised if its analysis says so
        await cache.settled(node)

    states = {node: (await cache.node(node)) for node in (chosen, other)}
    synced = {
        node: info is not None and info.sync_state is SyncState.COMPLETED
        for node, info in states.items()
    }
    assert synced == {chosen: not analyser_syncs, other: analyser_syncs}
    # the decision is kept with the node: later reads follow it
    assert (await cache.get(chosen))[1]["cached"] is (not analyser_syncs)
    assert (await cache.get(other))[1]["cached"] is analyser_syncs
