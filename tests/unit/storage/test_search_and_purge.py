"""Search (FTS5, filters, parsed-field operators, ordering, paging) and purge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from libervia_cache.storage import Store, SyncState, SyncSuperseded
from libervia_cache.storage.query import OPERATORS, SearchQueryError
from libervia_cache.storage.searching import OPERATOR_SQL

POSTS: list[tuple[str, str, dict[str, Any]]] = [
    ("p1", "<item id='p1'><title>Twisted and asyncio</title></item>",
     {"title": "Twisted", "n": 1, "tags": ["Python", "async"], "meta": {"lang": "en"}}),
    ("p2", "<item id='p2'><title>Café crème</title></item>",
     {"title": "café", "n": 2, "tags": ["food"], "meta": {"lang": "fr"}}),
    ("p3", "<item id='p3'><title>Python packaging</title></item>",
     {"title": "Packaging", "n": 3, "tags": ["python", "pip"]}),
]  # fmt: skip


async def fill(store: Store) -> None:
    blog = await store.get_or_create_node("alice", "svc", "blog", type_="blog")
    await store.cache_items(blog.id, POSTS)
    other = await store.get_or_create_node("bob", "svc2", "misc")
    await store.cache_items(other.id, [("o1", "<item id='o1'><x>python</x></item>", None)])


async def ids(store: Store, query: dict[str, Any]) -> list[str]:
    return [result["item_id"] for result in await store.search(query)]


def test_every_operator_has_sql() -> None:
    assert set(OPERATOR_SQL) == set(OPERATORS)


async def test_fts_matches_text_not_tag_names(store: Store) -> None:
    await fill(store)
    assert sorted(await ids(store, {"fts": "python"})) == ["o1", "p3"]
    assert await ids(store, {"fts": "title"}) == []  # a tag name
    assert await ids(store, {"fts": "cafe"}) == ["p2"]  # diacritics folded
    results = await store.search({"fts": "python", "with_payload": True})
    assert all("rank" in r and r["item_payload"].startswith("<item") for r in results)


async def test_fts_syntax_error_names_the_part(store: Store) -> None:
    with pytest.raises(SearchQueryError) as error:
        await store.search({"fts": '"unbalanced'})
    assert error.value.part == "fts"


async def test_rank_without_fts_is_an_error(store: Store) -> None:
    with pytest.raises(SearchQueryError, match="rank"):
        await store.search({"order-by": [{"order": "rank"}]})


async def test_node_filters_and_no_type(store: Store) -> None:
    await fill(store)
    assert sorted(await ids(store, {"profiles": ["bob"]})) == ["o1"]
    assert sorted(await ids(store, {"types": [None]})) == ["o1"]
    assert sorted(await ids(store, {"types": ["blog", None], "names": ["p1", "o1"]})) == [
        "o1", "p1",
    ]  # fmt: skip
    assert await ids(store, {"services": ["svc"], "nodes": ["nope"]}) == []


@pytest.mark.parametrize(
    ("path", "op", "value", "expected"),
    [
        ("n", "==", 2, ["p2"]),
        ("n", "!=", 2, ["o1", "p1", "p3"]),
        ("n", "<", 2, ["p1"]),  # strictly less, unlike the reference
        ("n", "<=", 2, ["p1", "p2"]),
        ("n", ">", 2, ["p3"]),
        ("n", ">=", 2, ["p2", "p3"]),
        ("n", "between", [2, 3], ["p2", "p3"]),
        ("n", "in", [1, 3], ["p1", "p3"]),
        ("n", "not_in", [1, 3], ["o1", "p2"]),
        # a list mixing numbers and strings, a number first (it was typed as numbers)
        ("n", "in", [1.0, "a", 3], ["p1", "p3"]),
        ("tags", "overlap", [2.5, "food"], ["p2"]),
        ("tags", "idisjoint", [2.5, "PYTHON"], ["o1", "p2"]),
        ("tags", "overlap", ["python", "food"], ["p2", "p3"]),
        ("tags", "ioverlap", ["PYTHON"], ["p1", "p3"]),
        ("tags", "disjoint", ["python"], ["o1", "p1", "p2"]),
        ("tags", "idisjoint", ["python"], ["o1", "p2"]),
        ("title", "like", "Pack%", ["p3"]),
        ("title", "like", "pack%", []),  # like is case-sensitive
        ("title", "ilike", "CAF_", ["p2"]),
        ("title", "not_like", "Pack%", ["o1", "p1", "p2"]),
        ("title", "not_ilike", "twist%", ["o1", "p2", "p3"]),
        ("meta.lang", "==", "fr", ["p2"]),
        (["tags", 0], "==", "python", ["p3"]),
        ("tags[1]", "==", "pip", ["p3"]),
        ("meta", "==", None, ["o1", "p3"]),
    ],
)
async def test_parsed_operators(
    store: Store, path: Any, op: str, value: Any, expected: list[str]
) -> None:
    await fill(store)
    found = await ids(store, {"parsed": [{"path": path, "op": op, "value": value}]})
    assert sorted(found) == expected


async def test_parsed_values_are_bound_not_spliced(store: Store) -> None:
    await fill(store)
    query = {"parsed": [{"path": "title", "op": "==", "value": "x' OR '1'='1"}]}
    assert await ids(store, query) == []


async def test_order_by_and_paging(store: Store) -> None:
    await fill(store)
    by_path = {"order-by": [{"path": "n", "direction": "desc"}], "types": ["blog"]}
    assert await ids(store, by_path) == ["p3", "p2", "p1"]
    assert await ids(store, {**by_path, "index": 1, "limit": 1}) == ["p2"]
    assert await ids(store, {"order-by": [{"order": "item_id"}]}) == ["o1", "p1", "p2", "p3"]
    ranked = await store.search({"fts": "python OR twisted", "order-by": [{"order": "rank"}]})
    assert [r["rank"] for r in ranked] == sorted(r["rank"] for r in ranked)


async def test_purge_by_filters_and_count(store: Store) -> None:
    await fill(store)
    assert await store.count_purge({"profiles": ["alice"]}) == 3
    assert await store.purge({"profiles": ["alice"], "types": ["blog"]}) == 3
    assert await ids(store, {}) == ["o1"]


async def test_purge_by_dates(store: Store) -> None:
    await fill(store)
    past = datetime.now(UTC) - timedelta(days=1)
    future = datetime.now(UTC) + timedelta(days=1)
    assert await store.count_purge({"created_before": past}) == 0
    assert await store.count_purge({"updated_before": future.isoformat()}) == 4
    assert await store.purge({"created_before": future, "services": ["svc2"]}) == 1


async def test_purge_makes_completed_nodes_incomplete(store: Store) -> None:
    blog = await store.get_or_create_node("alice", "svc", "blog")
    token = await store.begin_sync(blog.id, {})
    await store.cache_items(blog.id, POSTS, complete=True, token=token)
    assert [n.name for n in await store.nodes_to_purge({"nodes": ["blog"]})] == ["blog"]
    await store.purge({"nodes": ["blog"]})
    refreshed = await store.get_node("alice", "svc", "blog")
    assert refreshed is not None and refreshed.sync_state is None
    assert refreshed.sync_state is not SyncState.COMPLETED


async def test_purge_supersedes_the_sync_running_on_a_node_it_touches(store: Store) -> None:
    blog = await store.get_or_create_node("alice", "svc", "blog")
    token = await store.begin_sync(blog.id, {})
    await store.cache_items(blog.id, POSTS[2:], where="oldest", token=token)
    await store.purge({"nodes": ["blog"]})
    with pytest.raises(SyncSuperseded):
        await store.cache_items(blog.id, POSTS[:2], where="oldest", complete=True, token=token)
    refreshed = await store.get_node("alice", "svc", "blog")
    assert refreshed is not None and refreshed.sync_state is None


async def test_purge_keeps_pages_exact(store: Store) -> None:
    blog = await store.get_or_create_node("alice", "svc", "blog")
    await store.cache_items(blog.id, POSTS)
    await store.purge({"nodes": ["blog"], "created_before": "1970-01-02T00:00:00+00:00"})
    page = await store.get_items(blog.id, rsm_max=2, after="p1")
    assert (page.item_ids, page.index, page.count) == (["p2", "p3"], 1, 3)


async def test_invalid_purge_filter_is_rejected(store: Store) -> None:
    with pytest.raises(SearchQueryError, match="created_after"):
        await store.purge({"created_after": "2020-01-01"})


async def test_creation_and_modification_orders_follow_the_node_not_the_storing_time(
    store: Store,
) -> None:
    """A sync stores the newest page first: the order of a node is its own, not the times
    its items reached the cache."""
    from .conftest import items

    node = await store.get_or_create_node("alice", "svc", "blog")
    token = await store.begin_sync(node.id, {})
    await store.cache_items(node.id, items("c", "d"), where="oldest", token=token)
    await store.cache_items(node.id, items("a", "b"), where="oldest", complete=True, token=token)
    await store.cache_items(node.id, items("b"))  # republished: the newest modification

    async def ids(**query: Any) -> list[str]:
        return [r["item_id"] for r in await store.search(query)]

    assert await ids(**{"order-by": [{"order": "creation"}]}) == ["a", "b", "c", "d"]
    assert await ids(**{"order-by": [{"order": "creation", "direction": "desc"}]}) == [
        "d", "c", "b", "a",
    ]  # fmt: skip
    assert await ids(**{"order-by": [{"order": "modification"}]}) == ["a", "c", "d", "b"]
    assert await ids() == ["b", "d", "c", "a"]  # default: newest modification first


async def test_a_page_of_matches_by_rank_alone_is_the_page_the_filtered_search_gives(
    store: Store,
) -> None:
    # a page of full-text matches with no other filter is picked in the FTS table first
    # (SQLite; on PostgreSQL, the ids and ranks alone, nodes' filters included): it must
    # be the page the general statement gives (ties included: many items with the same
    # text rank alike, and the row id orders them), in both directions. A filter on
    # item ids (all of them) takes the general statement.
    texts = ["apple pie", "apple", "apple apple tart", "pie", "apple crumble apple pie"]
    posts = [
        (f"i{n:03d}", f"<item id='i{n:03d}'><t>{texts[n % 5]}</t></item>", None) for n in range(60)
    ]
    every_id = [post[0] for post in posts]
    node = await store.get_or_create_node("alice", "svc", "blog")
    await store.cache_items(node.id, posts)
    other = await store.get_or_create_node("bob", "svc", "blog")
    await store.cache_items(other.id, posts[:10])
    for fts in ("apple", "pie", "apple OR tart", "nothing"):
        for order in ([], [{"order": "rank"}], [{"order": "rank", "direction": "desc"}]):
            for index, limit in ((0, 7), (5, 10), (40, 30), (0, 0)):
                page = {"fts": fts, "order-by": order, "index": index, "limit": limit}
                for nodes in ({}, {"profiles": ["alice"]}):
                    fast = await store.search({**page, **nodes})
                    general = await store.search({**page, **nodes, "item_ids": every_id})
                    assert fast == general, (page, nodes)
    full = await store.search({"fts": "apple", "profiles": ["alice"], "limit": 100})
    assert len(full) == 48 and [r["rank"] for r in full] == sorted(r["rank"] for r in full)
