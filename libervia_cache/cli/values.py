"""Values given on the command line: dates, ``--parsed`` values, ``--order-by`` keys.

The daemon validates whole queries (and names the bad part); these only turn the
command-line forms into the JSON the bridge methods take.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click

__all__ = [
    "DIRECTIONS",
    "NODE",
    "ORDER_KEYS",
    "DateType",
    "NodeName",
    "parse_date",
    "parse_order",
    "parse_value",
]

#: unit of a relative date -> seconds
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RELATIVE_RE = re.compile(r"(\d+)\s*([smhdw])")

#: the fixed order keys of a search query (the search module's ORDER_KEYS, which the
#: CLI cannot import without the storage layer; a unit test keeps both equal)
ORDER_KEYS = ("creation", "modification", "item_id", "rank")

#: the directions of an ``--order-by`` key
DIRECTIONS = ("asc", "desc")


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
    """``--order-by`` ``KEY[:asc|:desc]``: a fixed key, else a parsed JSON path.

    What follows the last colon is the direction, which must be ``asc`` or ``desc``: a
    path holding a colon says its direction (``ns:key:asc``).
    """
    key, direction = text, "asc"
    head, sep, tail = text.rpartition(":")
    if sep:
        if tail.lower() not in DIRECTIONS:
            raise click.BadParameter(
                f"{text!r}: unknown direction {tail!r} (asc or desc)", param_hint="'--order-by'"
            )
        key, direction = head, tail.lower()
    if not key:
        raise click.BadParameter(f"{text!r}: empty key", param_hint="'--order-by'")
    entry = {"order": key} if key in ORDER_KEYS else {"path": key}
    entry["direction"] = direction
    return entry


class NodeName(click.ParamType):
    """A pubsub node name: any text but the empty one."""

    name = "NODE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not str(value):
            self.fail("a node name cannot be empty", param, ctx)
        return str(value)


NODE = NodeName()
