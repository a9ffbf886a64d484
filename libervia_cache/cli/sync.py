"""``sync``: (re)synchronise a node, in the daemon's background or waiting with progress."""

from __future__ import annotations

import click

from libervia_cache.cli.app import Context, json_option, pass_context, profile_option
from libervia_cache.cli.output import print_json, progress_display

__all__ = ["sync"]


@click.command()
@click.argument("service")
@click.argument("node")
@click.option("--wait", is_flag=True, help="Wait until the synchronisation is over, with progress.")
@profile_option
@json_option
@pass_context
def sync(ctx: Context, service: str, node: str, wait: bool, as_json: bool) -> None:
    """(Re)synchronise NODE on SERVICE into the cache.

    Without --wait, the synchronisation runs in the daemon's background. With --wait, a
    progress bar (items stored / total when known) is shown on a terminal, plain lines
    otherwise; the node's status is printed at the end.
    """
    params = {"service": service, "node": node, "profile": ctx.profile_name, "wait": wait}
    with progress_display(f"sync {node}", as_json) as on_progress:
        result = ctx.call("ps_cache_sync", params, on_progress=on_progress)
    if as_json:
        print_json(result)
        return
    if not wait:
        click.echo(f"synchronisation of {node} on {service} started (see: libervia-cache status)")
        return
    for row in result["nodes"]:
        click.echo(f"{row['node']} on {row['service']}: {row['state']}, {row['items']} item(s)")
