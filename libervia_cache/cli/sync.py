"""``sync``: (re)synchronise a node, in the daemon's background or waiting with progress."""

from __future__ import annotations

from typing import Any

import click

from libervia_cache.cli.app import Context, fail, json_option, pass_context, profile_option
from libervia_cache.cli.output import print_json, progress_display
from libervia_cache.cli.values import NODE
from libervia_cache.errors import EXIT_USER_ERROR

__all__ = ["sync"]


def _state(row: dict[str, Any]) -> str:
    state = row.get("state") or "not synchronised"
    if state == "ERROR" and row.get("error"):
        state += f" ({row['error']})"
    return state


@click.command()
@click.argument("service")
@click.argument("node", type=NODE)
@click.option("--wait", is_flag=True, help="Wait until the synchronisation is over, with progress.")
@profile_option
@json_option
@pass_context
def sync(ctx: Context, service: str, node: str, wait: bool, as_json: bool) -> None:
    """(Re)synchronise NODE on SERVICE into the cache.

    A synchronisation of NODE already running is followed, not started again. Without
    --wait, it runs in the daemon's background. With --wait, a progress bar (items
    stored / total when known) is shown on a terminal, plain lines otherwise; the node's
    status is printed at the end. Interrupting --wait (Ctrl-C) leaves the
    synchronisation running in the daemon.
    """
    params = {"service": service, "node": node, "profile": ctx.profile_name, "wait": wait}
    try:
        with progress_display(f"sync {node}", as_json) as on_progress:
            result = ctx.call("ps_cache_sync", params, on_progress=on_progress)
    except KeyboardInterrupt:
        ctx.close()
        where = f"{service} {node}" if service else f"'' {node}"
        fail(
            f"interrupted: the synchronisation of {node} goes on in the daemon "
            f"(see: libervia-cache status {where})",
            EXIT_USER_ERROR,
        )
    if as_json:
        print_json(result)
        return
    if not wait:
        where = service or "the profile's own service"
        click.echo(f"synchronisation of {node} on {where} started (see: libervia-cache status)")
        return
    for row in result["nodes"]:
        click.echo(f"{row['node']} on {row['service']}: {_state(row)}, {row['items']} item(s)")
