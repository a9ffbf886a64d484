"""``search``: the cached items of every node the cache holds, as a table or JSON."""

from __future__ import annotations

from typing import Any

import click

from libervia_cache.cli.app import Context, json_option, pass_context
from libervia_cache.cli.output import console, print_json, table
from libervia_cache.cli.values import parse_order, parse_value

__all__ = ["search"]


def _author(parsed: dict[str, Any]) -> str:
    author = parsed.get("author")
    if isinstance(author, dict):
        return str(author.get("name") or author.get("jid") or author.get("uri") or "")
    if author:
        return str(author)
    return str(parsed.get("publisher") or "")


def _row(result: dict[str, Any]) -> list[str]:
    data = result.get("parsed") or {}
    if not isinstance(data, dict):
        data = {}
    return [
        result["service"],
        result["node"],
        result["item_id"],
        str(data.get("title") or ""),
        _author(data),
        str(data.get("published") or ""),
    ]


@click.command()
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
    "path, then :asc (default) or :desc; default: rank with --fts, else newest modification "
    "first.",
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

    Prints a table (service, node, item, title, author, published), then on stderr how
    many results were shown and whether more match beyond --limit; with --json, a list of
    at most --limit results each holding profile, service, node, item_id, parsed,
    created, updated (and rank, item_payload when relevant).
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
        # one more than asked: whether more results match than are shown
        "limit": limit + 1,
        "with_payload": with_payload,
    }
    results = ctx.call("ps_cache_search", {"query": query})
    more = len(results) > limit
    results = results[:limit]
    if as_json:
        print_json(results)
        return
    if results:
        out = console()
        headers = ("service", "node", "item", "title", "author", "published")
        out.print(table(headers, (_row(result) for result in results)))
        if with_payload:
            for result in results:
                out.print(f"\n{result['item_id']} ({result['node']} on {result['service']}):")
                out.print(result.get("item_payload") or "", markup=False, highlight=False)
    if more:
        click.echo(
            f"{len(results)} result(s) shown, more match: the next ones with "
            f"--index {index + limit}, or a higher --limit",
            err=True,
        )
    else:
        click.echo(f"{len(results)} result(s)", err=True)
