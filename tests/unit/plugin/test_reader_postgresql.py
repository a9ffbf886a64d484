"""The cached read on PostgreSQL: one round trip for a node as it was last read.

The reader keeps each node's row as last read, and asks the store for the page of that
node unless its row changed since (:meth:`Store.get_items_unless_changed`): one
statement instead of the node's lookup then its page. These tests run the plugin on a
real PostgreSQL database, count the store's lookups, and compare every answer with the
service's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tx_xmpp import rsm

from libervia_cache.plugin.reader import Miss
from libervia_cache.storage import Store
from tests.fakes import FakeService, atom
from tests.harness.databases import (
    PostgresDatabases,
    database_kinds,
    empty,
    require_postgresql,
    server_url,
)
from tests.unit.plugin.conftest import BLOG, Cache, Start, items, without_origin, xml
from tests.unit.plugin.test_reader import REQUESTS

pytestmark = pytest.mark.skipif(
    "postgresql" not in database_kinds(),
    reason="PostgreSQL left out (LIBERVIA_CACHE_TEST_DATABASES)",
)


@pytest.fixture(scope="module")
def postgresql() -> Iterator[str]:
    databases = PostgresDatabases(server_url())
    require_postgresql(databases, databases.check())
    try:
        yield databases.create("reader")
    finally:
        databases.drop_all()


@pytest.fixture
def db_url(postgresql: str) -> str:
    empty(postgresql)
    return postgresql


class Lookups:
    """Counts the store's node lookups and two-step page reads."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.get_node = 0
        self.get_items = 0
        get_node, get_items = store.get_node, store.get_items

        def counted_get_node(*args: Any, **kwargs: Any) -> Any:
            self.get_node += 1
            return get_node(*args, **kwargs)

        def counted_get_items(*args: Any, **kwargs: Any) -> Any:
            self.get_items += 1
            return get_items(*args, **kwargs)

        monkeypatch.setattr(store, "get_node", counted_get_node)
        monkeypatch.setattr(store, "get_items", counted_get_items)

    def __call__(self) -> tuple[int, int]:
        return self.get_node, self.get_items


async def started(start: Start, service: FakeService, db_url: str) -> Cache:
    service.publish(BLOG, *items(12))
    cache = await start(config={"pubsub_cache.sync_page_size": 5, "pubsub_cache.db_url": db_url})
    await cache.synchronise()
    assert cache.store.versions_rows
    return cache


async def same_as_the_service(cache: Cache, **request: Any) -> None:
    cached = await cache.get(**request)
    served = await cache.network(**request)
    assert cached[1]["cached"] is True
    assert xml(cached) == xml(served)
    assert without_origin(cached[1]) == without_origin(served[1])


@pytest.mark.parametrize("request_", REQUESTS.values(), ids=REQUESTS.keys())
async def test_a_node_read_before_is_answered_in_one_statement_as_its_service_answers(
    start: Start,
    service: FakeService,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    request_: dict[str, Any],
) -> None:
    cache = await started(start, service, db_url)
    await same_as_the_service(cache, **request_)  # the node's row is read, and kept
    lookups = Lookups(cache.store, monkeypatch)

    await same_as_the_service(cache, **request_)
    await same_as_the_service(cache, rsm_request=rsm.RSMRequest(max_=3, after="i05"))

    assert lookups() == (0, 0)


async def test_a_node_whose_row_changed_is_read_again(
    start: Start, service: FakeService, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = await started(start, service, db_url)
    await same_as_the_service(cache, max_items=3)
    node = await cache.node()
    assert node is not None
    lookups = Lookups(cache.store, monkeypatch)

    await cache.store.update_node(node.id, server_count=99)
    await same_as_the_service(cache, max_items=3)
    assert lookups() == (1, 1)  # read again: the row, then the page for it
    await same_as_the_service(cache, max_items=3)
    assert lookups() == (1, 1)  # and kept again


async def test_items_an_event_added_since_the_last_read_are_in_the_next_answer(
    start: Start, service: FakeService, db_url: str
) -> None:
    cache = await started(start, service, db_url)
    await same_as_the_service(cache, rsm_request=rsm.RSMRequest(max_=4, before=""))

    service.publish(BLOG, atom("new"))
    await cache.events.wait(1)

    await same_as_the_service(cache, rsm_request=rsm.RSMRequest(max_=4, before=""))
    answer = await cache.get(max_items=1)
    assert [element["id"] for element in answer[0]] == ["new"]


async def test_a_node_resynchronised_since_the_last_read_is_answered_as_it_is_now(
    start: Start, service: FakeService, db_url: str
) -> None:
    cache = await started(start, service, db_url)
    await same_as_the_service(cache)
    service.publish(BLOG, *items(3, prefix="r"), notify=False)  # unknown to the cache
    await cache.synchronise()

    await same_as_the_service(cache)
    await same_as_the_service(cache, rsm_request=rsm.RSMRequest(max_=5, before=""))


async def test_a_node_held_since_the_last_read_is_not_answered_from_the_cache(
    start: Start, service: FakeService, db_url: str
) -> None:
    cache = await started(start, service, db_url)
    await same_as_the_service(cache)
    checking = service.hold("items")
    await cache.plugin.profile_connected(cache.client)
    await checking.reached  # the check after the reconnection is in flight

    read = cache.get()
    await checking.arrived(2)  # the read went to the service too
    checking.release()
    answer = await read

    assert answer[1]["cached"] is False
    assert cache.plugin.counters.miss_reasons == {Miss.RECONNECTED.value: 1}


async def test_a_node_reset_since_the_last_read_is_not_answered_from_the_cache(
    start: Start, service: FakeService, db_url: str
) -> None:
    cache = await started(start, service, db_url)
    await same_as_the_service(cache)

    await cache.store.reset()
    answer = await cache.get()

    assert answer[1]["cached"] is False
    assert cache.plugin.counters.miss_reasons == {Miss.NOT_SYNCHRONISED.value: 1}
