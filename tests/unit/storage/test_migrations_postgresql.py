"""Migrations on PostgreSQL: the same revision chain as SQLite, both ways, with data.

The model equals the migrations (``alembic check``), a database created from the model
equals one migrated from empty, every revision goes down and up again keeping every
row, ``db upgrade`` creates the schema of an empty database, and the full-text index
is computed by the upgrade (0006) for the items already there.
"""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Connection

from libervia_cache.storage import DatabaseVersionError, Store, migrate
from libervia_cache.storage.aio import aio
from libervia_cache.storage.commands import db
from libervia_cache.storage.engine import create_engine
from libervia_cache.storage.fts import is_fts_object
from libervia_cache.storage.models import Base
from tests.harness.databases import execute, query

from .conftest import PostgresSession, items

HTML_ITEM = (
    "<item xmlns='http://jabber.org/protocol/pubsub' id='bridged'>"
    "<entry xmlns='http://www.w3.org/2005/Atom'><title>Release Café</title>"
    "<content type='html'>&lt;p&gt;We &lt;a href=\"https://example.org/\" "
    'rel="nofollow"&gt;announce&lt;/a&gt; it&lt;/p&gt;</content></entry></item>'
)


@pytest.fixture
def url(postgresql_session: PostgresSession) -> str:
    return postgresql_session.fresh()


async def migrate_to(url: str, revision: str) -> None:
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
        engine = create_engine(url)
        try:
            await migrate.run_in_transaction(engine, run)
        finally:
            await engine.dispose()

    await aio(in_asyncio())


def schema(url: str) -> set[tuple[Any, ...]]:
    """Tables by their columns, indexes by their definition, constraints by theirs."""
    objects: set[tuple[Any, ...]] = set()
    for row in query(
        url,
        "SELECT table_name, column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name != 'alembic_version'",
    ):
        objects.add(("column", *row))
    for row in query(
        url,
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        "AND tablename != 'alembic_version'",
    ):
        objects.add(("index", *row))
    for row in query(
        url,
        "SELECT conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
        "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'public' "
        "AND conrelid::regclass::text != 'alembic_version'",
    ):
        objects.add(("constraint", *row))
    return objects


def table_rows(url: str) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    for table in ("pubsub_nodes", "pubsub_items"):
        columns = [
            name
            for (name,) in query(
                url,
                "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
                "AND column_name != 'search' ORDER BY column_name",
                table,
            )
        ]
        # JSON as text through ::jsonb: json and jsonb columns compare by value
        select = ", ".join(
            f"{c}::jsonb::text AS {c}" if c in ("extra", "parsed") else c for c in columns
        )
        rows[table] = [dict(r) for r in query(url, f"SELECT {select} FROM {table} ORDER BY id")]
    return rows


async def test_model_matches_migrations(url: str) -> None:
    """``alembic check`` on PostgreSQL: autogenerate finds nothing between model and head."""
    await migrate_to(url, "head")

    def compare(connection: Connection) -> list[Any]:
        def include_object(obj: Any, name: str | None, type_: str, *args: Any) -> bool:
            return not (type_ in ("table", "column", "index") and is_fts_object(name))

        context = MigrationContext.configure(
            connection, opts={"include_object": include_object, "compare_type": True}
        )
        return list(compare_metadata(context, Base.metadata))

    async def in_asyncio() -> list[Any]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(compare)
        finally:
            await engine.dispose()

    assert await aio(in_asyncio()) == []


async def test_created_and_migrated_databases_are_identical(
    postgresql_session: PostgresSession,
) -> None:
    migrated = postgresql_session.fresh()
    await migrate_to(migrated, "head")
    created = postgresql_session.databases.create("created")
    store = await Store.open(created)
    await store.close()
    assert schema(created) == schema(migrated)
    assert ("index", "ix_pubsub_items_search", query(
        created, "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_pubsub_items_search'"
    )[0][0]) in schema(created)  # fmt: skip


async def test_every_revision_round_trips_with_data(url: str) -> None:
    store = await Store.open(url)
    node = await store.get_or_create_node("alice", "svc", "blog", extra={"k": "v"})
    await store.cache_items(node.id, [*items("a", "b", "c"), ("h", HTML_ITEM, {"n": 1})])
    await store.close()
    before = table_rows(url)
    for revision in migrate.revisions()[1:]:
        assert revision.down_revision is not None
        await migrate_to(url, revision.down_revision)
        rows = table_rows(url)
        assert len(rows["pubsub_items"]) == 4, revision
        assert [row["id"] for row in rows["pubsub_nodes"]] == [node.id]
        await migrate_to(url, "head")
        assert table_rows(url) == before, revision
    store = await Store.open(url)
    try:
        await store.claim_profile("alice")  # search keeps to the profiles served
        # the index was computed again by the upgrade
        assert len(await store.search({"fts": "text"})) == 3
        assert [r["item_id"] for r in await store.search({"fts": "cafe announce"})] == ["h"]
        assert await store.search({"fts": "nofollow"}) == []
    finally:
        await store.close()
    await migrate_to(url, "base")
    assert schema(url) == set()


async def test_items_of_an_older_database_are_indexed_by_the_upgrade(url: str) -> None:
    await migrate_to(url, "0005")
    execute(
        url,
        "INSERT INTO pubsub_nodes (profile, service, name, subscribed, extra) "
        "VALUES ('p', 's', 'n', false, '{}')",
        "INSERT INTO pubsub_items (node_id, item_id, data, text, created, updated, position, "
        "creation_position, parsed) VALUES (1, 'x', '<item id=\"x\"><b>Old Wörds</b></item>', "
        "'Old Wörds', '2020-01-01', '2020-01-01', 0, 0, '{\"tags\": [\"t\"]}')",
    )
    store = await Store.open(url)
    try:
        await store.claim_profile("p")
        assert [r["item_id"] for r in await store.search({"fts": "words"})] == ["x"]
        assert [r["item_id"] for r in await store.search({"fts": "^old"})] == ["x"]
        found = await store.search({"parsed": [{"path": "tags", "op": "overlap", "value": ["t"]}]})
        assert [r["item_id"] for r in found] == ["x"]
    finally:
        await store.close()
    parsed_type = query(
        url,
        "SELECT data_type FROM information_schema.columns "
        "WHERE table_name = 'pubsub_items' AND column_name = 'parsed'",
    )
    assert parsed_type == [("jsonb",)]


async def test_node_ids_are_never_reused_after_a_reset(url: str) -> None:
    store = await Store.open(url)
    try:
        first = await store.get_or_create_node("alice", "svc", "blog")
        await store.reset()
        second = await store.get_or_create_node("alice", "svc", "blog")
        assert second.id > first.id
    finally:
        await store.close()


async def test_a_newer_database_is_refused(url: str) -> None:
    await migrate_to(url, "head")
    execute(url, "UPDATE alembic_version SET version_num = 'from_the_future'")
    with pytest.raises(DatabaseVersionError, match="from_the_future"):
        await Store.open(url)


def test_db_commands_create_report_and_remove_the_schema(url: str) -> None:
    runner = CliRunner()
    head = migrate.head_revision()
    result = runner.invoke(db, ["--db-url", url, "current"])
    assert result.exit_code == 0 and "empty" in result.output, result.output
    result = runner.invoke(db, ["--db-url", url, "upgrade"])
    assert result.exit_code == 0 and f"-> {head}" in result.output, result.output
    assert len(query(url, "SELECT 1 FROM pubsub_items")) == 0  # the tables are there
    result = runner.invoke(db, ["--db-url", url, "current"])
    assert "up to date" in result.output, result.output
    result = runner.invoke(db, ["--db-url", url, "downgrade", "0005"])
    assert result.exit_code == 0 and "-> 0005" in result.output, result.output
    result = runner.invoke(db, ["--db-url", url, "downgrade", "base"])
    assert result.exit_code == 0, result.output
    assert schema(url) == set()
    result = runner.invoke(db, ["--db-url", url, "history"])
    assert result.exit_code == 0 and head in result.output
