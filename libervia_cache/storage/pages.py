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

On PostgreSQL every statement is a round trip, and statements of one request must see
one state of the node: :func:`read_page_at_once` asks for the header and the page in one
statement (:data:`PG_STATEMENTS`, hand-written: the index range is computed in SQL
from the header, as :func:`index_range` computes it), run as a prepared statement on a
plain asyncpg connection (see :mod:`.pgread`).
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


# --- PostgreSQL: the whole request in one statement ---------------------------------------

_PG_HEADER = """
WITH h AS MATERIALIZED (
    SELECT n.sync_token AS tok, n.{gap} AS gap,
        (SELECT min(i.{pos}) FROM pubsub_items i WHERE i.node_id = $1::integer) AS lo,
        (SELECT max(i.{pos}) FROM pubsub_items i WHERE i.node_id = $1::integer) AS hi,
        (SELECT i.{pos} FROM pubsub_items i WHERE i.node_id = $1::integer
            AND i.{key} = $2::text LIMIT 1) AS kp
    FROM pubsub_nodes n WHERE n.id = $1::integer
)"""

# $3 from_end (before / max_items: the range ends at the key or the end), $4 limit,
# $5 index, $6 the reader's sync token; s and e are index_range's start and end
_PG_RANGE = (
    _PG_HEADER
    + """,
c AS (
    SELECT h.*, CASE WHEN h.lo IS NULL THEN 0 ELSE h.hi - h.lo + 1 END AS cnt,
        {key_index} AS ki
    FROM h
),
d AS (
    SELECT c.*,
        CASE WHEN $2::text IS NULL THEN c.cnt ELSE c.ki END AS e1,
        CASE WHEN $2::text IS NULL THEN least(coalesce($5::bigint, 0), c.cnt)
            ELSE c.ki + 1 END AS s2
    FROM c
),
r AS (
    SELECT d.*,
        CASE WHEN $3::boolean
            THEN CASE WHEN $4::bigint IS NULL THEN 0 ELSE greatest(0, d.e1 - $4::bigint) END
            ELSE d.s2 END AS s,
        CASE WHEN $3::boolean THEN d.e1
            ELSE CASE WHEN $4::bigint IS NULL THEN d.cnt
                ELSE least(d.cnt, d.s2 + $4::bigint) END END AS e
    FROM d
)
SELECT r.tok, r.gap, r.lo, r.hi, r.kp, p.item_id, p.data, p.k
FROM r LEFT JOIN LATERAL (
    SELECT i.item_id, i.data, i.{key} AS k, i.{pos} AS ord FROM pubsub_items i
    WHERE i.node_id = $1::integer AND i.{pos} BETWEEN {low} AND {high}
) p ON r.gap IS NULL AND ($6::text IS NULL OR r.tok = $6::text)
ORDER BY p.ord {direction}"""
)

_PG_BY_IDS = (
    _PG_HEADER
    + """
SELECT h.tok, h.gap, h.lo, h.hi, h.kp, p.item_id, p.data, p.k
FROM h LEFT JOIN LATERAL (
    SELECT i.item_id, i.data, i.{key} AS k, i.{pos} AS ord FROM pubsub_items i
    WHERE i.node_id = $1::integer AND i.item_id = ANY($3::text[])
) p ON h.gap IS NULL AND ($4::text IS NULL OR h.tok = $4::text)
ORDER BY p.ord"""
)


@dataclass(frozen=True)
class _PGStatements:
    page_asc: str
    page_desc: str
    by_ids: str


def _pg_statements(position_name: str, gap_name: str, key_name: str) -> _PGStatements:
    names = {"pos": position_name, "gap": gap_name, "key": key_name}
    page = _PG_RANGE
    asc = page.format(
        **names,
        key_index="h.kp - h.lo",
        low="r.lo + r.s",
        high="r.lo + r.e - 1",
        direction="ASC",
    )
    desc = page.format(
        **names,
        key_index="h.hi - h.kp",
        low="r.hi - r.e + 1",
        high="r.hi - r.s",
        direction="DESC",
    )
    return _PGStatements(asc, desc, _PG_BY_IDS.format(**names))


#: (order, key column) -> PostgreSQL statements
PG_STATEMENTS: dict[tuple[str, str], _PGStatements] = {
    (name, key): _pg_statements(*cols, key) for name, cols in ORDERS.items() for key in KEY_COLUMNS
}

#: run one PostgreSQL statement with positional parameters, return its rows
FetchPositional = Callable[..., Sequence[Sequence[Any]]]


def pg_request(
    node_id: int, request: PageRequest, synced_by: str | None
) -> tuple[str, tuple[Any, ...]]:
    """The statement and parameters answering ``request`` at once (PostgreSQL)."""
    statements = PG_STATEMENTS[(request.order_by, request.keys)]
    if request.item_ids is not None:
        return statements.by_ids, (node_id, None, list(request.item_ids), synced_by)
    key = request.after if request.after is not None else request.before or None
    from_end = request.max_items is not None or request.before is not None
    limit = request.max_items if request.max_items is not None else request.rsm_max
    sql = statements.page_desc if request.descending else statements.page_asc
    return sql, (node_id, key, from_end, limit, request.index, synced_by)


def read_page_at_once(
    rows: Sequence[Sequence[Any]], node_id: int, request: PageRequest, synced_by: str | None
) -> ItemsPage:
    """The page from the rows of :func:`pg_request`'s statement: a header (token, gap,
    bounds, position of the RSM key) on every row, and the page's items (none when the
    node is unknown, dirty, or no longer the reader's). Raises as :func:`read_page`."""
    header = rows[0][:5] if rows else None
    found = [row[5:] for row in rows if row[5] is not None]
    return _answer(header, found, node_id, request, synced_by)


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

    return _answer(header, page_rows, node_id, request, synced_by)


def _answer(
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
