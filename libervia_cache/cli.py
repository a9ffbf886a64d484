"""The ``libervia-cache`` command: run the daemon, read and manage the cache.

Every command but ``daemon`` and ``db`` talks to a running daemon through its control
socket. Each has ``--help``; those that print results have ``--json`` (one JSON document
on stdout, nothing else there). Errors are one line on stderr, without traceback unless
``--debug`` is given. Exit codes: 0 success, 1 user error (bad arguments, not found,
declined confirmation), 2 daemon unreachable, 3 server or internal error.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from libervia_cache.backend.bridge import (
    EXIT_FAILURE,
    EXIT_USER_ERROR,
    BridgeClient,
    BridgeError,
    exit_code,
)
from libervia_cache.backend.config import ConfigError, DaemonConfig, load_config

__all__ = ["EXIT_FAILURE", "EXIT_USER_ERROR", "Context", "main", "parse_date", "parse_value"]

F = TypeVar("F", bound=Callable[..., Any])

#: Whether the running command was given ``--debug`` (read by :meth:`CacheGroup.main`).
_debug = False


class CacheGroup(click.Group):
    """The root group: one exit-code policy and one-line errors for every command."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command; exit 0, or 1/2/3 as the module docstring says."""
        global _debug
        _debug = False
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as error:  # bad usage: click's code 2 is ours for "unreachable"
            error.show()
            sys.exit(EXIT_USER_ERROR)
        except click.Abort:
            click.echo("libervia-cache: aborted", err=True)
            sys.exit(EXIT_USER_ERROR)
        except BridgeError as error:  # only with --debug: Context.call handles it otherwise
            traceback.print_exc()
            sys.exit(exit_code(error.kind))
        except Exception as error:
            if _debug:
                traceback.print_exc()
            else:
                message = " ".join(str(error).split()) or type(error).__name__
                click.echo(
                    f"libervia-cache: internal error: {message} (--debug for details)", err=True
                )
            sys.exit(EXIT_FAILURE)
        sys.exit(result if isinstance(result, int) else 0)


class Context:
    """What the global options give every command."""

    def __init__(self, config_path: Path | None, profile: str | None, debug: bool) -> None:
        self.config_path = config_path
        self.profile_name = profile
        self.debug = debug
        self._config: DaemonConfig | None = None

    @property
    def config(self) -> DaemonConfig:
        """The configuration file (a configuration error ends the command, exit 1)."""
        if self._config is None:
            try:
                self._config = load_config(self.config_path)
            except ConfigError as error:
                fail(f"configuration: {error}", EXIT_USER_ERROR)
        return self._config

    @property
    def db_url(self) -> str | None:
        """``[pubsub_cache] db_url`` (None: the per-user default database); for ``db``."""
        url = self.config.get("pubsub_cache", "db_url")
        return str(url) if url else None

    def call(
        self,
        method: str,
        params: dict[str, Any],
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> Any:
        """Call a bridge method of the daemon; a bridge error ends the command."""
        client = BridgeClient(self.config.socket_path)
        try:
            return client.call(method, params, on_progress=on_progress)
        except BridgeError as error:
            if self.debug:
                raise
            fail(error.message, exit_code(error.kind))


def fail(message: str, code: int) -> NoReturn:
    """End the command with a one-line error on stderr."""
    click.echo(f"libervia-cache: {message}", err=True)
    sys.exit(code)


def print_json(data: Any) -> None:
    """The one JSON document of ``--json`` on stdout."""
    click.echo(json.dumps(data, ensure_ascii=False))


def console(stderr: bool = False) -> Any:
    """A rich console; when not writing to a terminal, wide enough to never wrap tables."""
    from rich.console import Console

    out = Console(stderr=stderr)
    if not out.is_terminal:
        out = Console(stderr=stderr, width=10_000, no_color=True)
    return out


pass_context = click.make_pass_decorator(Context)


def json_option(function: F) -> F:
    """``--json``: one JSON document on stdout."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document on stdout, nothing else."
    )(function)


def _set_profile(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.ensure_object(Context).profile_name = value


def profile_option(function: F) -> F:
    """``--profile`` after the command name, same as before it."""
    return click.option(
        "--profile",
        expose_value=False,
        callback=_set_profile,
        help="Profile (XMPP account) to use; default: the daemon's first one.",
    )(function)


# --- values ---------------------------------------------------------------------------------

#: unit of a relative date -> seconds
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RELATIVE_RE = re.compile(r"(\d+)\s*([smhdw])")


def parse_date(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 date, or a relative one (``30d``, ``12h``, ``1w2d``: that long ago).

    Naive ISO dates are taken as UTC. Raises ``ValueError``.
    """
    compact = text.strip().lower()
    if compact and _RELATIVE_RE.sub("", compact).strip() == "":
        seconds = sum(int(n) * _UNITS[unit] for n, unit in _RELATIVE_RE.findall(compact))
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO 8601 date nor a relative one like 30d, 12h, 15m, 2w"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class DateType(click.ParamType):
    """A date option: ISO 8601 or relative to now (``30d``)."""

    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            return parse_date(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


def parse_value(text: str) -> Any:
    """A ``--parsed`` value: JSON when it is valid JSON, else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_order(text: str) -> dict[str, str]:
    """``--order-by`` ``KEY[:asc|:desc]``: a fixed key, else a parsed JSON path."""
    from libervia_cache.search import ORDER_KEYS

    key, direction = text, "asc"
    head, sep, tail = text.rpartition(":")
    if sep and tail.lower() in ("asc", "desc"):
        key, direction = head, tail.lower()
    if not key:
        raise click.BadParameter(f"{text!r}: empty key", param_hint="'--order-by'")
    entry = {"order": key} if key in ORDER_KEYS else {"path": key}
    entry["direction"] = direction
    return entry


# --- root -----------------------------------------------------------------------------------


@click.group(cls=CacheGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="LIBERVIA_CACHE_CONFIG",
    help="Configuration file (default: libervia-cache.conf in the XDG config dir).",
)
@click.option("--profile", help="Profile (XMPP account) to use; default: the daemon's first one.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(package_name="libervia-cache")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, profile: str | None, debug: bool) -> None:
    """Transparent, searchable cache of XMPP pubsub nodes.

    Exit codes: 0 success, 1 user error, 2 daemon unreachable, 3 server or internal error.
    """
    global _debug
    _debug = debug
    ctx.obj = Context(config_path, profile, debug)


# --- daemon ---------------------------------------------------------------------------------


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


# --- reading --------------------------------------------------------------------------------


def _rsm_options(
    rsm_max: int | None, after: str | None, before: str | None, index: int | None
) -> dict[str, Any] | None:
    given = [
        name
        for name, value in (("after", after), ("before", before), ("index", index))
        if value is not None
    ]
    if len(given) > 1:
        raise click.UsageError(
            f"use only one of --after, --before, --index (got {', '.join(given)})"
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


def items_request_options(function: F) -> F:
    """SERVICE NODE and the options of an items request (max items, ids, RSM)."""
    for decorator in reversed(
        [
            click.argument("service"),
            click.argument("node"),
            click.option(
                "--max-items", type=click.IntRange(min=1), help="The N most recent items."
            ),
            click.option("--item", "item_ids", multiple=True, help="Item id to get (repeatable)."),
            click.option("--rsm-max", type=click.IntRange(min=0), help="RSM page size."),
            click.option("--after", help="RSM: the page after this key."),
            click.option(
                "--before",
                is_flag=False,
                flag_value="",
                default=None,
                help="RSM: the page before this key (alone: the last page).",
            ),
            click.option(
                "--index", type=click.IntRange(min=0), help="RSM: the page starting at this index."
            ),
            profile_option,
        ]
    ):
        function = decorator(function)
    return function


def _items_params(
    ctx: Context,
    service: str,
    node: str,
    max_items: int | None,
    item_ids: tuple[str, ...],
    rsm_max: int | None,
    after: str | None,
    before: str | None,
    index: int | None,
) -> dict[str, Any]:
    return {
        "service": service,
        "node": node,
        "profile": ctx.profile_name,
        "max_items": max_items,
        "item_ids": list(item_ids) or None,
        "rsm": _rsm_options(rsm_max, after, before, index),
    }


@main.command()
@items_request_options
@click.option("--no-cache", is_flag=True, help="Ask the service, not the cache.")
@json_option
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
    """Get items of NODE on SERVICE, through the cache when it can answer.

    Items (XML) are printed one a line on stdout, a summary on stderr.
    """
    params = _items_params(ctx, service, node, max_items, item_ids, rsm_max, after, before, index)
    params["use_cache"] = not no_cache
    _print_items(ctx.call("ps_items_get", params), as_json)


@main.command("cache-get")
@items_request_options
@json_option
@pass_context
def cache_get(
    ctx: Context,
    service: str,
    node: str,
    max_items: int | None,
    item_ids: tuple[str, ...],
    rsm_max: int | None,
    after: str | None,
    before: str | None,
    index: int | None,
    as_json: bool,
) -> None:
    """Get items of NODE on SERVICE from the cache only (never from the network).

    Fails (exit 1) when the node is not synchronised.
    """
    params = _items_params(ctx, service, node, max_items, item_ids, rsm_max, after, before, index)
    _print_items(ctx.call("ps_cache_get", params), as_json)


# --- synchronisation ------------------------------------------------------------------------


def _progress_text(data: dict[str, Any]) -> str:
    total = data.get("total")
    return f"{data.get('stored', 0)} item(s) stored" + (f" of {total}" if total else "")


@contextmanager
def _progress_display(
    label: str, as_json: bool
) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    """A progress sink: a rich bar on a terminal, plain lines otherwise, none for JSON."""
    if as_json:
        yield None
        return
    if not sys.stdout.isatty():

        def line(data: dict[str, Any]) -> None:
            click.echo(f"{label}: {_progress_text(data)}")

        yield line
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("items"),
        TimeElapsedColumn(),
        console=console(),
    ) as bar:
        task_id = bar.add_task(label, total=None)

        def update(data: dict[str, Any]) -> None:
            bar.update(task_id, completed=data.get("stored", 0), total=data.get("total"))

        yield update


@main.command()
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
    with _progress_display(f"sync {node}", as_json) as on_progress:
        result = ctx.call("ps_cache_sync", params, on_progress=on_progress)
    if as_json:
        print_json(result)
        return
    if not wait:
        click.echo(f"synchronisation of {node} on {service} started (see: libervia-cache status)")
        return
    for row in result["nodes"]:
        click.echo(f"{row['node']} on {row['service']}: {row['state']}, {row['items']} item(s)")


# --- search ---------------------------------------------------------------------------------


def _author(parsed: dict[str, Any]) -> str:
    author = parsed.get("author")
    if isinstance(author, dict):
        return str(author.get("name") or author.get("jid") or author.get("uri") or "")
    if author:
        return str(author)
    return str(parsed.get("publisher") or "")


@main.command()
@click.option("--fts", metavar="QUERY", help="Full-text query (SQLite FTS5 syntax).")
@click.option("--profile", "profiles", multiple=True, help="Only this profile (repeatable).")
@click.option("--service", "services", multiple=True, help="Only this service (repeatable).")
@click.option("--node", "nodes", multiple=True, help="Only this node (repeatable).")
@click.option("--type", "types", multiple=True, help="Only nodes of this type (repeatable).")
@click.option(
    "--subtype", "subtypes", multiple=True, help="Only nodes of this subtype (repeatable)."
)
@click.option("--item", "item_ids", multiple=True, help="Only this item id (repeatable).")
@click.option(
    "--parsed",
    "parsed",
    nargs=3,
    multiple=True,
    metavar="PATH OP VALUE",
    help="Condition on parsed data (repeatable): PATH like tags, author.name, links[0].href; "
    "OP one of ==, !=, <, <=, >, >=, between, in, not_in, overlap, ioverlap, disjoint, "
    "idisjoint, like, ilike, not_like, not_ilike; VALUE is JSON when valid JSON, else a string.",
)
@click.option(
    "--order-by",
    "order_by",
    multiple=True,
    metavar="KEY[:asc|:desc]",
    help="Order (repeatable): creation, modification, item_id, rank (with --fts) or a parsed "
    "path; default: rank with --fts, else newest modification first.",
)
@click.option(
    "--index",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Skip this many results.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="At most this many results.",
)
@click.option("--with-payload", is_flag=True, help="Include the items' XML.")
@json_option
@pass_context
def search(
    ctx: Context,
    fts: str | None,
    profiles: tuple[str, ...],
    services: tuple[str, ...],
    nodes: tuple[str, ...],
    types: tuple[str, ...],
    subtypes: tuple[str, ...],
    item_ids: tuple[str, ...],
    parsed: tuple[tuple[str, str, str], ...],
    order_by: tuple[str, ...],
    index: int,
    limit: int,
    with_payload: bool,
    as_json: bool,
) -> None:
    """Search the cached items of every synchronised or tracked node.

    Prints a table (service, node, item, title, author, published); with --json, a list
    of results each holding profile, service, node, item_id, parsed, created, updated
    (and rank, item_payload when relevant).
    """
    if not profiles and ctx.profile_name:
        profiles = (ctx.profile_name,)
    query: dict[str, Any] = {
        "fts": fts,
        "profiles": list(profiles) or None,
        "services": list(services) or None,
        "nodes": list(nodes) or None,
        "types": list(types) or None,
        "subtypes": list(subtypes) or None,
        "names": list(item_ids) or None,
        "parsed": [
            {"path": path, "op": op, "value": parse_value(value)} for path, op, value in parsed
        ],
        "order-by": [parse_order(entry) for entry in order_by],
        "index": index,
        "limit": limit,
        "with_payload": with_payload,
    }
    results = ctx.call("ps_cache_search", {"query": query})
    if as_json:
        print_json(results)
        return
    from rich.table import Table

    table = Table("service", "node", "item", "title", "author", "published")
    for result in results:
        data = result.get("parsed") or {}
        if not isinstance(data, dict):
            data = {}
        table.add_row(
            result["service"],
            result["node"],
            result["item_id"],
            str(data.get("title") or ""),
            _author(data),
            str(data.get("published") or ""),
        )
    out = console()
    if results:
        out.print(table)
    if with_payload:
        for result in results:
            out.print(f"\n{result['item_id']} ({result['node']} on {result['service']}):")
            out.print(result.get("item_payload") or "", markup=False, highlight=False)
    click.echo(f"{len(results)} result(s)", err=True)


# --- purge, reset ---------------------------------------------------------------------------


@main.command()
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


@main.command()
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


# --- status ---------------------------------------------------------------------------------


@main.command()
@click.argument("service", required=False)
@click.argument("node", required=False)
@profile_option
@json_option
@pass_context
def status(ctx: Context, service: str | None, node: str | None, as_json: bool) -> None:
    """Cached nodes (of SERVICE, of NODE) and the daemon's hit/miss counters.

    Lists every profile's nodes unless --profile is given.
    """
    params = {"service": service, "node": node, "profile": ctx.profile_name}
    result = ctx.call("ps_cache_status", params)
    if as_json:
        print_json(result)
        return
    from rich.table import Table

    table = Table("profile", "service", "node", "type", "state", "items", "last sync", "subscribed")
    for row in result["nodes"]:
        state = row["state"] or "-"
        progress = row.get("progress")
        if progress:
            total = progress.get("total")
            state += f" ({progress['stored']}/{total if total is not None else '?'})"
        table.add_row(
            row["profile"],
            row["service"],
            row["node"],
            row["type"] or "",
            state,
            str(row["items"]),
            (row["last_sync"] or "")[:19].replace("T", " "),
            "yes" if row["subscribed"] else "no",
        )
    out = console()
    if result["nodes"]:
        out.print(table)
    else:
        out.print("no cached node")
    counters = result["counters"]
    out.print(
        f"since start: {counters['hits']} hit(s), {counters['misses']} miss(es), "
        f"{counters['syncs_started']} sync(s) started, {counters['syncs_failed']} failed",
        highlight=False,
    )


def _mount_db_commands() -> None:
    from libervia_cache.storage.commands import db

    main.add_command(db)


_mount_db_commands()
