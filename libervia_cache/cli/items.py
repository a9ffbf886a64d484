"""``get`` (the transparent read) and ``cache-get`` (from the cache only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from libervia_cache.cli.app import Context, json_option, pass_context, profile_option
from libervia_cache.cli.output import print_json
from libervia_cache.cli.values import NODE

__all__ = ["cache_get", "get"]

F = TypeVar("F", bound=Callable[..., Any])

#: RSM page size when --after, --before or --index is given without --rsm-max
DEFAULT_RSM_MAX = 10


def rsm_options(
    rsm_max: int | None, after: str | None, before: str | None, index: int | None
) -> dict[str, Any] | None:
    """The ``rsm`` parameter of an items request (None: no RSM)."""
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
    data: dict[str, Any] = {"max": rsm_max if rsm_max is not None else DEFAULT_RSM_MAX}
    for name, value in (("after", after), ("before", before), ("index", index)):
        if value is not None:
            data[name] = value
    return data


def print_items(result: dict[str, Any], as_json: bool) -> None:
    """Items (XML) one a line on stdout and a summary on stderr; or the JSON document."""
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
    details = [f"{key} {rsm[key]}" for key in ("index", "count") if rsm.get(key) is not None]
    if details:
        summary += f" (RSM {', '.join(details)})"
    click.echo(summary, err=True)


def items_request_options(function: F) -> F:
    """SERVICE NODE and the options of an items request (max items, ids, RSM)."""
    for decorator in reversed(
        [
            click.argument("service"),
            click.argument("node", type=NODE),
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


def items_params(
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
    """The parameters of ``ps_items_get`` and ``ps_cache_get``."""
    return {
        "service": service,
        "node": node,
        "profile": ctx.profile_name,
        "max_items": max_items,
        "item_ids": list(item_ids) or None,
        "rsm": rsm_options(rsm_max, after, before, index),
    }


@click.command()
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
    params = items_params(ctx, service, node, max_items, item_ids, rsm_max, after, before, index)
    params["use_cache"] = not no_cache
    print_items(ctx.call("ps_items_get", params), as_json)


@click.command("cache-get")
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
    params = items_params(ctx, service, node, max_items, item_ids, rsm_max, after, before, index)
    print_items(ctx.call("ps_cache_get", params), as_json)
