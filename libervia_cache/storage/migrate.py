"""Create, upgrade and inspect databases with Alembic, in-process.

The Alembic environment and revisions live in the top-level ``migration/`` folder,
packaged as ``libervia_cache.migration`` and found with :mod:`importlib.resources`, so a
plain (non-editable) install can create and upgrade databases. Alembic commands run on a
connection of the store's own engine (``config.attributes["connection"]``), never in a
subprocess.

On open (:func:`prepare_database`): an empty database is created from the model and
stamped at head; an older one is upgraded; one stamped with a revision this code does
not know (written by a newer version) is refused with :class:`DatabaseVersionError`.

On PostgreSQL, several daemons may open one database at once: each takes a transaction
advisory lock (:data:`SCHEMA_LOCK`) first, so that one creates or upgrades the schema
while the others wait and then find it done.
"""

from __future__ import annotations

import contextlib
import importlib.resources
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from .fts import CREATE_FTS, CREATE_SEARCH_PG
from .models import Base

T = TypeVar("T")

MIGRATION_PACKAGE = "libervia_cache.migration"

#: PostgreSQL advisory lock key held while a schema is created or upgraded ("lcschema")
SCHEMA_LOCK = int.from_bytes(b"lcschema", "big", signed=True)


def lock_schema(connection: Connection) -> None:
    """On PostgreSQL, wait for any other process creating or upgrading the schema (the
    lock is the transaction's: released when it ends)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")


class DatabaseVersionError(RuntimeError):
    """The database's schema version cannot be handled by this code."""


@dataclass(frozen=True)
class Revision:
    """One revision of the schema."""

    revision: str
    down_revision: str | None
    doc: str

    def __str__(self) -> str:
        return f"{self.revision} ({self.doc})"


@contextlib.contextmanager
def migration_directory() -> Iterator[Path]:
    """The packaged ``migration`` folder, as a file system path."""
    with importlib.resources.as_file(importlib.resources.files(MIGRATION_PACKAGE)) as path:
        yield Path(path)


def alembic_config(script_location: Path, connection: Connection | None = None) -> Config:
    """An Alembic configuration for the packaged scripts, bound to ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.attributes["connection"] = connection
    return config


def _script(script_location: Path) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(script_location))


def head_revision() -> str:
    """The newest revision this code knows."""
    with migration_directory() as location:
        head = _script(location).get_current_head()
    assert head is not None
    return head


def revisions() -> list[Revision]:
    """Every revision, oldest first."""
    with migration_directory() as location:
        script = _script(location)
        walked = list(script.walk_revisions())
    return [
        Revision(
            rev.revision,
            rev.down_revision if isinstance(rev.down_revision, str | None) else None,
            (rev.doc or "").strip(),
        )
        for rev in reversed(walked)
    ]


def current_revision(connection: Connection) -> str | None:
    """The revision the database is stamped with (None: not versioned)."""
    return MigrationContext.configure(connection).get_current_revision()


def _check_known(connection: Connection, location: Path) -> str | None:
    current = current_revision(connection)
    if current is not None:
        script = _script(location)
        try:
            script.get_revision(current)
        except Exception:
            raise DatabaseVersionError(
                f"the database is at schema revision {current!r}, unknown to this version "
                f"of libervia-cache (newest known: {script.get_current_head()!r}); it was "
                "probably written by a newer version: upgrade libervia-cache, or downgrade "
                "the database with that newer version"
            ) from None
    return current


def create_or_upgrade(connection: Connection) -> tuple[str | None, str]:
    """Create or upgrade the database on ``connection``; return (before, after) revisions."""
    lock_schema(connection)
    with migration_directory() as location:
        current = _check_known(connection, location)
        head = _script(location).get_current_head()
        assert head is not None
        if current is None:
            existing = set(inspect(connection).get_table_names())
            if existing & set(Base.metadata.tables):
                raise DatabaseVersionError(
                    "the database holds cache tables but no schema version: refusing to "
                    "guess its revision (stamp it with `libervia-cache db` if you know it)"
                )
            Base.metadata.create_all(connection)
            postgresql = connection.dialect.name == "postgresql"
            for statement in CREATE_SEARCH_PG if postgresql else CREATE_FTS:
                connection.exec_driver_sql(statement)
            command.stamp(alembic_config(location, connection), head)
        elif current != head:
            command.upgrade(alembic_config(location, connection), head)
    return current, head


def upgrade_to(connection: Connection, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade to ``revision``; return (before, after)."""
    lock_schema(connection)
    with migration_directory() as location:
        before = _check_known(connection, location)
        command.upgrade(alembic_config(location, connection), revision)
    return before, current_revision(connection)


def downgrade_to(connection: Connection, revision: str) -> tuple[str | None, str | None]:
    """Downgrade to ``revision`` (``base``: drop everything); return (before, after)."""
    lock_schema(connection)
    with migration_directory() as location:
        before = _check_known(connection, location)
        command.downgrade(alembic_config(location, connection), revision)
    return before, current_revision(connection)


async def run_in_transaction(engine: AsyncEngine, fn: Callable[[Connection], T]) -> T:
    """Run ``fn(sync_connection)`` in one write transaction of ``engine``."""
    async with engine.connect() as connection:
        connection = await connection.execution_options(sqlite_begin="IMMEDIATE")
        async with connection.begin():
            return await connection.run_sync(fn)


async def prepare_database(engine: AsyncEngine) -> tuple[str | None, str]:
    """Create (from the model, stamped at head) or upgrade the database of ``engine``."""
    return await run_in_transaction(engine, create_or_upgrade)


def describe(revision: str | None) -> str:
    """A revision with its message, for one-line summaries."""
    if revision is None:
        return "empty (no schema)"
    for known in revisions():
        if known.revision == revision:
            return str(known)
    return revision
