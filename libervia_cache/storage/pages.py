"""Get-items pages (XEP-0060 ``max_items``/item ids, XEP-0059 RSM), the lean read path.

Positions are dense while a node is clean (see :mod:`.models`), so every request maps to
a range of *indexes* in the node's ordered list, and an index range maps to a position
range: ``index = position - min`` (ascending) or ``max - position`` (descending).
A page read is then two index lookups (the node's bounds and the RSM key's position)
plus one range scan, whatever the depth of the page: RSM ``count`` and ``index`` cost
nothing more.

The statements are built once with ``select()`` and compiled once to SQL text, then run
on a plain ``sqlite3`` connection: a 20-item page is a few tens of microseconds, less
than one hop to the aiosqlite thread, so it is cheaper to run it on the event loop than
to ship it to a thread (measured in ``bench/store_bench.py``). The same function runs on
an engine connection when there is no such reader (in-memory databases), or when the
node has gaps to close first (a write).

On PostgreSQL every statement is a round trip: :mod:`.pgpages` asks for the header and
the page in one statement (with the node's row too, on the read path), and hands both
to :func:`answer` as :func:`read_page` does here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql import Select

from .models import items_table, nodes_table
from .records import ItemsPage, NodeChanged, UnknownRSMKey

items = items_table
nodes = nodes_table

#: run one compiled statement with named parameters, return its rows
Fetch = Callable[[str, dict[str, Any]], Sequence[Sequence[Any]]]

#: order name -> (items position column, nodes gap column)
ORDERS: dict[str, tuple[str, str]] = {
    "modification": ("position", "position_gap_from"),
    "creation": ("creation_position", "creation_gap_from"),
}


class NeedsRenumbering(Exception):
    """The node has gaps in the requested order: close them (a write) and read again."""


def _compile(statement: Select[Any]) -> str:
    return str(statement.compile(dialect=sqlite.dialect(paramstyle="named")))


#: what RSM keys are: the item ids, or the server's own keys learnt item by item
KEY_COLUMNS = ("item_id", "rsm_key")


@dataclass(frozen=True)
class _Statements:
    header: str
    page_asc: str
    page_desc: str
    by_ids: str


def _statements(position_name: str, gap_name: str, key_name: str) -> _Statements:
    position: ColumnElement[int] = items.c[position_name]
    key_column = items.c[key_name]
    node: Any = bindparam("node")
    in_node = items.c.node_id == node
    header = select(
        nodes.c.sync_token,
        nodes.c[gap_name],
        select(func.min(position)).where(in_node).scalar_subquery(),
        select(func.max(position)).where(in_node).scalar_subquery(),
        select(position).where(in_node, key_column == bindparam("key")).scalar_subquery(),
    ).where(nodes.c.id == node)
    page = select(items.c.item_id, items.c.data, key_column).where(
        in_node, position >= bindparam("low"), position <= bindparam("high")
    )
    wanted = func.json_each(bindparam("ids")).table_valued("value")
    by_ids = select(items.c.item_id, items.c.data, key_column).where(
        in_node, items.c.item_id.in_(select(wanted.c.value))
    )
    return _Statements(
        header=_compile(header),
        page_asc=_compile(page.order_by(position.asc())),
        page_desc=_compile(page.order_by(position.desc())),
        by_ids=_compile(by_ids.order_by(position.asc())),
    )


#: (order, key column) -> statements
STATEMENTS: dict[tuple[str, str], _Statements] = {
    (name, key): _statements(*cols, key) for name, cols in ORDERS.items() for key in KEY_COLUMNS
}


@dataclass(frozen=True)
class PageRequest:
    """A get-items request (XEP-0060 + XEP-0059 RSM), validated."""

    max_items: int | None = None
    item_ids: tuple[str, ...] | None = None
    rsm_max: int | None = None
    after: str | None = None
    before: str | None = None
    index: int | None = None
    order_by: str = "modification"
    descending: bool = False
    #: where RSM keys are: ``item_id``, or ``rsm_key`` (the server's own, learnt)
    keys: str = "item_id"
    #: items asked by id: in the node's order (``node``) or as asked (``asked``)
    ids_order: str = "node"

    def __post_init__(self) -> None:
        if self.order_by not in ORDERS:
            raise ValueError(f"order_by must be one of {', '.join(ORDERS)}: {self.order_by!r}")
        if self.keys not in KEY_COLUMNS:
            raise ValueError(f"keys must be one of {', '.join(KEY_COLUMNS)}: {self.keys!r}")
        if self.ids_order not in ("node", "asked"):
            raise ValueError(f"ids_order must be node or asked: {self.ids_order!r}")
        for name in ("max_items", "rsm_max", "index"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer: {value!r}")
        anchors = [a for a in (self.after, self.before, self.index) if a is not None]
        if len(anchors) > 1:
            raise ValueError("RSM after, before and index are mutually exclusive")
        if self.max_items is not None and self.uses_rsm and self.item_ids is None:
            raise ValueError("max_items and RSM cannot be used together (XEP-0060 6.5.7)")

    @property
    def uses_rsm(self) -> bool:
        return (
            self.rsm_max is not None
            or self.after is not None
            or self.before is not None
            or self.index is not None
        )


def index_range(request: PageRequest, count: int, key_index: int | None) -> tuple[int, int]:
    """The ``[start, end)`` slice of the node's ordered list a request asks for."""
    limit = request.rsm_max
    if request.max_items is not None:
        return max(0, count - request.max_items), count
    if request.before is not None:
        end = count if request.before == "" else (key_index if key_index is not None else 0)
        start = 0 if limit is None else max(0, end - limit)
        return start, end
    if request.after is not None:
        start = (key_index if key_index is not None else -1) + 1
    else:
        start = min(request.index or 0, count)
    end = count if limit is None else min(count, start + limit)
    return start, end


def read_page(
    fetch: Fetch, node_id: int, request: PageRequest, synced_by: str | None = None
) -> ItemsPage:
    """Answer ``request`` with ``fetch``; raise :class:`NeedsRenumbering` on a dirty node.

    ``synced_by``: the token of the sync the caller found the node completed by; if
    another sync (or a purge, a reset) took the node since, :class:`NodeChanged` is
    raised. ``fetch`` must run every statement in one read transaction: the check and
    the page then see the same state of the node.
    """
    statements = STATEMENTS[(request.order_by, request.keys)]
    key = request.after if request.after is not None else request.before or None
    rows = fetch(statements.header, {"node": node_id, "key": key})
    header = rows[0] if rows else None

    def page_rows(start: int, end: int, low: int, high: int) -> Sequence[Sequence[Any]]:
        if request.item_ids is not None:
            return fetch(statements.by_ids, {"node": node_id, "ids": json.dumps(request.item_ids)})
        if start >= end:
            return []
        if request.descending:
            return fetch(
                statements.page_desc, {"node": node_id, "low": high - end + 1, "high": high - start}
            )
        return fetch(
            statements.page_asc, {"node": node_id, "low": low + start, "high": low + end - 1}
        )

    return answer(header, page_rows, node_id, request, synced_by)


def answer(
    header: Sequence[Any] | None,
    found: Sequence[Sequence[Any]] | Callable[[int, int, int, int], Sequence[Sequence[Any]]],
    node_id: int,
    request: PageRequest,
    synced_by: str | None,
) -> ItemsPage:
    """Check the header, then make the page of the rows ``found`` (or fetched by it,
    given the page's index range and the node's bounds)."""
    key = request.after if request.after is not None else request.before or None
    if header is None:  # unknown node: an empty one
        if synced_by is not None:
            raise NodeChanged(node_id)
        if key is not None:
            raise UnknownRSMKey(key)
        return ItemsPage(count=0 if request.uses_rsm else None)
    token, gap, low, high, key_position = header
    if synced_by is not None and token != synced_by:
        raise NodeChanged(node_id)
    if gap is not None:
        raise NeedsRenumbering()
    if key is not None and key_position is None:
        raise UnknownRSMKey(key)
    count = 0 if low is None else high - low + 1

    if request.item_ids is not None:
        rows = found(0, 0, 0, 0) if callable(found) else found
        if request.ids_order == "asked":
            by_id = {row[0]: row for row in rows}
            rows = [by_id[i] for i in dict.fromkeys(request.item_ids) if i in by_id]
        elif request.descending:
            rows = list(reversed(rows))
        page = _page(rows)
        if request.uses_rsm:
            page.count = len(rows)
            page.index = 0 if rows else None
        return page

    key_index = None
    if key_position is not None:
        key_index = high - key_position if request.descending else key_position - low
    start, end = index_range(request, count, key_index)
    rows = found(start, end, low, high) if callable(found) else found
    page = _page(rows)
    page.node_count, page.start = count, start
    if request.uses_rsm:
        page.count = count
        page.index = start if rows else None
    return page


def _page(rows: Sequence[Sequence[Any]]) -> ItemsPage:
    """A page of ``(item id, XML, RSM key)`` rows: ``first``/``last`` are the keys of its
    ends (None for a key the store has not learnt yet)."""
    return ItemsPage(
        items=[row[1] for row in rows],
        item_ids=[row[0] for row in rows],
        first=rows[0][2] if rows else None,
        last=rows[-1][2] if rows else None,
    )
