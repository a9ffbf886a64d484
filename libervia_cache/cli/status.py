"""``status``: the daemon (version, uptime, configuration, database, profiles and their
connections, counters) and the cached nodes, in 80 columns or as one JSON document.

Two bridge methods make it: ``daemon_status`` (the daemon's own) and ``ps_cache_status``
(the cache plugin's). ``--json`` is the cache's document with the daemon's under
``"daemon"``. The human form is plain text laid out for the terminal's width (80
columns when the output is not a terminal): messages wrap, and a node name too long for
its column goes whole on a line of its own, its cells on the next; nothing is cut.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import click

from libervia_cache.cli.app import Context, json_option, pass_context, profile_option
from libervia_cache.cli.output import print_json

__all__ = ["render_status", "status"]

#: width of the labels of the daemon's part (``configuration``, ``profiles``...)
LABEL_WIDTH = 15
#: narrowest layout (a narrower terminal gets lines this long)
MIN_WIDTH = 60
#: the node table's fixed columns: (header, width)
STATE_WIDTH = 11
ITEMS_HEADER = "cached/server"
SYNC_HEADER = "last sync"
SYNC_WIDTH = 16
GAP = "  "


def output_width() -> int:
    """The terminal's width; 80 when the output is not a terminal."""
    return max(MIN_WIDTH, shutil.get_terminal_size((80, 24)).columns)


def _wrap(text: str, width: int, indent: str = "", first: str | None = None) -> list[str]:
    """``text`` wrapped to ``width`` (long words broken, nothing cut)."""
    return textwrap.wrap(
        text,
        width=width,
        initial_indent=indent if first is None else first,
        subsequent_indent=indent,
        break_long_words=True,
        break_on_hyphens=False,
    ) or [(indent if first is None else first).rstrip()]


def _field(label: str, values: list[str], width: int) -> Iterator[str]:
    """A labelled field of the daemon's part, each value on its own (wrapped) lines."""
    pad = " " * LABEL_WIDTH
    for n, value in enumerate(values):
        first = label.ljust(LABEL_WIDTH) if n == 0 else pad
        yield from _wrap(value, width, indent=pad, first=first)


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _local_time(value: str | None) -> str:
    """An ISO 8601 time as ``2026-01-02 10:11`` in local time ("never" when absent)."""
    parsed = _parse_time(value)
    return parsed.astimezone().strftime("%Y-%m-%d %H:%M") if parsed else "never"


def _duration(seconds: float) -> str:
    """``3 min 12 s``, ``2 h 13 min``, ``4 d 2 h``."""
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def _in(value: str | None, now: datetime) -> str | None:
    when = _parse_time(value)
    if when is None:
        return None
    return f"in {_duration((when - now).total_seconds())}"


def _hide_password(url: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


def _profile_line(row: dict[str, Any], now: datetime) -> str:
    name = f"{row['profile']} ({row['jid']})"
    state = row.get("state") or "unknown"
    if state == "connected":
        return f"{name}: connected as {row.get('connected_as') or row['jid']}"
    text = f"{name}: {state.replace('_', ' ')}"
    if state == "failed" and row.get("failures"):
        text += f" ({row['failures']} attempt(s))"
    if state == "connecting" and row.get("error"):
        text += f" (the last attempt failed: {row['error']})"
    elif row.get("error"):
        text += f": {row['error']}"
    retry = _in(row.get("next_retry"), now)
    if retry:
        text += f"; next try {retry}"
    return text


def _daemon_part(daemon: dict[str, Any] | None, cache: dict[str, Any], width: int) -> list[str]:
    lines: list[str] = []
    if daemon is not None:
        now = _parse_time(daemon.get("now")) or datetime.now(UTC)
        lines += _wrap(
            f"libervia-cache {daemon['version']}, up {_duration(daemon['uptime'])} "
            f"(PID {daemon['pid']})",
            width,
        )
        config = daemon["config"] + ("" if daemon.get("config_exists", True) else " (absent)")
        lines += _field("configuration", [config], width)
    else:
        now = datetime.now(UTC)
    database = cache.get("database") or {}
    if database:
        url = _hide_password(str(database.get("url") or "default"))
        if database.get("unavailable"):
            url += f" (unavailable: {database['unavailable']})"
        refused = database.get("refused_profiles") or {}
        lines += _field("database", [url, *(refused[name] for name in sorted(refused))], width)
    if daemon is not None:
        profiles = [_profile_line(row, now) for row in daemon["profiles"]]
        lines += _field("profiles", profiles or ["none configured"], width)
    counters = cache.get("counters") or {}
    if counters:
        hits, misses = counters.get("hits", 0), counters.get("misses", 0)
        requests = f"{hits} hit(s), {misses} miss(es)"
        if hits + misses:
            requests += f", hit ratio {round(100 * hits / (hits + misses))}%"
        values = [requests]
        reasons = counters.get("miss_reasons") or {}
        if reasons:
            detail = ", ".join(
                f"{reason} {count}"
                for reason, count in sorted(reasons.items(), key=lambda entry: -entry[1])
            )
            values.append(f"misses: {detail}")
        lines += _field("requests", values, width)
        syncs = (
            f"{counters.get('syncs_started', 0)} started, "
            f"{counters.get('syncs_completed', 0)} completed, "
            f"{counters.get('syncs_failed', 0)} failed, "
            f"{cache.get('syncs_running', 0)} running"
        )
        lines += _field("syncs", [syncs], width)
        lines += _field("events", [f"{counters.get('events_applied', 0)} applied"], width)
    return lines


def _items_cell(row: dict[str, Any]) -> str:
    server = row.get("server_items")
    return f"{row['items']}/{server if server is not None else '?'}"


def _notes(row: dict[str, Any]) -> list[str]:
    """What a node's row needs said beyond its columns."""
    notes = []
    if row.get("state") == "ERROR":
        notes.append(f"error: {row.get('error') or 'no reason recorded'}")
    progress = row.get("progress")
    if progress:
        total = progress.get("total")
        of = f" of {total}" if total is not None else ""
        notes.append(f"synchronising: {progress.get('stored', 0)}{of} item(s) stored")
    if row.get("truncated"):
        server = row.get("server_items")
        kept = f"the newest {row['items']}" + (f" of {server}" if server is not None else "")
        notes.append(f"truncated by cache_limit: {kept} item(s) kept")
    if row.get("held"):
        because = f" ({row['suspect_because']})" if row.get("suspect_because") else ""
        notes.append(f"held, not served from the cache: {row['held']}{because}")
    if row.get("state") == "COMPLETED" and row.get("subscribed") is False:
        notes.append("not subscribed: changes on the server are not seen")
    return notes


def _nodes_part(nodes: list[dict[str, Any]], width: int) -> list[str]:
    if not nodes:
        return ["no cached node"]
    items_width = max(len(ITEMS_HEADER), *(len(_items_cell(row)) for row in nodes))
    fixed = len(GAP) * 4 + STATE_WIDTH + items_width + SYNC_WIDTH
    node_width = max(4, width - fixed)
    lines: list[str] = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in nodes:
        groups.setdefault((row["profile"], row["service"]), []).append(row)
    for (profile, service), rows in groups.items():
        if lines:
            lines.append("")
        lines += _wrap(f"{profile} on {service}", width)
        lines.append(
            GAP
            + GAP.join(
                (
                    "node".ljust(node_width),
                    "state".ljust(STATE_WIDTH),
                    ITEMS_HEADER.rjust(items_width),
                    SYNC_HEADER,
                )
            )
        )
        for row in rows:
            name = row["node"] + (f" ({row['type']})" if row.get("type") else "")
            if len(name) > node_width:  # on its own line(s), whole, its cells below
                lines += _wrap(name, width, indent=GAP)
                name = ""
            cells = (
                name.ljust(node_width),
                (row.get("state") or "not synced").ljust(STATE_WIDTH),
                _items_cell(row).rjust(items_width),
                _local_time(row.get("last_sync")),
            )
            lines.append(GAP + GAP.join(cells).rstrip())
            for note in _notes(row):
                lines += _wrap(note, width, indent=GAP * 3)
    return lines


def render_status(daemon: dict[str, Any] | None, cache: dict[str, Any], width: int) -> str:
    """The human form of the status, lines at most ``width`` long."""
    lines = _daemon_part(daemon, cache, width)
    lines.append("")
    lines += _nodes_part(cache.get("nodes") or [], width)
    return "\n".join(lines)


@click.command()
@click.argument("service", required=False)
@click.argument("node", required=False)
@profile_option
@json_option
@pass_context
def status(ctx: Context, service: str | None, node: str | None, as_json: bool) -> None:
    """The daemon and the cached nodes (of SERVICE, of NODE).

    The daemon: version, uptime, configuration file, database, each profile's connection
    (connected, or why not and when it tries again), requests answered from the cache
    (hits) or not (misses, by reason), synchronisations and events applied since it
    started. Each node: its state (with the reason of an error), the items cached and
    those the server reported at the last synchronisation, whether cache_limit cut it,
    the time of the last completed synchronisation. Lists every profile's nodes unless
    --profile is given.
    """
    daemon = ctx.call_optional("daemon_status", {})
    params = {"service": service, "node": node, "profile": ctx.profile_name}
    cache = ctx.call("ps_cache_status", params)
    if as_json:
        print_json({**cache, "daemon": daemon})
        return
    click.echo(render_status(daemon, cache, output_width()))
