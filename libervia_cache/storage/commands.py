"""``libervia-cache db``: Alembic commands on the configured database, in-process.

The database URL comes from the main CLI's context when it has one (``--db-url``, else
the configured ``[pubsub_cache] db_url``, both validated as the daemon validates the
key), else from this group's ``--db-url``, else the per-user default database. Each
command prints a one-line summary, or one JSON document with ``--json``.

``current`` and ``downgrade`` only read or change a database that exists: they never
create a file or its directory (``upgrade`` does, as the daemon does at its start).
Errors are one line: a revision this version does not know (exit 1), a database that
cannot be opened (exit 3).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from . import migrate
from .engine import create_engine, default_db_url, sqlite_file

T = TypeVar("T")


def _db_url(ctx: click.Context) -> str:
    obj = ctx.find_root().obj
    url = obj.get("db_url") if isinstance(obj, dict) else getattr(obj, "db_url", None)
    if not url:
        url = ctx.params.get("db_url") or (ctx.parent.params.get("db_url") if ctx.parent else None)
    return str(url) if url else default_db_url()


def _existing_database(ctx: click.Context) -> str:
    """The URL of a database that must exist already (a read-only command): an SQLite
    file that is missing is an error, not a new database."""
    url = _db_url(ctx)
    path = sqlite_file(make_url(url))
    if path is not None and not path.exists():
        raise click.ClickException(
            f"no database at {path} (the daemon creates it when it starts; "
            "`libervia-cache db upgrade` does too)"
        )
    return url


def _run(ctx: click.Context, url: str, fn: Callable[[Connection], T]) -> T:
    async def run() -> T:
        engine = create_engine(url)
        try:
            return await migrate.run_in_transaction(engine, fn)
        finally:
            await engine.dispose()

    from alembic.util import CommandError

    # a private loop: leave the caller's current loop (if any) alone
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(run())
    except migrate.DatabaseVersionError as e:
        raise click.ClickException(str(e)) from None
    except CommandError as e:  # e.g. a revision alembic cannot find
        known = ", ".join(["base", *(r.revision for r in migrate.revisions()), "head"])
        raise click.ClickException(f"{' '.join(str(e).split())} (known: {known})") from None
    finally:
        loop.close()


def _json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False))


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document on stdout, nothing else."
)


@click.group("db")
@click.option(
    "--db-url",
    default=None,
    help="Database URL (default: the configured one, else the per-user database).",
)
def db(db_url: str | None) -> None:
    """Schema migrations of the cache database (Alembic)."""


@db.command()
@json_option
@click.pass_context
def current(ctx: click.Context, as_json: bool) -> None:
    """Show the database's schema revision."""
    url = _existing_database(ctx)
    revision = _run(ctx, url, migrate.current_revision)
    head = migrate.head_revision()
    if as_json:
        _json(
            {"url": _shown(url), "current": revision, "head": head, "up_to_date": revision == head}
        )
        return
    state = "up to date" if revision == head else f"head is {migrate.describe(head)}"
    click.echo(f"current: {migrate.describe(revision)}; {state}")


@db.command()
@json_option
def history(as_json: bool) -> None:
    """List the schema revisions, oldest first."""
    revisions = migrate.revisions()
    if as_json:
        _json(
            {
                "revisions": [
                    {"revision": r.revision, "down_revision": r.down_revision, "doc": r.doc}
                    for r in revisions
                ],
                "head": migrate.head_revision(),
            }
        )
        return
    for revision in revisions:
        click.echo(f"{revision.down_revision or '<base>'} -> {revision}")
    click.echo(f"{len(revisions)} revision(s), head {migrate.head_revision()}")


def _moved(verb: str, url: str, result: tuple[str | None, str | None], as_json: bool) -> None:
    before, after = result
    if as_json:
        _json({"url": _shown(url), "before": before, "after": after})
    elif before == after:
        click.echo(f"{verb}: nothing to do, database at {migrate.describe(after)}")
    else:
        click.echo(f"{verb}: {migrate.describe(before)} -> {migrate.describe(after)}")


@db.command()
@click.argument("revision", default="head")
@json_option
@click.pass_context
def upgrade(ctx: click.Context, revision: str, as_json: bool) -> None:
    """Upgrade the database to REVISION (default: head), creating it if needed."""

    def run(connection: Connection) -> Any:
        return migrate.upgrade_to(connection, revision)

    url = _db_url(ctx)
    path = sqlite_file(make_url(url))
    if path is not None and not path.exists():
        _check_directory(path)
    _moved("upgrade", url, _run(ctx, url, run), as_json)


@db.command()
@click.argument("revision")
@json_option
@click.pass_context
def downgrade(ctx: click.Context, revision: str, as_json: bool) -> None:
    """Downgrade the database to REVISION ("base": remove the schema)."""

    def run(connection: Connection) -> Any:
        return migrate.downgrade_to(connection, revision)

    url = _existing_database(ctx)
    _moved("downgrade", url, _run(ctx, url, run), as_json)


def _check_directory(path: Path) -> None:
    """A new database's directory must be creatable: say so in one line otherwise."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise click.ClickException(
            f"cannot create the database {path}: {parent} is not a directory"
        )
