"""Migrations: packaged scripts, model == revisions, round trips with data, refusals."""

from __future__ import annotations

import importlib.resources
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, create_engine

from libervia_cache.storage import DatabaseVersionError, Store, migrate
from libervia_cache.storage.aio import aio
from libervia_cache.storage.engine import create_engine as create_async_engine
from libervia_cache.storage.fts import is_fts_object
from libervia_cache.storage.models import Base

from .conftest import items


def sync_url(path: Path) -> str:
    return f"sqlite:///{path}"


async def migrate_to(path: Path, revision: str) -> None:
    """Move the database to ``revision`` the way the store and the CLI do."""
    order = [None, *(r.revision for r in migrate.revisions())]
    target = order[-1] if revision == "head" else None if revision == "base" else revision

    def run(connection: Connection) -> None:
        current = migrate.current_revision(connection)
        if order.index(target) >= order.index(current):
            migrate.upgrade_to(connection, revision)
        else:
            migrate.downgrade_to(connection, revision)

    async def in_asyncio() -> None:
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        try:
            await migrate.run_in_transaction(engine, run)
        finally:
            await engine.dispose()

    # the test runs as a Twisted coroutine: asyncio code goes through the bridge
    await aio(in_asyncio())


def schema(path: Path) -> set[tuple[Any, ...]]:
    """Every schema object, normalised: tables by their columns, indexes, foreign keys
    (column order aside: ALTER TABLE appends), other objects by their SQL text."""
    objects: set[tuple[Any, ...]] = set()
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name != 'alembic_version' "
            "AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        for kind, name, sql in rows:
            if kind == "table" and not is_fts_object(name):
                columns = connection.execute(f"PRAGMA table_info({name})").fetchall()
                indexes = connection.execute(f"PRAGMA index_list({name})").fetchall()
                keys = connection.execute(f"PRAGMA foreign_key_list({name})").fetchall()
                objects.add(
                    (
                        kind,
                        name,
                        frozenset(c[1:] for c in columns),
                        frozenset((i[2], i[3]) for i in indexes),
                        frozenset(k[2:] for k in keys),
                    )
                )
            else:
                objects.add((kind, name, " ".join((sql or "").replace('"', "").split())))
    return objects


def table_rows(path: Path) -> dict[str, list[dict[str, Any]]]:
    with sqlite3.connect(path) as connection:
        connection.row_factory = sqlite3.Row
        return {
            table: [dict(row) for row in connection.execute(f"SELECT * FROM {table} ORDER BY id")]
            for table in ("pubsub_nodes", "pubsub_items")
        }


def test_migration_scripts_are_found_as_package_resources() -> None:
    root = importlib.resources.files("libervia_cache.migration")
    assert root.joinpath("env.py").is_file()
    assert root.joinpath("script.py.mako").is_file()
    versions = [p.name for p in root.joinpath("versions").iterdir() if p.name.endswith(".py")]
    assert any(name.startswith("0001") for name in versions)
    assert migrate.head_revision() == migrate.revisions()[-1].revision


async def test_model_matches_migrations(tmp_path: Path) -> None:
    """``alembic check``: autogenerate finds nothing between the model and head."""
    path = tmp_path / "migrated.db"
    await migrate_to(path, "head")
    engine = create_engine(sync_url(path))

    def include_object(obj: Any, name: str | None, type_: str, *args: Any) -> bool:
        return not (type_ == "table" and is_fts_object(name))

    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"include_object": include_object, "compare_type": True}
        )
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


async def test_created_and_migrated_databases_are_identical(tmp_path: Path) -> None:
    created = tmp_path / "created.db"
    store = await Store.open(f"sqlite+aiosqlite:///{created}")
    await store.close()
    migrated = tmp_path / "migrated.db"
    await migrate_to(migrated, "head")
    assert schema(created) == schema(migrated)


async def test_every_revision_round_trips_with_data(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    store = await Store.open(f"sqlite+aiosqlite:///{path}")
    node = await store.get_or_create_node("alice", "svc", "blog", extra={"k": "v"})
    await store.cache_items(node.id, items("a", "b", "c"))
    await store.close()
    before = table_rows(path)
    # each revision down (to the one before it) and up again, back to head: nothing lost
    for revision in migrate.revisions()[1:]:
        assert revision.down_revision is not None
        await migrate_to(path, revision.down_revision)
        rows = table_rows(path)
        assert len(rows["pubsub_items"]) == 3
        assert [row["id"] for row in rows["pubsub_nodes"]] == [node.id]
        await migrate_to(path, "head")
        assert table_rows(path) == before
    store = await Store.open(f"sqlite+aiosqlite:///{path}")
    try:
        # the index was rebuilt by the upgrade
        assert len(await store.search({"fts": "text"})) == 3
    finally:
        await store.close()
    await migrate_to(path, "base")
    assert schema(path) == set()


async def test_node_ids_are_never_reused_after_a_reset(tmp_path: Path) -> None:
    """Created or migrated, the nodes table is AUTOINCREMENT: a node created after a
    reset never gets the id of a node that work in flight may still hold."""
    for name in ("created.db", "migrated.db"):
        path = tmp_path / name
        if name == "migrated.db":
            await migrate_to(path, migrate.revisions()[0].revision)
        store = await Store.open(f"sqlite+aiosqlite:///{path}")
        try:
            first = await store.get_or_create_node("alice", "svc", "blog")
            await store.reset()
            second = await store.get_or_create_node("alice", "svc", "blog")
            assert second.id > first.id, name
        finally:
            await store.close()


async def test_an_old_database_is_upgraded_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    await migrate_to(path, migrate.revisions()[0].revision)
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO pubsub_nodes (profile, service, name, subscribed, extra) "
            "VALUES ('p', 's', 'n', 0, '{}')"
        )
        connection.execute(
            "INSERT INTO pubsub_items (node_id, item_id, data, created, updated, position, "
            "creation_position) VALUES (1, 'x', '<item id=\"x\"><b>old words</b></item>', "
            "'2020-01-01 00:00:00', '2020-01-01 00:00:00', 0, 0)"
        )
    store = await Store.open(f"sqlite+aiosqlite:///{path}")
    try:
        assert [r["item_id"] for r in await store.search({"fts": "words"})] == ["x"]
    finally:
        await store.close()


async def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    await migrate_to(path, "head")
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'from_the_future'")
    with pytest.raises(DatabaseVersionError, match="from_the_future"):
        await Store.open(f"sqlite+aiosqlite:///{path}")


async def test_unversioned_cache_tables_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "unversioned.db"
    engine = create_engine(sync_url(path))
    with engine.begin() as connection:
        Base.metadata.create_all(connection)
    engine.dispose()
    with pytest.raises(DatabaseVersionError, match="no schema version"):
        await Store.open(f"sqlite+aiosqlite:///{path}")


def test_revisions_have_upgrade_and_downgrade() -> None:
    with migrate.migration_directory() as location:
        script = migrate._script(location)
        for revision in script.walk_revisions():
            module: Any = revision.module
            assert callable(module.upgrade) and callable(module.downgrade)


HTML_ITEM = (
    "<item xmlns='http://jabber.org/protocol/pubsub' id='bridged'>"
    "<entry xmlns='http://www.w3.org/2005/Atom'><title>Release</title>"
    "<content type='html'>&lt;p&gt;We &lt;a href=\"https://example.org/\" "
    'rel="nofollow"&gt;announce&lt;/a&gt; it&lt;/p&gt;</content></entry></item>'
)


def fts_matches(path: Path, word: str) -> bool:
    with sqlite3.connect(path) as connection:
        return bool(
            connection.execute(
                "SELECT rowid FROM pubsub_items_fts WHERE pubsub_items_fts MATCH ?", (word,)
            ).fetchall()
        )


async def test_0004_reindexes_the_human_text_of_html_both_ways(tmp_path: Path) -> None:
    """0004 recomputes every item's text: escaped HTML is indexed as its text (no
    ``href``, ``nofollow``); its downgrade goes back to the text nodes as 0002 wrote them."""
    path = tmp_path / "cache.db"
    await migrate_to(path, "0003")
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO pubsub_nodes (profile, service, name, subscribed, extra) "
            "VALUES ('p', 's', 'n', 0, '{}')"
        )
        connection.execute(
            "INSERT INTO pubsub_items (node_id, item_id, data, created, updated, position, "
            "creation_position, text) VALUES (1, 'bridged', ?, '2020-01-01 00:00:00', "
            "'2020-01-01 00:00:00', 0, 0, ?)",
            # the text an 0003 store wrote: the escaped markup's text nodes as they are
            (
                HTML_ITEM,
                'Release <p>We <a href="https://example.org/" rel="nofollow">announce</a> it</p>',
            ),
        )
    assert fts_matches(path, "href") and fts_matches(path, "nofollow")

    await migrate_to(path, "0004")
    assert not fts_matches(path, "href") and not fts_matches(path, "nofollow")
    assert fts_matches(path, "announce")
    store = await Store.open(f"sqlite+aiosqlite:///{path}")
    try:
        assert await store.search({"fts": "href"}) == []
        assert [r["item_id"] for r in await store.search({"fts": "announce"})] == ["bridged"]
    finally:
        await store.close()
    assert table_rows(path)["pubsub_items"][0]["text"] == "Release We announce it"

    await migrate_to(path, "0003")
    assert fts_matches(path, "href") and fts_matches(path, "announce")
    assert "href" in table_rows(path)["pubsub_items"][0]["text"]
