"""Pages kept in memory on PostgreSQL (:mod:`libervia_cache.storage.pagecache`).

A page read at a version of its node's row is given again once the row is checked to be
still at that version. That is only right if every write that changes what a page shows
gives the row a new version: the store tests below make each kind of write, and check
that the kept page is no longer given and that the next answer is the page as it is now.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from libervia_cache.storage import NodeChanged, NodeInfo, Store, SyncState
from libervia_cache.storage.aio import aio
from libervia_cache.storage.engine import asyncpg_dsn
from libervia_cache.storage.pagecache import PageCache
from libervia_cache.storage.pages import PageRequest
from libervia_cache.storage.records import ItemsPage

from .conftest import items

IDS = [f"i{n}" for n in range(10)]

# ------------------------------------------------------------------ the cache alone


def a_page(*ids: str, size: int = 10) -> ItemsPage:
    return ItemsPage(items=["x" * size for _ in ids], item_ids=list(ids), count=len(ids))


def test_a_page_is_given_back_at_its_version_only() -> None:
    cache = PageCache()
    request = PageRequest(rsm_max=2)
    cache.put(1, request, 100, a_page("a", "b"))
    assert cache.get(1, request, 100) == a_page("a", "b")
    assert cache.get(1, request, 101) is None  # the row changed
    assert cache.get(2, request, 100) is None  # another node
    assert cache.get(1, PageRequest(rsm_max=3), 100) is None  # another request
    cache.put(1, request, 101, a_page("c"))
    assert cache.get(1, request, 100) is None
    assert cache.get(1, request, 101) == a_page("c")
    assert len(cache) == 1


def test_a_page_given_is_a_copy() -> None:
    cache = PageCache()
    request = PageRequest(max_items=2)
    read = a_page("a", "b")
    cache.put(1, request, 7, read)
    read.items.clear()  # the reader's page changes after it was kept
    given = cache.get(1, request, 7)
    assert given is not None and given.item_ids == ["a", "b"] and len(given.items) == 2
    given.item_ids.append("z")
    assert cache.get(1, request, 7) == a_page("a", "b")


def test_the_least_recently_used_pages_go_first() -> None:
    cache = PageCache(max_pages=3, max_characters=1000)
    for node_id in (1, 2, 3):
        cache.put(node_id, PageRequest(), 1, a_page("a"))
    assert cache.get(1, PageRequest(), 1) is not None  # 1 used: 2 is now the oldest
    cache.put(4, PageRequest(), 1, a_page("a"))
    assert [cache.get(n, PageRequest(), 1) is not None for n in (1, 2, 3, 4)] == [
        True, False, True, True,
    ]  # fmt: skip


def test_the_cache_holds_at_most_its_characters() -> None:
    cache = PageCache(max_pages=100, max_characters=100)
    cache.put(1, PageRequest(), 1, a_page("a", "b", size=30))  # 62 characters
    cache.put(2, PageRequest(), 1, a_page("c", size=30))  # 31 more
    assert cache.characters == 93 and len(cache) == 2
    cache.put(3, PageRequest(), 1, a_page("d", size=30))
    assert cache.characters == 62 and cache.get(1, PageRequest(), 1) is None
    cache.put(4, PageRequest(), 1, a_page("e", size=200))  # larger than the whole cache
    assert cache.get(4, PageRequest(), 1) is None and cache.characters == 62
    cache.discard(2, PageRequest())
    cache.discard(2, PageRequest())  # twice: nothing more
    assert cache.characters == 31 and len(cache) == 1
    cache.clear()
    assert cache.characters == 0 and len(cache) == 0


# ------------------------------------------------------------------ in the store

Write = Callable[[Store, NodeInfo, str], Awaitable[Any]]

#: every kind of write that changes a node's items or its row: each must give the row
#: a new version (or delete it)
WRITES: dict[str, Write] = {
    "an event publishing an item": lambda s, n, t: s.cache_items(n.id, items("new")),
    "an event republishing an item": lambda s, n, t: s.cache_items(n.id, items("i3")),
    "a republish kept in place": lambda s, n, t: s.cache_items(n.id, items("i3"), keep_place=True),
    "an event at the cache limit": lambda s, n, t: s.cache_items(n.id, items("new"), limit=5),
    "the server's own max_items": lambda s, n, t: s.cache_items(n.id, [], server_max=4),
    "server keys learnt": lambda s, n, t: s.learn_keys(n.id, {"i8": "k8", "i9": "k9"}),
    "a retract": lambda s, n, t: s.delete_items(n.id, ["i9"]),
    "a retract deep in the node": lambda s, n, t: s.delete_items(n.id, ["i0"]),
    "a node purge": lambda s, n, t: s.purge_node_items(n.id),
    "a purge by filter": lambda s, n, t: s.purge({"nodes": [n.name]}),
    "a purge of another node": lambda s, n, t: s.purge({"nodes": ["other"]}),
    "a node's field": lambda s, n, t: s.update_node(n.id, server_count=3),
    "a new sync": lambda s, n, t: s.begin_sync(n.id, {}),
    "a sync ending in error": lambda s, n, t: s.end_sync(n.id, t, SyncState.ERROR, "boom"),
    "a node deletion": lambda s, n, t: s.delete_node(n.id),
    "nodes deleted by filter": lambda s, n, t: s.delete_nodes(names=[n.name]),
    "a reset": lambda s, n, t: s.reset(),
}

PAGES: list[dict[str, Any]] = [
    {"rsm_max": 3, "before": ""},
    {"rsm_max": 3, "keys": "rsm_key", "before": ""},
    {"max_items": 4},
    {"item_ids": ["i2", "i9"]},
    {"rsm_max": 2, "index": 0, "order_by": "creation"},
]


class Statements:
    """The statements the store's PostgreSQL read connections run."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sql: list[str] = []
        reader = store._pg_reader
        assert reader is not None
        fetch = reader.fetch

        async def counted(sql: str, *args: Any) -> Any:
            self.sql.append(sql)
            return await fetch(sql, *args)

        monkeypatch.setattr(reader, "fetch", counted)

    def taken(self) -> list[str]:
        taken, self.sql = self.sql, []
        return ["version" if "SELECT xmin FROM" in sql else "page" for sql in taken]


async def synced(store: Store, node: NodeInfo) -> tuple[NodeInfo, str]:
    token = await store.begin_sync(node.id, {})
    await store.cache_items(
        node.id, items(*IDS), complete=True, token=token, keys={i: f"k{i}" for i in IDS[:8]}
    )
    other = await store.get_or_create_node(node.profile, node.service, "other")
    await store.cache_items(other.id, items("o1", "o2"))
    found = await store.get_node(node.profile, node.service, node.name)
    assert found is not None and found.version is not None
    return found, token


async def page_now(store: Store, node: NodeInfo, page: dict[str, Any]) -> ItemsPage | None:
    """What the two-step read gives now (None: the node is no longer served)."""
    now = await store.get_node(node.profile, node.service, node.name)
    if now is None or now.sync_state is not SyncState.COMPLETED:
        return None
    try:
        return await store.get_items(now.id, synced_by=now.sync_token, **page)
    except NodeChanged:
        return None


@pytest.mark.postgresql_only
async def test_a_page_read_before_costs_a_version_lookup_only(
    store: Store, node: NodeInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    found, _ = await synced(store, node)
    statements = Statements(store, monkeypatch)
    for page in PAGES:
        first = await store.get_items_unless_changed(found, **page)
        again = await store.get_items_unless_changed(found, **page)
        assert first is not None and again == first == await page_now(store, found, page)
        assert statements.taken()[:2] == ["page", "version"], page
    assert len(store.pages) == len(PAGES)


@pytest.mark.postgresql_only
@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
async def test_a_page_kept_is_not_given_after_a_write(
    store: Store, node: NodeInfo, write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    found, token = await synced(store, node)
    for page in PAGES:
        assert await store.get_items_unless_changed(found, **page) is not None  # kept
    statements = Statements(store, monkeypatch)

    await write(store, found, token)

    now = await store.get_node(node.profile, node.service, node.name)
    touched = now is None or now.version != found.version
    if write is WRITES["a purge of another node"]:
        assert not touched  # another node's purge leaves this one's pages
        assert now is not None
        for page in PAGES:
            assert await store.get_items_unless_changed(now, **page) == await page_now(
                store, now, page
            )
        return
    assert touched, "the write left the node's row at its version"
    for page in PAGES:
        statements.taken()
        assert await store.get_items_unless_changed(found, **page) is None, page
        assert statements.taken() == ["version"]
        expected = await page_now(store, found, page)
        if now is not None and expected is not None:
            assert await store.get_items_unless_changed(now, **page) == expected, page


@pytest.mark.postgresql_only
async def test_a_page_kept_is_the_page_once_the_write_is_committed_only(
    store: Store, node: NodeInfo
) -> None:
    """A write still in its transaction is not seen: the kept page is still the node's
    committed page, and is given until the write commits."""
    found, _ = await synced(store, node)
    page = {"rsm_max": 2, "before": ""}
    kept = await store.get_items_unless_changed(found, **page)
    assert kept is not None and kept.item_ids == ["i8", "i9"]
    # a writer of the node, as the store's writers start (the row taken first), on a
    # connection of its own
    writer = await aio(asyncpg.connect(asyncpg_dsn(store.engine.url.render_as_string(False))))
    try:
        await aio(writer.execute("BEGIN"))
        await aio(
            writer.execute(
                "UPDATE pubsub_nodes SET sync_token = sync_token WHERE id = $1", found.id
            )
        )
        await aio(
            writer.execute(
                "DELETE FROM pubsub_items WHERE node_id = $1 AND item_id = 'i9'", found.id
            )
        )
        assert await store.get_items_unless_changed(found, **page) == kept
        await aio(writer.execute("COMMIT"))
    finally:
        await aio(writer.close())
    assert await store.get_items_unless_changed(found, **page) is None
