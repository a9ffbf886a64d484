"""Nodes: creation, updates, deletion (cascading to items), listing."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from twisted.internet import defer

from libervia_cache.storage import NodeInfo, Store, SyncState
from libervia_cache.storage.aio import aio

from .conftest import items


async def test_get_or_create_node_is_idempotent(store: Store) -> None:
    created = await store.get_or_create_node("alice", "svc", "n", analyser="blog", type_="blog")
    again = await store.get_or_create_node("alice", "svc", "n", type_="other")
    assert again == created
    assert (created.analyser, created.type, created.extra) == ("blog", "blog", {})
    assert await store.get_node("alice", "svc", "n") == created
    assert await store.get_node("bob", "svc", "n") is None


async def test_update_node_sets_state_time(store: Store, node: NodeInfo) -> None:
    await store.update_node(
        node.id, sync_state=SyncState.IN_PROGRESS, subscribed=True, extra={"k": [1]}, type_="t"
    )
    updated = await store.get_node(node.profile, node.service, node.name)
    assert updated is not None
    assert updated.sync_state is SyncState.IN_PROGRESS and updated.sync_state_updated
    assert (updated.subscribed, updated.extra, updated.type) == (True, {"k": [1]}, "t")


async def test_update_node_rejects_unknown_fields(store: Store, node: NodeInfo) -> None:
    with pytest.raises(TypeError, match="colour"):
        await store.update_node(node.id, colour="blue")


async def test_delete_node_deletes_its_items(store: Store, node: NodeInfo) -> None:
    await store.cache_items(node.id, items("a", "b"))
    await store.delete_node(node.id)
    assert await store.get_node(node.profile, node.service, node.name) is None
    assert await store.count_items(node.id) == 0
    assert await store.search({"fts": "text"}) == []


async def test_delete_nodes_by_filters(store: Store) -> None:
    await store.get_or_create_node("alice", "s1", "a", type_="blog")
    await store.get_or_create_node("alice", "s1", "b")
    await store.get_or_create_node("bob", "s2", "c", type_="events")
    assert await store.delete_nodes(profiles=["alice"], types=[None]) == 1
    assert await store.get_node("alice", "s1", "b") is None
    assert await store.delete_nodes(services=["s2"], names=["c"]) == 1
    assert [n.name for n in await store.get_nodes()] == ["a"]


async def test_get_nodes_by_sync_state(store: Store) -> None:
    running = await store.get_or_create_node("p", "s", "a", sync_state=SyncState.IN_PROGRESS)
    await store.get_or_create_node("p", "s", "b", sync_state=SyncState.COMPLETED)
    assert await store.get_nodes(sync_state=SyncState.IN_PROGRESS) == [running]
    assert len(await store.get_nodes(profile="p", service="s")) == 2
    assert await store.get_nodes(profile="q") == []


async def test_reset_forgets_everything(store: Store, node: NodeInfo) -> None:
    await store.cache_items(node.id, items("a"))
    await store.reset()
    assert await store.get_nodes() == []
    assert await store.search({}) == []


async def test_the_fast_node_lookup_answers_what_the_engine_answers(store: Store) -> None:

    created = await store.get_or_create_node(
        "bob", "pubsub.example.org", "n", analyser="a", type_="t", subtype="s", extra={"k": [1]}
    )
    await store.update_node(created.id, sync_state=SyncState.COMPLETED, subscribed=True)
    fast = await store.get_node("bob", "pubsub.example.org", "n")
    slow = await aio(store._get_node("bob", "pubsub.example.org", "n"))
    assert fast == slow
    assert fast is not None and fast.sync_state is SyncState.COMPLETED
    assert fast.sync_state_updated is not None and fast.sync_state_updated.tzinfo is not None
    assert fast.extra == {"k": [1]} and fast.subscribed is True
    assert await store.get_node("bob", "pubsub.example.org", "other") is None


async def test_a_cancelled_write_never_leaves_a_transaction_open(
    store: Store, tmp_path: Path
) -> None:
    """Cancelling the Deferred of a write (a cancelled sync) stops the caller waiting, not
    the transaction: it commits, the write lock is released, and the next writes of
    this store and of another process go through at once."""
    node = await store.get_or_create_node("alice", "svc", "blog")
    for attempt in range(20):
        pending = store.cache_items(node.id, items(*(f"a{attempt}-{n}" for n in range(200))))
        pending.cancel()  # at once: the transaction has started or is about to
        with pytest.raises((defer.CancelledError, asyncio.CancelledError)):
            await pending
    await store.cache_items(node.id, items("after"))
    other = sqlite3.connect(tmp_path / "cache.db", timeout=0.5)
    try:
        other.execute("BEGIN IMMEDIATE")  # fails at once if a transaction stayed open
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert await store.count_items(node.id) == 20 * 200 + 1
