"""Search queries, purge filters and search results as Libervia's frontends know them.

Libervia's frontends (``li pubsub cache search``, ``purge``) send queries the stock
cache reads leniently; the cache's query language (:mod:`libervia_cache.storage.query`)
refuses what it does not understand and names it. The translation is done here, as
tables:

- search: an empty ``fts``, ``limit: 0``, ``index: 0`` mean "none" (dropped); keys the
  stock cache ignores are dropped (logged); order directions are lower-cased. Operator
  names (``eq``, ``ne``, ``gt``, ``le``...) are aliases of the query language itself.
- purge: ``nodes`` and the other lists as they are; ``created_before`` and
  ``updated_before`` as epoch numbers (what the CLI sends) become dates; unknown keys
  are dropped.
- results: the item's parsed data, with ``pubsub_service``, ``pubsub_node``,
  ``node_profile`` and, on demand, ``item_payload``, as the stock cache answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)


class QueryError(ValueError):
    """A query the stock cache would refuse too (not an object, a bad date)."""


def _none_if_falsy(value: Any) -> Any:
    """Libervia reads ``""``, ``0`` and ``[]`` as "not given"."""
    return value or None


def _order_by(value: Any) -> Any:
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list):
        return value  # the query language names the error
    orders = []
    for order in value:
        if isinstance(order, Mapping) and isinstance(order.get("direction"), str):
            order = {**order, "direction": order["direction"].lower()}
        orders.append(order)
    return orders


def _same(value: Any) -> Any:
    return value


#: search key -> how Libervia's value becomes the query language's (keys not listed
#: here are dropped, as the stock cache ignores them)
SEARCH_KEYS: dict[str, Callable[[Any], Any]] = {
    "fts": _none_if_falsy,
    "profiles": _none_if_falsy,
    "services": _none_if_falsy,
    "nodes": _none_if_falsy,
    "types": _none_if_falsy,
    "subtypes": _none_if_falsy,
    "names": _none_if_falsy,
    "parsed": _none_if_falsy,
    "order-by": _order_by,
    "index": _none_if_falsy,
    "limit": _none_if_falsy,
    "with_payload": bool,
}


def _date(key: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, bool):
            raise QueryError(f"{key}: a date is expected, not {value!r}")
        if isinstance(value, int | float):
            try:
                return datetime.fromtimestamp(value, UTC).isoformat()
            except (OverflowError, OSError, ValueError):
                raise QueryError(f"{key}: {value!r} is not a valid timestamp") from None
        return value

    return convert


#: purge filter key -> conversion (keys not listed here are dropped)
PURGE_KEYS: dict[str, Callable[[Any], Any]] = {
    "services": _same,
    "nodes": _same,
    "profiles": _same,
    "types": _same,
    "subtypes": _same,
    "created_before": _date("created_before"),
    "updated_before": _date("updated_before"),
}


def _translate(raw: Any, table: Mapping[str, Callable[[Any], Any]], what: str) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, Mapping):
        raise QueryError(f"{what}: an object is expected, not {raw!r}")
    translated: dict[str, Any] = {}
    for key, value in raw.items():
        convert = table.get(key)
        if convert is None:
            log.debug("%s: key %r ignored (the stock cache ignores it too)", what, key)
            continue
        value = convert(value)
        if value is not None:
            translated[key] = value
    return translated


def search_query(raw: Any) -> dict[str, Any]:
    """The query language's search query for Libervia's ``raw`` one."""
    return _translate(raw, SEARCH_KEYS, "search query")


def purge_filters(raw: Any) -> dict[str, Any]:
    """The query language's purge filters for Libervia's ``raw`` ones."""
    return _translate(raw, PURGE_KEYS, "purge filters")


def search_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """One search result as the stock cache gives it: the item's parsed data with
    where it comes from."""
    data = dict(result.get("parsed") or {})
    data["pubsub_service"] = result["service"]
    data["pubsub_node"] = result["node"]
    if "item_payload" in result:
        data["item_payload"] = result["item_payload"]
    data["node_profile"] = result["profile"]
    return data
