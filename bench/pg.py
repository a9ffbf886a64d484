"""Throwaway PostgreSQL databases for the benchmarks (P1pg, P2pg, P4pg).

The server is a URL of a role that may ``CREATE DATABASE``: ``--postgresql URL`` of
``python -m bench`` / ``python -m bench.store_bench``, else ``LIBERVIA_CACHE_BENCH_POSTGRESQL``,
else :data:`DEFAULT_SERVER`. Each benchmark creates its own database, named
``libervia_cache_bench_<random>_<label>``, and drops it at the end, even on error
(:func:`throwaway`). :func:`unavailable` says in one line why the server cannot be used.

asyncpg runs on a loop of its own in a thread (``run_apart``): the benchmarks' loop is the
reactor's, and may be running when a database is created or dropped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

DEFAULT_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
ENV = "LIBERVIA_CACHE_BENCH_POSTGRESQL"
PREFIX = "libervia_cache_bench_"


def server_url(option: str | None = None) -> str:
    """The server: the option, else the environment, else the default."""
    return option or os.environ.get(ENV) or DEFAULT_SERVER


def dsn(url: str) -> str:
    """``url`` as asyncpg takes it (``postgresql://``)."""
    from libervia_cache.storage.engine import asyncpg_dsn

    return asyncpg_dsn(url)


def label_of(url: str) -> str:
    """``url`` without its password, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def execute(url: str, *statements: str) -> list[Any]:
    """Run statements on their own connection; the rows of the last one."""

    async def run() -> list[Any]:
        import asyncpg

        connection = await asyncpg.connect(dsn(url), timeout=10)
        try:
            rows: list[Any] = []
            for statement in statements:
                rows = list(await connection.fetch(statement))
            return rows
        finally:
            await connection.close()

    from tests.harness.databases import run_apart

    return run_apart(run())


def host_of(url: str) -> str:
    """``host:port`` of ``url``."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    socket_dir = parsed.query.get("host")
    if not parsed.host and socket_dir:
        return f"Unix socket in {socket_dir}"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"


def unavailable(server: str) -> str | None:
    """Why ``server`` cannot be used, in one line (None: it can)."""
    try:
        execute(server, "SELECT 1")
    except ModuleNotFoundError:
        return "asyncpg is not installed"
    except Exception as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        return f"PostgreSQL not reachable at {label_of(server)}: {reason}"
    return None


def version(server: str) -> str:
    """The server's version (``SHOW server_version``)."""
    return str(execute(server, "SHOW server_version")[0][0]).split()[0]


@contextmanager
def throwaway(server: str, label: str) -> Iterator[str]:
    """A new empty database on ``server`` (its URL), dropped at the end, even on error."""
    from sqlalchemy.engine import make_url

    name = f"{PREFIX}{uuid.uuid4().hex[:10]}_{label}"
    execute(server, f'CREATE DATABASE "{name}"')
    try:
        yield (
            make_url(server)
            .set(drivername="postgresql+asyncpg", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def skipped(unit: str, target: str, reason: str) -> dict[str, Any]:
    """The entry of an id that could not be measured (``value`` None)."""
    return {"value": None, "unit": unit, "target": target, "detail": {"skipped": reason}}
