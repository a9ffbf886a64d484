"""Fixtures of the storage tests: a store on a fresh database per test, SQLite and
PostgreSQL.

Every test that uses ``store`` (or ``db_url``, or ``database``) runs once per database
kind of ``LIBERVIA_CACHE_TEST_DATABASES`` (see :mod:`tests.harness.databases`): on a
new SQLite file, and on the session's PostgreSQL database emptied of every table.
``@pytest.mark.sqlite_only``: a test that looks inside the SQLite file (pragmas, query
plans, the ``sqlite3`` read connection) runs on SQLite alone;
``@pytest.mark.postgresql_only``, one of PostgreSQL's own machinery, on PostgreSQL alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from libervia_cache.storage import NodeInfo, Store
from tests.conftest import run
from tests.harness.databases import (
    PostgresDatabases,
    database_kinds,
    empty,
    require_postgresql,
    server_url,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: a storage test of SQLite's own machinery (not run on PostgreSQL)"
    )
    config.addinivalue_line(
        "markers", "postgresql_only: a storage test of PostgreSQL's own machinery (not on SQLite)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if {"store", "db_url"} & set(metafunc.fixturenames):
        kinds = database_kinds()
        if metafunc.definition.get_closest_marker("sqlite_only"):
            kinds = [kind for kind in kinds if kind == "sqlite"] or ["sqlite"]
        elif metafunc.definition.get_closest_marker("postgresql_only"):
            # none when PostgreSQL is left out (LIBERVIA_CACHE_TEST_DATABASES): pytest
            # then reports the test as skipped, with the empty parameter set
            kinds = [kind for kind in kinds if kind == "postgresql"]
        metafunc.parametrize("database", kinds, indirect=True)


class PostgresSession:
    """The session's PostgreSQL database (created once, dropped at the end)."""

    def __init__(self) -> None:
        self.databases = PostgresDatabases(server_url())
        self.reason = self.databases.check()
        self.url: str | None = None if self.reason else self.databases.create("storage")

    def fresh(self) -> str:
        require_postgresql(self.databases, self.reason)
        assert self.url is not None
        empty(self.url)
        return self.url


@pytest.fixture(scope="session")
def postgresql_session() -> Iterator[PostgresSession]:
    session = PostgresSession()
    try:
        yield session
    finally:
        session.databases.drop_all()


@pytest.fixture(autouse=True)
def database(request: pytest.FixtureRequest) -> str:
    """The kind of database of this test: ``sqlite`` or ``postgresql`` (autouse, so
    that tests elsewhere importing ``store`` get SQLite without asking for it)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def db_url(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The URL of an empty database of the test's kind."""
    database = "sqlite"
    if "database" in request.fixturenames:
        database = request.getfixturevalue("database")
    if database == "postgresql":
        session: PostgresSession = request.getfixturevalue("postgresql_session")
        return session.fresh()
    return f"sqlite+aiosqlite:///{tmp_path / 'cache.db'}"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    async def open_store() -> Store:
        return await Store.open(db_url)

    opened = run(open_store())
    yield opened

    async def close() -> None:
        await opened.close()

    run(close())


@pytest.fixture
def node(store: Store) -> NodeInfo:
    async def create() -> NodeInfo:
        return await store.get_or_create_node("alice", "pubsub.example.org", "blog")

    return run(create())


def item(item_id: str, text: str | None = None) -> tuple[str, str, dict[str, str]]:
    """An item as the plugin caches it: (id, raw XML, parsed)."""
    from xml.sax.saxutils import escape, quoteattr

    body = escape(text if text is not None else f"text of {item_id}")
    return (
        item_id,
        f"<item xmlns='http://jabber.org/protocol/pubsub' id={quoteattr(item_id)}>"
        f"<entry xmlns='http://www.w3.org/2005/Atom'><title>{body}</title></entry></item>",
        {"title": text if text is not None else f"text of {item_id}"},
    )


def items(*ids: str) -> list[tuple[str, str, dict[str, str]]]:
    return [item(i) for i in ids]
