"""``libervia-cache db``: Alembic commands on the configured database, in-process.

The database URL comes from ``--db-url`` when given, else from the main CLI's context
(the configured ``[pubsub_cache] db_url``), else the per-user default database. Each
command prints a one-line summary.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import click
from sqlalchemy import Connection

from . import migrate
from .engine import create_engine

T = TypeVar("T")


def _db_url(ctx: click.Context) -> str | None:
    url = ctx.params.get("db_url") or (ctx.parent.params.get("db_url") if ctx.parent else None)
    if not url:  # the main CLI's obj: a dict, or an object with a db_url attribute
        obj = ctx.find_root().obj
        url = obj.get("db_url") if isinstance(obj, dict) else getattr(obj, "db_url", None)
    return str(url) if url else None


def _run(ctx: click.Context, fn: Callable[[Connection], T]) -> T:
    async def run() -> T:
        engine = create_engine(_db_url(ctx))
        try:
            return await migrate.run_in_transaction(engine, fn)
        finally:
            await engine.dispose()

    # a private loop: leave the caller's current loop (if any) alone
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(run())
    except migrate.DatabaseVersionError as e:
        raise click.ClickException(str(e)) from None
    finally:
        loop.close()


@click.group("db")
@click.option(
    "--db-url",
    default=None,
    help="Database URL (default: the configured one, else the per-user database).",
)
def db(db_url: str | None) -> None:
    """Schema migrations of the cache database (Alembic)."""


@db.command()
@click.pass_context
def current(ctx: click.Context) -> None:
    """Show the database's schema revision."""
    revision = _run(ctx, migrate.current_revision)
    head = migrate.head_revision()
    state = "up to date" if revision == head else f"head is {migrate.describe(head)}"
    click.echo(f"current: {migrate.describe(revision)}; {state}")


@db.command()
def history() -> None:
    """List the schema revisions, oldest first."""
    revisions = migrate.revisions()
    for revision in revisions:
        click.echo(f"{revision.down_revision or '<base>'} -> {revision}")
    click.echo(f"{len(revisions)} revision(s), head {migrate.head_revision()}")


def _moved(ctx: click.Context, verb: str, result: tuple[str | None, str | None]) -> None:
    before, after = result
    if before == after:
        click.echo(f"{verb}: nothing to do, database at {migrate.describe(after)}")
    else:
        click.echo(f"{verb}: {migrate.describe(before)} -> {migrate.describe(after)}")


@db.command()
@click.argument("revision", default="head")
@click.pass_context
def upgrade(ctx: click.Context, revision: str) -> None:
    """Upgrade the database to REVISION (default: head)."""

    def run(connection: Connection) -> Any:
        return migrate.upgrade_to(connection, revision)

    _moved(ctx, "upgrade", _run(ctx, run))


@db.command()
@click.argument("revision")
@click.pass_context
def downgrade(ctx: click.Context, revision: str) -> None:
    """Downgrade the database to REVISION ("base": remove the schema)."""

    def run(connection: Connection) -> Any:
        return migrate.downgrade_to(connection, revision)

    _moved(ctx, "downgrade", _run(ctx, run))
