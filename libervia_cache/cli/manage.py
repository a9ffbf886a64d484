"""Managing the cache: ``purge`` items, ``reset`` everything."""

from __future__ import annotations

from datetime import datetime

import click

from libervia_cache.cli.app import Context, fail, json_option, pass_context
from libervia_cache.cli.output import print_json
from libervia_cache.cli.values import DateType
from libervia_cache.errors import EXIT_USER_ERROR

__all__ = ["purge", "reset"]


@click.command()
@click.option("--profile", "profiles", multiple=True, help="Only this profile (repeatable).")
@click.option("--service", "services", multiple=True, help="Only this service (repeatable).")
@click.option("--node", "nodes", multiple=True, help="Only this node (repeatable).")
@click.option("--type", "types", multiple=True, help="Only nodes of this type (repeatable).")
@click.option(
    "--subtype", "subtypes", multiple=True, help="Only nodes of this subtype (repeatable)."
)
@click.option(
    "--created-before",
    type=DateType(),
    help="Only items first cached before DATE: ISO 8601, or relative (30d, 12h, 15m, 2w).",
)
@click.option(
    "--updated-before",
    type=DateType(),
    help="Only items last updated before DATE: ISO 8601, or relative (30d, 12h, 15m, 2w).",
)
@click.option("--dry-run", is_flag=True, help="Only say how many items would go.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_context
def purge(
    ctx: Context,
    profiles: tuple[str, ...],
    services: tuple[str, ...],
    nodes: tuple[str, ...],
    types: tuple[str, ...],
    subtypes: tuple[str, ...],
    created_before: datetime | None,
    updated_before: datetime | None,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete cached items (all of them without filter), after confirmation.

    Shows how many items match first. Nodes that lose items are no longer answered from
    the cache until synchronised again.
    """
    if not profiles and ctx.profile_name:
        profiles = (ctx.profile_name,)
    filters = {
        key: value
        for key, value in (
            ("profiles", list(profiles)),
            ("services", list(services)),
            ("nodes", list(nodes)),
            ("types", list(types)),
            ("subtypes", list(subtypes)),
            ("created_before", created_before.isoformat() if created_before else None),
            ("updated_before", updated_before.isoformat() if updated_before else None),
        )
        if value
    }
    count = ctx.call("ps_cache_purge", {"filters": filters, "dry_run": True})["count"]
    purged = 0
    if count and not dry_run:
        if not as_json:
            click.echo(f"{count} cached item(s) match")
        if not yes and not click.confirm(f"Purge {count} cached item(s)?", err=True):
            fail("aborted: nothing purged", EXIT_USER_ERROR)
        purged = ctx.call("ps_cache_purge", {"filters": filters})["purged"]
    if as_json:
        print_json({"filters": filters, "count": count, "purged": purged, "dry_run": dry_run})
    elif dry_run:
        click.echo(f"{count} cached item(s) would be purged")
    elif not count:
        click.echo("nothing to purge: no cached item matches")
    else:
        click.echo(f"purged {purged} item(s)")


@click.command()
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_context
def reset(ctx: Context, yes: bool, as_json: bool) -> None:
    """Forget every cached node and item, after confirmation."""
    if not yes:
        status = ctx.call("ps_cache_status", {})
        items = sum(row["items"] for row in status["nodes"])
        question = f"Forget every cached node ({len(status['nodes'])}) and item ({items})?"
        if not click.confirm(question, err=True):
            fail("aborted: nothing reset", EXIT_USER_ERROR)
    result = ctx.call("ps_cache_reset", {})
    if as_json:
        print_json(result)
        return
    click.echo(f"cache reset: {result['nodes']} node(s) and {result['items']} item(s) forgotten")
