"""The ``libervia-cache`` command: run the daemon, read and manage the cache.

Every command but ``daemon`` and ``db`` talks to a running daemon through its control
socket. Errors are one line on stderr; exit codes: 0 success, 1 user error (bad
arguments, not found), 2 daemon unreachable, 3 server or internal error.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from libervia_cache.backend.bridge import BridgeClient, BridgeError
from libervia_cache.backend.config import ConfigError, DaemonConfig, load_config

EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 3


class Context:
    """What the global options give every command."""

    def __init__(self, config_path: Path | None, profile: str | None, debug: bool) -> None:
        self.config_path = config_path
        self.profile_name = profile
        self.debug = debug
        self._config: DaemonConfig | None = None

    @property
    def config(self) -> DaemonConfig:
        if self._config is None:
            try:
                self._config = load_config(self.config_path)
            except ConfigError as error:
                fail(f"configuration: {error}", EXIT_USER_ERROR)
        return self._config

    @property
    def profile(self) -> str:
        if self.profile_name:
            return self.profile_name
        try:
            return self.config.default_profile
        except ConfigError as error:
            fail(f"configuration: {error}", EXIT_USER_ERROR)

    def call(self, method: str, params: dict[str, Any], **kwargs: Any) -> Any:
        client = BridgeClient(self.config.socket_path)
        try:
            return client.call(method, params, **kwargs)
        except BridgeError as error:
            if self.debug:
                raise
            fail(error.message, error.exit_code)


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"libervia-cache: {message}", err=True)
    sys.exit(code)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=None))


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="LIBERVIA_CACHE_CONFIG",
    help="Configuration file (default: libervia-cache.conf in the XDG config dir).",
)
@click.option("--profile", help="Profile (XMPP account) to use; default: the first one.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(package_name="libervia-cache")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, profile: str | None, debug: bool) -> None:
    """Transparent, searchable cache of XMPP pubsub nodes."""
    ctx.obj = Context(config_path, profile, debug)


# --- daemon -------------------------------------------------------------------------------


@main.command()
@pass_context
def daemon(ctx: Context) -> None:
    """Run the daemon in the foreground (logs on stderr; stops on SIGINT/SIGTERM)."""
    config = ctx.config
    logging.basicConfig(
        level=logging.DEBUG if ctx.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from twisted.internet import asyncioreactor

    asyncioreactor.install()
    from libervia_cache.backend.runner import run_daemon

    sys.exit(run_daemon(config))


# --- reading ---------------------------------------------------------------------------------


def _rsm_options(
    rsm_max: int | None, after: str | None, before: str | None, index: int | None
) -> dict[str, Any] | None:
    given = [
        name
        for name, value in (("after", after), ("before", before), ("index", index))
        if value is not None
    ]
    if len(given) > 1:
        fail(
            f"use only one of --after, --before, --index (got {', '.join(given)})", EXIT_USER_ERROR
        )
    if rsm_max is None and not given:
        return None
    data: dict[str, Any] = {"max": rsm_max if rsm_max is not None else 10}
    if after is not None:
        data["after"] = after
    if before is not None:
        data["before"] = before
    if index is not None:
        data["index"] = index
    return data


def _print_items(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(result)
        return
    metadata = result["metadata"]
    source = "cache" if metadata.get("cached") else "network"
    for item in result["items"]:
        click.echo(item)
    rsm = metadata.get("rsm") or {}
    summary = (
        f"{len(result['items'])} item(s) of {metadata.get('node')} "
        f"on {metadata.get('service')} from the {source}"
    )
    if "count" in rsm:
        summary += f" (RSM index {rsm.get('index')}, count {rsm['count']})"
    click.echo(summary, err=True)


@main.command()
@click.argument("service")
@click.argument("node")
@click.option("--max-items", type=click.IntRange(min=1), help="The N most recent items.")
@click.option("--item", "item_ids", multiple=True, help="Item id to get (repeatable).")
@click.option("--rsm-max", type=click.IntRange(min=0), help="RSM page size.")
@click.option("--after", help="RSM: the page after this key.")
@click.option(
    "--before",
    is_flag=False,
    flag_value="",
    default=None,
    help="RSM: the page before this key (alone: the last page).",
)
@click.option("--index", type=click.IntRange(min=0), help="RSM: the page starting at this index.")
@click.option("--no-cache", is_flag=True, help="Ask the service, not the cache.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_context
def get(
    ctx: Context,
    service: str,
    node: str,
    max_items: int | None,
    item_ids: tuple[str, ...],
    rsm_max: int | None,
    after: str | None,
    before: str | None,
    index: int | None,
    no_cache: bool,
    as_json: bool,
) -> None:
    """Get items of NODE on SERVICE, through the cache when it can answer."""
    params: dict[str, Any] = {
        "service": service,
        "node": node,
        "profile": ctx.profile,
        "max_items": max_items,
        "item_ids": list(item_ids) or None,
        "rsm": _rsm_options(rsm_max, after, before, index),
        "use_cache": not no_cache,
    }
    _print_items(ctx.call("ps_items_get", params), as_json)


@main.command()
@click.argument("service")
@click.argument("node")
@click.option("--wait", is_flag=True, help="Wait until the synchronisation is over.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_context
def sync(ctx: Context, service: str, node: str, wait: bool, as_json: bool) -> None:
    """(Re)synchronise NODE on SERVICE into the cache."""
    result = ctx.call(
        "ps_cache_sync",
        {"service": service, "node": node, "profile": ctx.profile, "wait": wait},
    )
    if as_json:
        print_json(result)
        return
    for row in result["nodes"]:
        click.echo(f"{row['node']} on {row['service']}: {row['state']}, {row['items']} item(s)")


@main.command()
@click.argument("service", required=False)
@click.argument("node", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_context
def status(ctx: Context, service: str | None, node: str | None, as_json: bool) -> None:
    """Cached nodes and the daemon's hit/miss counters."""
    result = ctx.call("ps_cache_status", {"service": service, "node": node})
    if as_json:
        print_json(result)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("profile", "service", "node", "type", "state", "items", "last sync", "subscribed")
    for row in result["nodes"]:
        table.add_row(
            row["profile"],
            row["service"],
            row["node"],
            row["type"] or "",
            row["state"] or "",
            str(row["items"]),
            row["last_sync"] or "",
            "yes" if row["subscribed"] else "no",
        )
    console = Console()
    console.print(table)
    counters = result["counters"]
    console.print(f"hits: {counters['hits']}, misses: {counters['misses']}")


def _mount_db_commands() -> None:
    from libervia_cache.storage.commands import db

    main.add_command(db)


_mount_db_commands()
