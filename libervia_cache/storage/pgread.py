"""The lean read path on PostgreSQL: plain asyncpg connections, prepared statements.

What :mod:`.pages` says of SQLite's read connection holds here too: the node lookup and
a page are a handful of statements compiled once, so SQLAlchemy's pool, session and
result machinery would cost more than the query. Each is a single statement (one round
trip, one snapshot of the node), prepared once per connection (asyncpg keeps the
prepared statements of a connection), run on a small pool of asyncpg connections that
the store owns: several reads may run at once, each on its own connection.

JSON columns are decoded by the connection (a codec per connection), so that rows
come out as the engine's do, and the same result processors apply.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from .engine import PG_SERVER_SETTINGS, asyncpg_dsn

#: connections kept open for reads (more are opened while many reads run at once)
IDLE_CONNECTIONS = 4
#: at most this many reads run at once; more wait for a connection
MAX_CONNECTIONS = 8


class ReadConnectionError(OSError):
    """A read connection failed (the server went away, or refused us)."""


async def _init_connection(connection: Any) -> None:
    for codec in ("json", "jsonb"):
        await connection.set_type_codec(
            codec, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


class PostgresReader:
    """A small pool of asyncpg connections for the store's reads."""

    def __init__(self, url: str) -> None:
        self._dsn = asyncpg_dsn(url)
        self._idle: list[Any] = []
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._closed = False

    async def _connect(self) -> Any:
        import asyncpg

        try:
            connection = await asyncpg.connect(
                self._dsn, server_settings=dict(PG_SERVER_SETTINGS), statement_cache_size=256
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise ReadConnectionError(f"connecting to PostgreSQL failed: {error}") from error
        await _init_connection(connection)
        return connection

    async def fetch(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        """The rows of one statement (prepared on the connection the first time)."""
        import asyncpg

        if self._closed:
            raise ReadConnectionError("the store is closed")
        async with self._slots:
            connection = self._idle.pop() if self._idle else await self._connect()
            broken = True
            try:
                rows: Sequence[Sequence[Any]] = await connection.fetch(sql, *args)
                broken = False
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as error:
                raise ReadConnectionError(f"reading from PostgreSQL failed: {error}") from error
            except asyncpg.PostgresError:
                broken = connection.is_closed()
                raise
            finally:
                if broken or self._closed or len(self._idle) >= IDLE_CONNECTIONS:
                    connection.terminate()
                else:
                    self._idle.append(connection)
        return rows

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.close()
