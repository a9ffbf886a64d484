"""The store on a PostgreSQL database that several daemons share.

A profile is served by one store at a time (its lease); writes of one node wait for
each other on the node's row, so a sync's token is checked against the latest state;
a lost lease connection suspends the leases until they are taken again; the read
connections recover from a server that dropped them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from libervia_cache.plugin.settings import database_url
from libervia_cache.storage import ProfileServedElsewhere, Store, SyncState, SyncSuperseded
from libervia_cache.storage.aio import aio
from libervia_cache.storage.leases import LEASE_APPLICATION_NAME, ProfileLeases
from libervia_cache.storage.records import NodeInfo
from tests.harness.databases import execute, query, server_url

from .conftest import PostgresSession, items


@pytest.fixture
def url(postgresql_session: PostgresSession) -> str:
    return postgresql_session.fresh()


async def until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Wait for ``condition`` (checked every 20 ms), failing after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await aio(asyncio.sleep(0.02))


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_postgresql_urls_are_accepted_by_the_configuration(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://cache:s3cret@db.example.org:5433/cache"
    assert database_url(url, tmp_path) == url
    with pytest.raises(ValueError, match="postgresql\\+asyncpg://"):
        database_url("postgresql+psycopg2://db.example.org/cache", tmp_path)


async def test_a_profile_another_daemon_serves_is_refused_with_a_clear_message(url: str) -> None:
    other = ProfileLeases(url, "the test database")  # another daemon's leases
    await aio(other.open())
    await aio(other.claim("bob"))
    store = await Store.open(url)
    try:
        mine = await store.get_or_create_node("alice", "svc", "blog")
        await store.cache_items(mine.id, items("a"))
        with pytest.raises(ProfileServedElsewhere, match="profile bob is served by another daemon"):
            await store.get_node("bob", "svc", "blog")
        with pytest.raises(ProfileServedElsewhere):
            await store.get_or_create_node("bob", "svc", "blog")
        with pytest.raises(ProfileServedElsewhere):
            await store.get_nodes(profile="bob")
        # the refusal lasts: the other daemon gone, this one still leaves bob alone
        await aio(other.close())
        with pytest.raises(ProfileServedElsewhere, match="until it is restarted"):
            await store.get_node("bob", "svc", "blog")
    finally:
        await store.close()
    # a daemon started after the other one stopped serves bob
    store = await Store.open(url)
    try:
        assert await store.get_or_create_node("bob", "svc", "blog") is not None
    finally:
        await store.close()


async def test_search_purge_and_reset_keep_to_the_profiles_served(url: str) -> None:
    first = await Store.open(url)
    for profile, ids in (("bob", ("b1", "b2")), ("carol", ("c1",))):
        node = await first.get_or_create_node(profile, "svc", "blog")
        await first.cache_items(node.id, items(*ids))
    assert {r["item_id"] for r in await first.search({})} == {"b1", "b2", "c1"}
    await first.close()
    # bob's daemon holds bob; carol's store sees, purges and resets carol's items only
    other = ProfileLeases(url, "the test database")
    await aio(other.open())
    await aio(other.claim("bob"))
    carol = await Store.open(url)
    try:
        await carol.claim_profile("carol")
        assert {r["item_id"] for r in await carol.search({})} == {"c1"}
        assert await carol.count_purge({}) == 1
        assert [n.profile for n in await carol.get_nodes()] == ["carol"]
        assert await carol.reset() == (1, 1)
    finally:
        await carol.close()
        await aio(other.close())
    assert len(query(url, "SELECT 1 FROM pubsub_items")) == 2  # bob's are still there


async def test_a_new_store_s_first_listing_of_a_profile_finds_its_half_done_syncs(
    url: str,
) -> None:
    # a daemon died in the middle of a sync: its node is left IN_PROGRESS
    first = await Store.open(url)
    node = await first.get_or_create_node("bob", "svc", "blog")
    await first.update_node(node.id, sync_state=SyncState.IN_PROGRESS)
    await first.close()
    # the next one lists bob's nodes at bob's connection, before anything else named
    # bob: the listing claims bob first, so it sees them
    second = await Store.open(url)
    try:
        found = await second.get_nodes(profile="bob", sync_state=SyncState.IN_PROGRESS)
        assert [(n.profile, n.name) for n in found] == [("bob", "blog")]
    finally:
        await second.close()


async def test_a_write_waits_for_the_node_and_checks_the_latest_token(url: str) -> None:
    """Two processes writing one node: the second waits on the node's row, then sees
    the first's change (its sync superseded) rather than what it read before."""
    store = await Store.open(url)
    try:
        node: NodeInfo = await store.get_or_create_node("alice", "svc", "blog")
        token = await store.begin_sync(node.id, {})
        locker = await aio(_lock_node(url, node.id))
        try:
            write = store.cache_items(node.id, items("a"), token=token)
            await until(
                lambda: bool(
                    query(
                        url,
                        "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = $1",
                        database_name(url),
                    )
                ),
                "the store's write to wait for the node's row",
            )
            await aio(locker.execute("UPDATE pubsub_nodes SET sync_token = 'newer'"))
            await aio(locker.execute("COMMIT"))
            with pytest.raises(SyncSuperseded):
                await write
        finally:
            await aio(locker.close())
        assert await store.count_items(node.id) == 0
    finally:
        await store.close()


async def _lock_node(url: str, node_id: int) -> object:
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn)
    await connection.execute("BEGIN")
    await connection.execute("SELECT 1 FROM pubsub_nodes WHERE id = $1 FOR UPDATE", node_id)
    return connection


async def test_a_lost_lease_connection_suspends_writes_until_the_leases_are_taken_again(
    url: str,
) -> None:
    store = await Store.open(url)
    name = database_name(url)
    try:
        node = await store.get_or_create_node("alice", "svc", "blog")
        # no new connection until the test says so: the store stays without its leases
        execute(server_url(), f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            query(
                server_url(),
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = $1 AND datname = $2",
                LEASE_APPLICATION_NAME,
                name,
            )
            await until(lambda: store.leases.suspended, "the store to notice the lost connection")
            with pytest.raises(ProfileServedElsewhere, match="lost"):
                await store.cache_items(node.id, items("a"))
        finally:
            execute(server_url(), f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await until(lambda: not store.leases.suspended, "the leases to be taken again")
        await store.cache_items(node.id, items("a"))
        assert await store.count_items(node.id) == 1
        held = query(
            url,
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND a.application_name = $1 AND a.datname = $2",
            LEASE_APPLICATION_NAME,
            database_name(url),
        )
        assert held[0][0] == 1
    finally:
        await store.close()


def backends(url: str) -> list[tuple[int, str]]:
    """The daemon's own connections to the database: (pid, state)."""
    return [
        (row[0], row[1])
        for row in query(
            url,
            "SELECT pid, state FROM pg_stat_activity WHERE application_name = 'libervia-cache' "
            "AND datname = $1 AND pid != pg_backend_pid()",
            database_name(url),
        )
    ]


async def in_transaction_after_a_read(engine: AsyncEngine) -> bool:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
        raw = await connection.get_raw_connection()
        return bool(raw.driver_connection.is_in_transaction())


async def test_engine_reads_run_in_autocommit_on_a_pool_of_their_own_and_survive_a_restart(
    url: str,
) -> None:
    """Search, listings and a sync's checks run on an autocommit engine, whose pool
    checks a connection in one round trip; a connection the server dropped is replaced
    before it is used, so the first read after it already answers."""
    store = await Store.open(url)
    try:
        read_engine = store._read_engine
        assert read_engine.sync_engine.pool is not store.engine.sync_engine.pool
        assert await aio(in_transaction_after_a_read(read_engine)) is False
        assert await aio(in_transaction_after_a_read(store.engine)) is True
        node = await store.get_or_create_node("alice", "svc", "blog")
        await store.cache_items(node.id, items("a", "b"))
        assert [r["item_id"] for r in await store.search({"fts": "text", "limit": 5})] == [
            "b", "a",
        ]  # fmt: skip
        assert backends(url)
        query(
            url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
            "application_name = 'libervia-cache' AND datname = $1 AND pid != pg_backend_pid()",
            database_name(url),
        )
        await until(lambda: not backends(url), "the connections to be gone")
        found = await store.search({"fts": "text", "limit": 5})
        assert [r["item_id"] for r in found] == ["b", "a"]
        assert [n.name for n in await store.get_nodes(profile="alice")] == ["blog"]
        assert await store.held_item_ids(node.id, ["a", "z"]) == {"a"}
    finally:
        await store.close()


async def test_reads_recover_from_connections_the_server_dropped(url: str) -> None:
    store = await Store.open(url)
    try:
        node = await store.get_or_create_node("alice", "svc", "blog")
        await store.cache_items(node.id, items("a", "b"))
        assert (await store.get_items(node.id)).item_ids == ["a", "b"]
        query(
            url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
            "application_name = 'libervia-cache' AND datname = $1 AND pid != pg_backend_pid()",
            database_name(url),
        )
        # the next read on a dropped connection fails as a database error, once
        for _ in range(10):
            try:
                page = await store.get_items(node.id)
                break
            except OSError:
                continue
        assert page.item_ids == ["a", "b"]
        assert await store.get_node("alice", "svc", "blog") is not None
    finally:
        await store.close()
