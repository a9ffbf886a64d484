"""The database engine: where the database lives and how connections are set up.

Default: an SQLite file in the per-user data directory
(``platformdirs.user_data_path("libervia-cache") / "cache.db"``), created owner-only
(directory 0700, file 0600), through aiosqlite, in WAL mode with foreign keys on.

PostgreSQL (``postgresql+asyncpg://USER@HOST/DATABASE``): through asyncpg, with JIT
compilation off (it costs more than it saves on the cache's short queries) and the
connection named ``libervia-cache`` in ``pg_stat_activity``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import platformdirs
from sqlalchemy import Connection, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

APP_NAME = "libervia-cache"
DB_FILE_NAME = "cache.db"

#: seconds a writer waits for another process's write lock (e.g. the CLI vs the daemon)
BUSY_TIMEOUT = 30.0


def default_db_path() -> Path:
    """The per-user (XDG) database path."""
    return platformdirs.user_data_path(APP_NAME) / DB_FILE_NAME


def default_db_url() -> str:
    """The default database URL: SQLite through aiosqlite at :func:`default_db_path`."""
    return f"sqlite+aiosqlite:///{default_db_path()}"


#: ``application_name`` of the cache's PostgreSQL connections
PG_APPLICATION_NAME = "libervia-cache"

#: PostgreSQL settings of every connection of the cache
PG_SERVER_SETTINGS = {"jit": "off", "application_name": PG_APPLICATION_NAME}


def is_postgresql(url: URL | str) -> bool:
    """Whether ``url`` names a PostgreSQL database."""
    return make_url(url).get_backend_name() == "postgresql"


def asyncpg_dsn(url: URL | str) -> str:
    """The libpq-style DSN of a ``postgresql+asyncpg://`` URL, for plain asyncpg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def sqlite_file(url: URL) -> Path | None:
    """The file of an SQLite URL, None for in-memory databases and other back-ends."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def prepare_sqlite_file(path: Path) -> None:
    """Create the database's directory (0700) and file (0600) if missing, owner-only."""
    path = path.expanduser()
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)


def casefold(value: Any) -> Any:
    """SQL ``casefold(x)``: Unicode case folding (SQLite's ``lower`` is ASCII only)."""
    return value.casefold() if isinstance(value, str) else value


def setup_sqlite_connection(dbapi_connection: Any) -> None:
    """Per-connection settings: foreign keys, WAL, case-sensitive LIKE, casefold()."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    # ``like`` means case-sensitive; ``ilike`` compares casefold()ed strings
    cursor.execute("PRAGMA case_sensitive_like = ON")
    cursor.close()
    dbapi_connection.create_function("casefold", 1, casefold, deterministic=True)


#: connections kept, and opened beyond them at most, by an autocommit (read) engine
READ_POOL_SIZE, READ_POOL_OVERFLOW = 2, 6


def create_engine(db_url: str | None = None, *, autocommit: bool = False) -> AsyncEngine:
    """An asyncio engine for ``db_url`` (default: :func:`default_db_url`).

    ``autocommit`` (PostgreSQL): every statement is its own transaction, for reads made
    of one statement each. The pool's check of a connection it hands out (pre-ping) is
    then one round trip; on a connection of a transactional engine, asyncpg's ping is
    three (``BEGIN``, the ping, ``ROLLBACK``), even for a read that then runs in
    autocommit.
    """
    url = make_url(db_url or default_db_url())
    kwargs: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        path = sqlite_file(url)
        if path is not None:
            prepare_sqlite_file(path)
        else:
            # one shared connection, or each would see its own empty in-memory database
            kwargs["poolclass"] = StaticPool
        kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT}
    elif url.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"server_settings": dict(PG_SERVER_SETTINGS)}
        # a connection dropped by the server (a restart) is replaced, not handed out
        kwargs["pool_pre_ping"] = True
        if autocommit:
            kwargs["isolation_level"] = "AUTOCOMMIT"
            # reads through the engine are few (search, listings, a sync's checks):
            # a smaller pool than the writes' (5 kept, 10 more at most)
            kwargs["pool_size"], kwargs["max_overflow"] = READ_POOL_SIZE, READ_POOL_OVERFLOW
    engine = create_async_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _on_connect)
        event.listen(engine.sync_engine, "begin", _on_begin)
    return engine


def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # let SQLAlchemy, not the sqlite3 module, decide where transactions begin, so that
    # DDL is transactional too (migrations) and writers can BEGIN IMMEDIATE
    dbapi_connection.isolation_level = None
    setup_sqlite_connection(dbapi_connection)


def _on_begin(connection: Connection) -> None:
    # writers take the write lock up front: a deferred transaction upgrading from read to
    # write fails at once (SQLITE_BUSY) when another process wrote meanwhile
    mode = connection.get_execution_options().get("sqlite_begin", "")
    connection.exec_driver_sql(f"BEGIN {mode}" if mode == "IMMEDIATE" else "BEGIN")


def connect_reader(path: Path) -> sqlite3.Connection:
    """A read-only ``sqlite3`` connection for the lean page-read path (see ``pages``)."""
    # not mode=ro: a read-only connection cannot create the WAL index if it is missing
    connection = sqlite3.connect(path, timeout=0, isolation_level=None)
    connection.execute("PRAGMA query_only = ON")
    return connection
