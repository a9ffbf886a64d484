"""The databases the tests run on: SQLite files, and throwaway PostgreSQL databases.

``LIBERVIA_CACHE_TEST_DATABASES`` (comma separated, default ``sqlite,postgresql``)
says which kinds the store and daemon tests run on: each such test runs once per kind
(tests marked ``sqlite_only`` look inside the SQLite file and run on SQLite alone).

PostgreSQL: ``LIBERVIA_CACHE_TEST_POSTGRESQL`` is the server, as a URL of a role that
may create databases (default ``postgresql+asyncpg://postgres@127.0.0.1:5432/postgres``,
the CI machine's). Each test session creates its own databases, named
``libervia_cache_test_<random>``, and drops them at the end; a test gets one emptied
of every table (:meth:`PostgresDatabases.fresh`). A server that cannot be reached
skips the PostgreSQL tests with the reason, except in CI (``CI=true``), where it fails
them: ``.ci/run`` needs PostgreSQL running.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import make_url

T = TypeVar("T")

KINDS = ("sqlite", "postgresql")
DEFAULT_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def database_kinds() -> list[str]:
    """The kinds asked for by ``LIBERVIA_CACHE_TEST_DATABASES``, validated."""
    value = os.environ.get("LIBERVIA_CACHE_TEST_DATABASES", ",".join(KINDS))
    kinds = [kind.strip() for kind in value.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        raise pytest.UsageError(
            f"LIBERVIA_CACHE_TEST_DATABASES: unknown database kind(s) {', '.join(unknown)}; "
            f"known: {', '.join(KINDS)}"
        )
    return kinds


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def server_url() -> str:
    return os.environ.get("LIBERVIA_CACHE_TEST_POSTGRESQL", DEFAULT_SERVER)


def run_apart(coro: Coroutine[Any, Any, T]) -> T:
    """Run an asyncio coroutine on a loop of its own, in a thread (the tests' loop is
    the reactor's, and may be running)."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as e:
            error.append(e)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _execute(url: str, *statements: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(_dsn(url), timeout=10)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def _fetch(url: str, query: str, *args: Any, setup: tuple[str, ...] = ()) -> list[Any]:
    import asyncpg

    connection = await asyncpg.connect(_dsn(url), timeout=10)
    try:
        for statement in setup:
            await connection.execute(statement)
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


def query(url: str, sql: str, *args: Any, setup: tuple[str, ...] = ()) -> list[Any]:
    """The rows of one query on the database at ``url`` (a connection of its own, on
    which the ``setup`` statements run first)."""
    return run_apart(_fetch(url, sql, *args, setup=setup))


def execute(url: str, *statements: str) -> None:
    """Run statements on the database at ``url`` (a connection of its own)."""
    run_apart(_execute(url, *statements))


class PostgresDatabases:
    """The throwaway databases of one test session on one PostgreSQL server."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.created: list[str] = []
        self.prefix = f"libervia_cache_test_{uuid.uuid4().hex[:10]}"

    def check(self) -> str | None:
        """Why the server cannot be used (None: it can)."""
        try:
            execute(self.server, "SELECT 1")
        except ModuleNotFoundError:
            return "asyncpg is not installed (pip install asyncpg)"
        except Exception as error:
            return (
                f"PostgreSQL is not reachable at {make_url(self.server).render_as_string()} "
                f"({error}); start it, or set LIBERVIA_CACHE_TEST_POSTGRESQL to a role that "
                "may create databases"
            )
        return None

    def create(self, label: str = "") -> str:
        """A new empty database; its URL."""
        name = f"{self.prefix}_{label or len(self.created)}"
        execute(self.server, f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.url(name)

    def url(self, name: str) -> str:
        return (
            make_url(self.server)
            .set(drivername="postgresql+asyncpg", database=name)
            .render_as_string(hide_password=False)
        )

    def drop_all(self) -> None:
        while self.created:
            name = self.created.pop()
            execute(self.server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def empty(url: str) -> None:
    """Drop every table of the database at ``url`` (a fresh, empty database for a test)."""
    execute(
        url,
        "DROP SCHEMA public CASCADE",
        "CREATE SCHEMA public",
    )


def require_postgresql(databases: PostgresDatabases | None, reason: str | None) -> None:
    """Fail (CI) or skip (elsewhere) a PostgreSQL test when the server cannot be used."""
    if reason is None and databases is not None:
        return
    message = reason or "PostgreSQL is not available"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
