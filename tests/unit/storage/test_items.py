"""get_items reproduces XEP-0060 items requests and XEP-0059 RSM paging."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from libervia_cache.storage import (
    NodeChanged,
    NodeGone,
    NodeInfo,
    Store,
    SyncState,
    SyncSuperseded,
    UnknownRSMKey,
)
from libervia_cache.storage.aio import aio
from libervia_cache.storage.models import nodes_table

from .conftest import item, items

IDS = [f"i{n}" for n in range(10)]


async def fill(store: Store, node: NodeInfo, ids: list[str] = IDS) -> None:
    await store.cache_items(node.id, items(*ids))


async def test_empty_node_answers_no_items_and_count_zero(store: Store, node: NodeInfo) -> None:
    page = await store.get_items(node.id)
    assert page.items == [] and page.first is None and page.last is None
    page = await store.get_items(node.id, rsm_max=20)
    assert (page.item_ids, page.count, page.index) == ([], 0, None)
    page = await store.get_items(node.id, rsm_max=20, before="")
    assert (page.item_ids, page.count) == ([], 0)


async def test_unknown_node_is_an_empty_node(store: Store) -> None:
    page = await store.get_items(12345, rsm_max=5)
    assert (page.item_ids, page.count) == ([], 0)


async def test_one_item_node(store: Store, node: NodeInfo) -> None:
    await fill(store, node, ["only"])
    page = await store.get_items(node.id, rsm_max=1)
    assert (page.item_ids, page.first, page.last, page.index, page.count) == (
        ["only"], "only", "only", 0, 1,
    )  # fmt: skip
    page = await store.get_items(node.id, rsm_max=1, after="only")
    assert (page.item_ids, page.count) == ([], 1)


async def test_no_limit_returns_every_item_oldest_first(store: Store, node: NodeInfo) -> None:
    ids = [f"i{n}" for n in range(45)]
    await fill(store, node, ids)
    page = await store.get_items(node.id)
    assert page.item_ids == ids  # no hidden page size of 20
    assert page.count is None and page.index is None


async def test_max_items_returns_the_newest_oldest_first(store: Store, node: NodeInfo) -> None:
    await fill(store, node)
    page = await store.get_items(node.id, max_items=3)
    assert page.item_ids == ["i7", "i8", "i9"]
    page = await store.get_items(node.id, max_items=30)
    assert page.item_ids == IDS


async def test_item_ids_in_node_order_unknown_dropped(store: Store, node: NodeInfo) -> None:
    await fill(store, node)
    page = await store.get_items(node.id, item_ids=["i5", "nope", "i1"])
    assert page.item_ids == ["i1", "i5"]
    assert page.items[0].startswith("<item") and "i1" in page.items[0]


async def test_rsm_first_page_then_after(store: Store, node: NodeInfo) -> None:
    await fill(store, node)
    page = await store.get_items(node.id, rsm_max=4)
    assert (page.item_ids, page.first, page.last, page.index, page.count) == (
        IDS[:4], "i0", "i3", 0, 10,
    )  # fmt: skip
    page = await store.get_items(node.id, rsm_max=4, after=page.last)
    assert (page.item_ids, page.index) == (IDS[4:8], 4)
    page = await store.get_items(node.id, rsm_max=4, after=page.last)
    assert (page.item_ids, page.index) == (IDS[8:], 8)


async def test_rsm_page_boundary_exactly_at_the_end(store: Store, node: NodeInfo) -> None:
    await fill(store, node)
    page = await store.get_items(node.id, rsm_max=5, after="i4")
    assert page.item_ids == IDS[5:]
    page = await store.get_items(node.id, rsm_max=5, after="i9")
    assert (page.item_ids, page.index, page.count) == ([], None, 10)


async def test_rsm_last_page_and_before(store: Store, node: NodeInfo) -> None:
    await fill(store, node)
    page = await store.get_items(node.id, rsm_max=3, before="")
    assert (page.item_ids, page.index) == (IDS[7:], 7)
    page = await store.get_items(node.id, rsm_max=3, before=page.first)
    assert (page.item_ids, page.index) == (IDS[4:7], 4)
    page = await store.get_items(node.id, rsm_max=5, before="i2")
    assert (page.item_ids, page.index) == (IDS[:2], 0)


async def test_rsm_index(store: Store, node: NodeInfo) -> None:
    await fill(store, node)
    page = await store.get_items(node.id, rsm_max=3, index=6)
    assert (page.item_ids, page.index, page.count) == (IDS[6:9], 6, 10)
    page = await store.get_items(node.id, rsm_max=3, index=50)
    assert (page.item_ids, page.count) == ([], 10)


async def test_rsm_max_zero_returns_the_count_only(store: Store, node: NodeInfo) -> None:
    await fill(store, node)
    page = await store.get_items(node.id, rsm_max=0)
    assert (page.items, page.count, page.index, page.first) == ([], 10, None, None)


@pytest.mark.parametrize("anchor", ["after", "before"])
async def test_unknown_rsm_key_is_reported(store: Store, node: NodeInfo, anchor: str) -> None:
    await fill(store, node)
    with pytest.raises(UnknownRSMKey):
        await store.get_items(node.id, rsm_max=3, **{anchor: "1700000000000000"})


async def test_max_items_with_rsm_is_rejected(store: Store, node: NodeInfo) -> None:
    with pytest.raises(ValueError):
        await store.get_items(node.id, max_items=3, rsm_max=3)


async def test_republished_item_becomes_newest_keeps_creation_order(
    store: Store, node: NodeInfo
) -> None:
    await fill(store, node, ["a", "b", "c"])
    await store.cache_items(node.id, [item("a", "edited")])
    page = await store.get_items(node.id, rsm_max=10)
    assert (page.item_ids, page.count) == (["b", "c", "a"], 3)
    assert "edited" in page.items[-1]
    page = await store.get_items(node.id, order_by="creation")
    assert page.item_ids == ["a", "b", "c"]


async def test_descending_order(store: Store, node: NodeInfo) -> None:
    await fill(store, node)
    page = await store.get_items(node.id, rsm_max=3, descending=True)
    assert (page.item_ids, page.index) == (["i9", "i8", "i7"], 0)
    page = await store.get_items(node.id, rsm_max=3, after="i7", descending=True)
    assert (page.item_ids, page.index) == (["i6", "i5", "i4"], 3)


async def test_oldest_batches_go_before_existing_items(store: Store, node: NodeInfo) -> None:
    # a sync pages backwards from the newest page
    await store.cache_items(node.id, items("i7", "i8", "i9"), where="oldest")
    await store.cache_items(node.id, items("i4", "i5", "i6"), where="oldest")
    await store.cache_items(node.id, items("i0", "i1", "i2", "i3"), where="oldest")
    page = await store.get_items(node.id, rsm_max=4, index=3)
    assert (page.item_ids, page.index, page.count) == (IDS[3:7], 3, 10)
    page = await store.get_items(node.id, order_by="creation")
    assert page.item_ids == IDS


async def test_duplicate_ids_in_one_batch_last_wins(store: Store, node: NodeInfo) -> None:
    await store.cache_items(node.id, [item("a", "first"), item("b"), item("a", "second")])
    page = await store.get_items(node.id)
    assert page.item_ids == ["b", "a"] and "second" in page.items[1]


async def test_retract_keeps_index_and_count_exact(store: Store, node: NodeInfo) -> None:
    await fill(store, node)
    assert await store.delete_items(node.id, ["i2", "i5", "unknown"]) == 2
    page = await store.get_items(node.id, rsm_max=3, after="i3")
    assert (page.item_ids, page.index, page.count) == (["i4", "i6", "i7"], 3, 8)
    assert await store.count_items(node.id) == 8


async def test_purge_node_items_empties_the_node(store: Store, node: NodeInfo) -> None:
    await fill(store, node)
    assert await store.purge_node_items(node.id) == 10
    assert (await store.get_items(node.id, rsm_max=5)).count == 0
    await fill(store, node, ["x"])
    assert (await store.get_items(node.id, rsm_max=5)).item_ids == ["x"]


@pytest.mark.parametrize(
    "item_id",
    ["it'em", 'it"em', "a; DROP TABLE pubsub_items; --", "%_\\", "é—日本語🙂", " ", "a" * 1000],
)
async def test_awkward_item_ids(store: Store, node: NodeInfo, item_id: str) -> None:
    await store.cache_items(node.id, items("before", item_id, "after"))
    page = await store.get_items(node.id, rsm_max=1, after=item_id)
    assert page.item_ids == ["after"]
    page = await store.get_items(node.id, item_ids=[item_id])
    assert page.item_ids == [item_id]
    assert await store.delete_items(node.id, [item_id]) == 1


async def test_unicode_and_large_payloads_round_trip(store: Store, node: NodeInfo) -> None:
    big = "ünïcødé 🙂 " * 50_000
    await store.cache_items(node.id, [item("big", big)])
    page = await store.get_items(node.id)
    assert big in page.items[0]
    assert len(page.items[0]) > 500_000


async def test_complete_batch_marks_the_node_completed(store: Store, node: NodeInfo) -> None:
    token = await store.begin_sync(node.id, {})
    await store.cache_items(node.id, items("a"), complete=True, token=token, server_count=1)
    refreshed = await store.get_node(node.profile, node.service, node.name)
    assert refreshed is not None and refreshed.sync_state is SyncState.COMPLETED
    assert refreshed.sync_state_updated is not None and refreshed.last_synced is not None
    assert refreshed.server_count == 1


async def test_only_a_sync_with_its_token_completes_a_node(store: Store, node: NodeInfo) -> None:
    with pytest.raises(ValueError, match="token"):
        await store.cache_items(node.id, items("a"), complete=True)


async def test_a_superseded_sync_writes_nothing(store: Store, node: NodeInfo) -> None:
    old = await store.begin_sync(node.id, {})
    await store.cache_items(node.id, items("a"), where="oldest", token=old)
    new = await store.begin_sync(node.id, {})  # a second sync takes the node over
    with pytest.raises(SyncSuperseded):
        await store.cache_items(node.id, items("x", "y"), where="oldest", token=old)
    with pytest.raises(SyncSuperseded):
        await store.cache_items(node.id, items("b"), complete=True, token=old)
    assert not await store.end_sync(node.id, old, SyncState.ERROR, "late failure")
    refreshed = await store.get_node(node.profile, node.service, node.name)
    assert refreshed is not None and refreshed.sync_state is SyncState.IN_PROGRESS
    assert await store.count_items(node.id) == 0
    await store.cache_items(node.id, items("c"), complete=True, token=new)
    assert (await store.get_items(node.id)).item_ids == ["c"]


async def test_a_failed_sync_empties_the_node_and_records_why(store: Store, node: NodeInfo) -> None:
    token = await store.begin_sync(node.id, {})
    await store.cache_items(node.id, items("a"), where="oldest", token=token)
    assert await store.end_sync(node.id, token, SyncState.ERROR, "the service answered forbidden")
    refreshed = await store.get_node(node.profile, node.service, node.name)
    assert refreshed is not None and refreshed.sync_state is SyncState.ERROR
    assert refreshed.sync_error == "the service answered forbidden"
    assert await store.count_items(node.id) == 0


async def test_writes_for_a_node_that_is_gone_write_nothing_anywhere(store: Store) -> None:
    gone = await store.get_or_create_node("alice", "svc", "blog")
    token = await store.begin_sync(gone.id, {})
    await store.reset()
    other = await store.get_or_create_node("bob", "svc", "blog")
    assert other.id != gone.id
    for write in (
        lambda: store.cache_items(gone.id, items("a")),
        lambda: store.cache_items(gone.id, items("a"), where="oldest", token=token),
        lambda: store.delete_items(gone.id, ["a"]),
        lambda: store.purge_node_items(gone.id),
        lambda: store.update_node(gone.id, subscribed=True),
        lambda: store.begin_sync(gone.id, {}),
    ):
        with pytest.raises(NodeGone):
            await write()
    assert await store.count_items(other.id) == 0


async def test_a_limit_keeps_the_newest_items_and_marks_the_node_truncated(
    store: Store, node: NodeInfo
) -> None:
    await store.cache_items(node.id, items("a", "b", "c"))
    await store.cache_items(node.id, items("d", "e"), limit=3)
    page = await store.get_items(node.id, rsm_max=10)
    assert (page.item_ids, page.count) == (["c", "d", "e"], 3)
    refreshed = await store.get_node(node.profile, node.service, node.name)
    assert refreshed is not None and refreshed.truncated
    assert [r["item_id"] for r in await store.search({"fts": "text"})] == ["e", "d", "c"]


async def test_parsed_may_be_null(store: Store, node: NodeInfo) -> None:
    await store.cache_items(node.id, [("x", "<item id='x'/>", None)])
    results = await store.search({"names": ["x"]})
    assert results[0]["parsed"] is None


async def test_reads_without_sqlite_reader_give_the_same_pages(
    store: Store, node: NodeInfo
) -> None:
    # the asyncio path (in-memory databases, busy database) answers like the lean path
    await fill(store, node)
    await store.delete_items(node.id, ["i3"])
    lean = await store.get_items(node.id, rsm_max=3, after="i2")
    reader, store._reader = store._reader, None
    try:
        assert await store.get_items(node.id, rsm_max=3, after="i2") == lean
    finally:
        store._reader = reader


async def test_in_memory_database_works() -> None:
    store = await Store.open("sqlite+aiosqlite:///:memory:")
    try:
        node = await store.get_or_create_node("p", "s", "n")
        await store.cache_items(node.id, items("a", "b"))
        await store.delete_items(node.id, ["a"])
        page = await store.get_items(node.id, rsm_max=5)
        assert (page.item_ids, page.count) == (["b"], 1)
    finally:
        await store.close()


async def gaps(store: Store, node_id: int) -> tuple[int | None, int | None]:
    async with store.engine.connect() as connection:
        row = (
            await connection.execute(
                select(nodes_table.c.position_gap_from, nodes_table.c.creation_gap_from).where(
                    nodes_table.c.id == node_id
                )
            )
        ).one()
    return row[0], row[1]


async def test_retracting_or_republishing_a_recent_item_leaves_reads_on_the_fast_path(
    store: Store, node: NodeInfo
) -> None:
    await store.cache_items(node.id, items(*(f"i{n}" for n in range(10))))
    await store.delete_items(node.id, ["i7"])
    await store.cache_items(node.id, items("i8"))  # republished: the newest
    # no gap was left for a read to close with a write
    assert await aio(gaps(store, node.id)) == (None, None)
    page = store.get_items(node.id, rsm_max=3, before="")
    if not store.postgresql:  # answered at once on the sqlite3 read connection
        assert page.called
    answer = await page
    assert answer.item_ids == ["i6", "i9", "i8"] and (answer.index, answer.count) == (6, 9)


async def test_a_page_read_for_a_node_another_sync_took_is_refused(
    store: Store, node: NodeInfo
) -> None:
    """The reader found the node completed by one sync; a new sync empties it before the
    page is read: the read says so rather than answering the emptied node."""
    token = await store.begin_sync(node.id, {})
    await store.cache_items(node.id, items("a", "b"), complete=True, token=token)
    found = await store.get_node(node.profile, node.service, node.name)
    assert found is not None and found.sync_token == token
    assert (await store.get_items(node.id, synced_by=token)).item_ids == ["a", "b"]
    await store.begin_sync(node.id, {})
    with pytest.raises(NodeChanged):
        await store.get_items(node.id, synced_by=token)
    await store.reset()
    with pytest.raises(NodeChanged):
        await store.get_items(node.id, synced_by=token)


async def test_a_page_unless_changed_is_the_page_of_the_node_as_last_read(
    store: Store, node: NodeInfo
) -> None:
    """The one-round-trip read: the page of the node as the reader last read it, the
    page get_node then get_items would give, for as long as the node's row is that row;
    None once anything changed the row, so the reader reads the node again."""
    token = await store.begin_sync(node.id, {})
    await store.cache_items(node.id, items(*IDS), complete=True, token=token)
    found = await store.get_node(node.profile, node.service, node.name)
    assert found is not None
    if not store.versions_rows:  # SQLite: nothing to save, the caller reads twice
        assert found.version is None
        assert await store.get_items_unless_changed(found, rsm_max=3) is None
        return
    assert found.version is not None
    for page in (
        {"rsm_max": 3},
        {"rsm_max": 3, "after": "i4"},
        {"rsm_max": 3, "before": ""},
        {"rsm_max": 2, "index": 4},
        {"max_items": 4},
        {"item_ids": ["i7", "i2"], "ids_order": "asked"},
        {"rsm_max": 3, "descending": True, "order_by": "creation"},
    ):
        expected = await store.get_items(node.id, synced_by=token, **page)
        assert await store.get_items_unless_changed(found, **page) == expected, page
    # what get_items would refuse is left to it
    assert await store.get_items_unless_changed(found, rsm_max=2, after="unknown") is None
    # a write of items gives the row a new version too (see test_page_cache.py)
    await store.cache_items(node.id, items("new"), token=token)
    assert await store.get_items_unless_changed(found, rsm_max=2, before="") is None
    found = await store.get_node(node.profile, node.service, node.name)
    assert found is not None
    page = await store.get_items_unless_changed(found, rsm_max=2, before="")
    assert page is not None and page.item_ids == ["i9", "new"] and page.count == 11
    # any change of the row, whichever column
    await store.update_node(node.id, server_count=11)
    assert await store.get_items_unless_changed(found, rsm_max=3) is None
    again = await store.get_node(node.profile, node.service, node.name)
    assert again is not None and again.version != found.version
    assert (await store.get_items_unless_changed(again, rsm_max=1)).item_ids == ["i0"]
    # a new sync, a reset
    await store.begin_sync(node.id, {})
    assert await store.get_items_unless_changed(again, rsm_max=3) is None
    await store.reset()
    assert await store.get_items_unless_changed(again, rsm_max=3) is None
