"""``db``: schema migrations, loaded only when one of them runs.

The commands themselves are :mod:`libervia_cache.storage.commands` (Alembic and
SQLAlchemy, in-process). This group stands in for them: its help lists them from a
table, and the storage module is imported only when a subcommand is looked up to run
(or to show its own help), so that ``libervia-cache db --help`` loads neither.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from libervia_cache.cli.app import Context

__all__ = ["SUBCOMMANDS", "LazyGroup", "db"]

#: subcommand -> its one-line summary, as ``db --help`` shows it (a unit test checks
#: that this is the real group's list)
SUBCOMMANDS = {
    "current": "Show the database's schema revision.",
    "downgrade": 'Downgrade the database to REVISION ("base": remove the schema).',
    "history": "List the schema revisions, oldest first.",
    "upgrade": "Upgrade the database to REVISION (default: head), creating it if needed.",
}


class LazyGroup(click.Group):
    """A group whose subcommands are those of a group defined in another module,
    imported on first use.

    ``target`` is ``"module:attribute"``; ``summaries`` names each subcommand with its
    one-line help, for ``--help`` without the import. The group's own options are
    declared here (the target group's callback is not run): the subcommands read them
    from their parent context as they would from the target group's.
    """

    def __init__(self, *args: Any, target: str, summaries: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.target = target
        self.summaries = summaries

    def _target_group(self) -> click.Group:
        module_name, _, attribute = self.target.partition(":")
        group = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(group, click.Group):
            raise TypeError(f"{self.target} is not a click group")
        return group

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.summaries)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.summaries:
            return None
        return self._target_group().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.summaries[name]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    "db",
    cls=LazyGroup,
    target="libervia_cache.storage.commands:db",
    summaries=SUBCOMMANDS,
)
@click.option(
    "--db-url",
    default=None,
    help="Database URL (default: the configured one, else the per-user database).",
)
@click.pass_context
def db(ctx: click.Context, db_url: str | None) -> None:
    """Schema migrations of the cache database (Alembic).

    The database is the configured one ([pubsub_cache] db_url, relative to the
    configuration file's directory), or --db-url (relative to the current directory),
    checked as the daemon checks it; else the per-user default database.
    """
    context = ctx.find_object(Context)
    if context is None:
        return

    def resolve() -> str | None:
        # --db-url, else [pubsub_cache] db_url, validated as the daemon validates the
        # key; loads the daemon's configuration module, only when a subcommand runs
        from libervia_cache.cli.daemon import validated_setting

        url: str | None = validated_setting(context.config_path, "pubsub_cache", "db_url", db_url)
        return url

    context.db_url_resolver = resolve
