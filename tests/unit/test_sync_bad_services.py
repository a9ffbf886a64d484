"""Synchronisation against services that answer RSM badly.

A fake pubsub service (the ``get_items_from_network``/``subscribe``/
``get_configuration`` part of ``hostapi.XEP0060``) serves crafted pages to a
:class:`libervia_cache.plugin.sync.NodeSync`, which writes into a real store on a
temporary SQLite file. Whatever the service does, the sync ends (no loop), never stores
a wrong page, and never marks a partial node COMPLETED.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from tx_xmpp import pubsub, rsm

from libervia_cache.errors import SyncError
from libervia_cache.plugin.counters import Counters
from libervia_cache.plugin.serial import KeyedQueues
from libervia_cache.plugin.settings import Settings
from libervia_cache.plugin.store_access import StoreAccess
from libervia_cache.plugin.sync import NodeSync
from libervia_cache.storage import NodeInfo, Store, SyncState
from tests.conftest import run

SERVICE = "pubsub.example.org"
NODE = "urn:xmpp:microblog:0"
PAGE_SIZE = 10
#: a sync never needs more requests than this on the nodes below (runaway guard)
MAX_REQUESTS = 50

Page = tuple[list[str | None], dict[str, Any]]


def item_element(item_id: str | None) -> domish.Element:
    item = domish.Element((pubsub.NS_PUBSUB, "item"))
    if item_id is not None:
        item["id"] = item_id
    item.addElement(("urn:example:payload", "entry"), content=f"text of {item_id}")
    return item


@dataclass
class FakeService:
    """A pubsub node of ``ids`` (oldest first) answering RSM ``before`` requests.

    ``page`` builds each answer: ``(ids, rsm metadata)`` for the request; tests replace
    it to misbehave. Keys are ``key_of(id)``, item ids by default.
    """

    ids: list[str]
    key_of: Callable[[str], str] = str
    requests: list[rsm.RSMRequest | None] = field(default_factory=list)
    probes: int = 0
    paged_to_the_oldest: bool = False
    page: Callable[[FakeService, rsm.RSMRequest], Page] | None = None

    def id_of_key(self, key: str) -> str:
        return next(i for i in self.ids if self.key_of(i) == key)

    def honest_page(self, request: rsm.RSMRequest) -> Page:
        end = (
            len(self.ids)
            if request.before == ""
            else self.ids.index(self.id_of_key(request.before))
        )
        start = max(0, end - request.max)
        ids = self.ids[start:end]
        data: dict[str, Any] = {"count": len(self.ids)}
        if ids:
            data.update(first=self.key_of(ids[0]), last=self.key_of(ids[-1]), index=start)
        return list(ids), data

    # --- hostapi.XEP0060 (the part synchronise_node uses) --------------------------

    def get_items_from_network(
        self,
        client: Any,
        service: JID | None,
        node: str,
        max_items: int | None = None,
        item_ids: Any = None,
        sub_id: str | None = None,
        rsm_request: rsm.RSMRequest | None = None,
        extra: Any = None,
    ) -> defer.Deferred[tuple[list[domish.Element], dict[str, Any]]]:
        if rsm_request is None:
            # the sync's probes at its end (max_items=1, two items by id): answered
            # plainly; they are not pages
            self.probes += 1
            if max_items is not None:
                ids = self.ids[-max_items:]
            else:
                ids = [i for i in item_ids or () if i in self.ids]
            metadata = {"service": SERVICE, "node": node, "cached": False}
            return defer.succeed(([item_element(i) for i in ids], metadata))
        if self.paged_to_the_oldest:
            # the sync's index probe, after its pages: answered honestly, not a page
            self.probes += 1
            ids, rsm_data = FakeService.honest_page(self, rsm_request)
            metadata = {"service": SERVICE, "node": node, "cached": False, "rsm": rsm_data}
            return defer.succeed(([item_element(i) for i in ids], metadata))
        self.requests.append(rsm_request)
        if len(self.requests) > MAX_REQUESTS:
            return defer.fail(AssertionError(f"runaway sync: {len(self.requests)} requests"))
        try:
            ids, rsm_data = (self.page or FakeService.honest_page)(self, rsm_request)
        except Exception:
            return defer.fail()
        metadata = {"service": SERVICE, "node": node, "cached": False, "rsm": rsm_data}
        index = rsm_data.get("index")
        if (index is not None and index <= 0) or len(ids) < rsm_request.max:
            self.paged_to_the_oldest = True
        return defer.succeed(([item_element(i) for i in ids], metadata))

    def subscribe(self, client: Any, service: JID | None, node: str) -> defer.Deferred[Any]:
        return defer.succeed(None)

    def get_configuration(
        self, client: Any, service: JID | None, node: str
    ) -> defer.Deferred[dict[str, Any]]:
        return defer.succeed({})


@dataclass
class FakeClient:
    profile: str = "bob"
    jid: JID = field(default_factory=lambda: JID("bob@example.org/cache"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = run(_open(f"sqlite+aiosqlite:///{tmp_path / 'cache.db'}"))
    yield opened
    run(_close(opened))


async def _open(url: str) -> Store:
    return await Store.open(url)


async def _close(store: Store) -> None:
    await store.close()


async def sync(store: Store, service: FakeService, limit: int = 5000) -> NodeInfo:
    """Run a sync; return the node as the store has it afterwards (also on failure)."""
    node_info = await store.get_or_create_node("bob", SERVICE, NODE)
    node_sync = NodeSync(
        node_info,
        FakeClient(),
        store_access=StoreAccess(None, store=store),
        pubsub=service,  # type: ignore[arg-type]
        analyser=None,
        settings=Settings(cache_limit=limit, page_size=PAGE_SIZE),
        queues=KeyedQueues(),
        counters=Counters(),
    )
    node_sync.start()
    await node_sync.wait()
    if node_sync.error is not None:
        raise node_sync.error
    return await stored_node(store)


async def stored_node(store: Store) -> NodeInfo:
    """The node as the store has it now (after a sync, failed or not)."""
    node_info = await store.get_node("bob", SERVICE, NODE)
    assert node_info is not None
    return node_info


async def cached_ids(store: Store, node_info: NodeInfo) -> list[str]:
    return (await store.get_items(node_info.id)).item_ids


def ids(n: int) -> list[str]:
    return [f"item-{i:03d}" for i in range(n)]


async def sync_fails(store: Store, service: FakeService, match: str) -> NodeInfo:
    with pytest.raises(SyncError, match=match) as error:
        await sync(store, service)
    assert NODE in str(error.value) and SERVICE in str(error.value)
    node_info = await stored_node(store)
    assert node_info.sync_state is not SyncState.COMPLETED
    return node_info


# --- the reference: an honest service ------------------------------------------------


async def test_an_honest_service_is_synchronised_completely_in_order(store: Store) -> None:
    service = FakeService(ids(25))
    node_info = await sync(store, service)
    assert node_info.sync_state is SyncState.COMPLETED
    assert await cached_ids(store, node_info) == ids(25)
    assert len(service.requests) == 3


# --- the same item twice across pages ---------------------------------------------------


async def test_an_item_repeated_on_the_next_page_stops_the_sync_without_completing(
    store: Store,
) -> None:
    def overlapping(service: FakeService, request: rsm.RSMRequest) -> Page:
        page_ids, data = service.honest_page(request)
        if request.before != "":
            page_ids.append(service.key_of(request.before))  # the previous page's first
        return page_ids, data

    service = FakeService(ids(25), page=overlapping)
    await sync_fails(store, service, "item-015 twice")
    assert len(service.requests) == 2


async def test_a_service_ignoring_before_is_stopped_after_one_repeated_page(store: Store) -> None:
    def always_last_page(service: FakeService, request: rsm.RSMRequest) -> Page:
        return service.honest_page(rsm.RSMRequest(max_=request.max, before=""))

    service = FakeService(ids(25), page=always_last_page)
    await sync_fails(store, service, "twice")
    assert len(service.requests) == 2


async def test_a_cycle_of_pages_is_detected_and_stops_the_sync(store: Store) -> None:
    """Pages A, B, A, B...: the third page repeats the first one's items."""

    def cycling(service: FakeService, request: rsm.RSMRequest) -> Page:
        if request.before in ("", "item-005"):
            return service.honest_page(rsm.RSMRequest(max_=request.max, before=""))
        return service.honest_page(request)

    service = FakeService(ids(25), page=cycling)
    await sync_fails(store, service, "twice")
    assert len(service.requests) == 3


async def test_an_error_for_the_services_own_key_fails_without_completing(
    store: Store,
) -> None:
    """A service answering ``item-not-found`` for the key it gave on the previous page."""

    def forgetful(service: FakeService, request: rsm.RSMRequest) -> Page:
        if request.before != "":
            raise StanzaError("item-not-found")
        return service.honest_page(request)

    with pytest.raises(StanzaError):
        await sync(store, FakeService(ids(25), page=forgetful))
    node_info = await stored_node(store)
    assert node_info.sync_state is SyncState.ERROR
    assert node_info.sync_error == "the pubsub service answered item-not-found"
    assert await store.count_items(node_info.id) == 0


# --- RSM answers without `last`, with a lying `count`, keys that are not ids ----------


async def test_rsm_answers_without_last_are_paged_by_first(store: Store) -> None:
    def no_last(service: FakeService, request: rsm.RSMRequest) -> Page:
        page_ids, data = service.honest_page(request)
        data.pop("last", None)
        return page_ids, data

    node_info = await sync(store, FakeService(ids(25), page=no_last))
    assert node_info.sync_state is SyncState.COMPLETED
    assert await cached_ids(store, node_info) == ids(25)


@pytest.mark.parametrize("count", [0, 3, 24])
async def test_a_count_lower_than_the_items_changes_nothing_to_what_is_cached(
    store: Store, count: int
) -> None:
    def lying(service: FakeService, request: rsm.RSMRequest) -> Page:
        page_ids, data = service.honest_page(request)
        data["count"] = count
        return page_ids, data

    node_info = await sync(store, FakeService(ids(25), page=lying))
    assert node_info.sync_state is SyncState.COMPLETED
    assert await cached_ids(store, node_info) == ids(25)
    # the cache answers its own count, not the service's lie
    page = await store.get_items(node_info.id, rsm_max=0)
    assert page.count == 25


@pytest.mark.parametrize("count", [26, 1000])
async def test_a_count_higher_than_the_items_paged_never_completes_the_node(
    store: Store, count: int
) -> None:
    # either the count lies or paging ended early: the cache cannot tell, so it does
    # not claim to hold the whole node
    def lying(service: FakeService, request: rsm.RSMRequest) -> Page:
        page_ids, data = service.honest_page(request)
        data["count"] = count
        return page_ids, data

    node_info = await sync_fails(store, FakeService(ids(25), page=lying), f"service counts {count}")
    assert node_info.sync_state is not SyncState.COMPLETED


async def test_rsm_answers_without_count_or_index_are_paged_to_the_end(store: Store) -> None:
    def bare(service: FakeService, request: rsm.RSMRequest) -> Page:
        page_ids, data = service.honest_page(request)
        return page_ids, {k: v for k, v in data.items() if k in ("first", "last")}

    node_info = await sync(store, FakeService(ids(25), page=bare))
    assert node_info.sync_state is SyncState.COMPLETED
    assert await cached_ids(store, node_info) == ids(25)


async def test_opaque_keys_that_are_not_item_ids_are_followed_not_stored(store: Store) -> None:
    """ejabberd's RSM keys are timestamps: the sync pages with them, the cache keeps
    item ids, and asking the cache for a page after a server key is a cache miss."""
    service = FakeService(ids(25), key_of=lambda i: f"1700000000{i[-3:]}000")
    node_info = await sync(store, service)
    assert node_info.sync_state is SyncState.COMPLETED
    assert await cached_ids(store, node_info) == ids(25)
    assert [r.before for r in service.requests if r] == ["", "1700000000015000", "1700000000005000"]
    from libervia_cache.storage import UnknownRSMKey

    with pytest.raises(UnknownRSMKey):
        await store.get_items(node_info.id, rsm_max=5, after="1700000000015000")


async def test_a_service_sending_more_than_asked_is_stored_once_and_in_order(store: Store) -> None:
    def generous(service: FakeService, request: rsm.RSMRequest) -> Page:
        return service.honest_page(rsm.RSMRequest(max_=request.max + 5, before=request.before))

    node_info = await sync(store, FakeService(ids(32), page=generous))
    assert node_info.sync_state is SyncState.COMPLETED
    assert await cached_ids(store, node_info) == ids(32)


async def test_an_endless_service_stops_at_the_cache_limit_keeping_the_newest(
    store: Store,
) -> None:
    """A service inventing older items forever: the per-node limit ends the sync."""
    counter = iter(range(10**6))

    def endless(service: FakeService, request: rsm.RSMRequest) -> Page:
        page_ids = [f"gen-{next(counter):06d}" for _ in range(request.max)][::-1]
        return page_ids, {"first": page_ids[0], "last": page_ids[-1], "count": 10**9}

    service = FakeService([], page=endless)
    node_info = await sync(store, service, limit=35)
    assert len(service.requests) == 4
    assert node_info.sync_state is SyncState.COMPLETED
    assert node_info.extra.get("truncated") is True
    cached = await cached_ids(store, node_info)
    assert len(cached) == 35 and cached[-1] == "gen-000000"


async def test_items_without_id_are_skipped_and_the_others_cached(store: Store) -> None:
    def anonymous(service: FakeService, request: rsm.RSMRequest) -> Page:
        page_ids, data = service.honest_page(request)
        return [None, *page_ids], data

    node_info = await sync(store, FakeService(ids(25), page=anonymous))
    assert node_info.sync_state is SyncState.COMPLETED
    assert await cached_ids(store, node_info) == ids(25)


async def test_an_empty_node_is_completed_empty(store: Store) -> None:
    node_info = await sync(store, FakeService([]))
    assert node_info.sync_state is SyncState.COMPLETED
    assert await cached_ids(store, node_info) == []


# --- inconsistent answers: never a partial node marked complete ---------------------


async def test_an_item_repeated_within_one_page_stops_the_sync(store: Store) -> None:
    """DESIGN: "A service returning the same item twice is detected and the sync stops
    cleanly". Today only repeats across pages are detected: within a page the last
    occurrence silently wins (item-017 is stored after item-019) and the node is
    COMPLETED."""

    def repeated(service: FakeService, request: rsm.RSMRequest) -> Page:
        page_ids, data = service.honest_page(request)
        if request.before == "":
            page_ids.insert(5, page_ids[2])
        return list(page_ids), data

    with pytest.raises(SyncError, match="item-017"):
        await sync(store, FakeService(ids(25), page=repeated))
    node_info = await stored_node(store)
    assert node_info.sync_state is not SyncState.COMPLETED


async def test_a_full_rsm_page_without_keys_is_not_taken_for_the_whole_node(
    store: Store,
) -> None:
    """An RSM answer with a count (25) but no first/last keys, on a full page: the sync
    cannot ask for the older items, yet marks the node COMPLETED with 10 of 25."""

    def keyless(service: FakeService, request: rsm.RSMRequest) -> Page:
        page_ids, data = service.honest_page(request)
        return page_ids, {"count": data["count"]}

    try:
        node_info = await sync(store, FakeService(ids(25), page=keyless))
    except SyncError:
        node_info = await stored_node(store)
    assert node_info.sync_state is not SyncState.COMPLETED or (
        await cached_ids(store, node_info) == ids(25)
    )


async def test_an_empty_page_before_the_oldest_item_is_not_the_end_of_the_node(
    store: Store,
) -> None:
    """libervia-pubsub answers an empty page to a `before` key it does not know, e.g. the
    first item of the previous page retracted meanwhile. The previous page said 15 older
    items exist (index 15); the sync takes the empty page for the oldest one and marks
    the node COMPLETED with only the newest 10."""

    def empty_after_first(service: FakeService, request: rsm.RSMRequest) -> Page:
        if request.before != "":
            return [], {"count": len(service.ids)}
        return service.honest_page(request)

    try:
        node_info = await sync(store, FakeService(ids(25), page=empty_after_first))
    except SyncError:
        node_info = await stored_node(store)
    assert node_info.sync_state is not SyncState.COMPLETED or (
        len(await cached_ids(store, node_info)) > PAGE_SIZE
    )


async def test_a_first_page_claiming_index_zero_with_more_items_counted_is_not_complete(
    store: Store,
) -> None:
    """The newest page says index 0 while count says 25 and it holds 10: inconsistent
    (0 + 10 != 25), yet the sync stops there and marks the node COMPLETED."""

    def index_zero(service: FakeService, request: rsm.RSMRequest) -> Page:
        page_ids, data = service.honest_page(request)
        data["index"] = 0
        return page_ids, data

    try:
        node_info = await sync(store, FakeService(ids(25), page=index_zero))
    except SyncError:
        node_info = await stored_node(store)
    assert node_info.sync_state is not SyncState.COMPLETED or (
        await cached_ids(store, node_info) == ids(25)
    )
