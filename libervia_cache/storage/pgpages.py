"""Get-items pages on PostgreSQL: the whole request in one statement, one round trip.

On PostgreSQL every statement is a round trip (a wake-up of the server's process and of
ours: most of a cached read's time), and the statements of one request must see one
state of the node. So one hand-written statement answers a request: a header (the
node's sync token and gap, its bounds, the position of the RSM key), the index range
computed in SQL from the header as :func:`.pages.index_range` computes it, and the
page's items, aggregated in arrays (one row, whatever the page's size). Its answer goes
to :func:`.pages.answer`, as SQLite's statements' do.

The header also carries the version of the node's row (its ``xmin``, which every change
of the row changes). The read path uses it to skip the node's lookup: a cached read
asks for the page of the node as it last read it (its id, sync token and server
behaviour), and uses the page only if the row is still at that version, which makes it
the page that a lookup then a page read would give (see
:meth:`libervia_cache.storage.Store.get_items_unless_changed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .pages import KEY_COLUMNS, ORDERS, PageRequest, answer
from .records import ItemsPage

_HEADER = """
h AS MATERIALIZED (
    SELECT n.xmin AS version, n.sync_token AS tok, n.{gap} AS gap,
        (SELECT min(i.{pos}) FROM pubsub_items i WHERE i.node_id = $1::integer) AS lo,
        (SELECT max(i.{pos}) FROM pubsub_items i WHERE i.node_id = $1::integer) AS hi,
        (SELECT i.{pos} FROM pubsub_items i WHERE i.node_id = $1::integer
            AND i.{key} = $2::text LIMIT 1) AS kp
    FROM pubsub_nodes n WHERE n.id = $1::integer
)"""

# $3 from_end (before / max_items: the range ends at the key or the end), $4 limit,
# $5 index, $6 the reader's sync token; s and e are index_range's start and end
_RANGE = (
    _HEADER
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
)"""
)

# the page's items in arrays, in the page's order (none unless the node is clean and,
# when the reader names a token, still the reader's)
_ITEMS = """LATERAL (
    SELECT array_agg(i.item_id ORDER BY i.{pos} {direction}) AS ids,
        array_agg(i.data ORDER BY i.{pos} {direction}) AS data,
        array_agg(i.{key} ORDER BY i.{pos} {direction}) AS keys
    FROM pubsub_items i
    WHERE i.node_id = $1::integer AND {where}
) p ON {head}.gap IS NULL AND (${token}::text IS NULL OR {head}.tok = ${token}::text)"""

_COLUMNS = (
    "{head}.version, {head}.tok, {head}.gap, {head}.lo, {head}.hi, {head}.kp, p.ids, p.data, p.keys"
)


def _statement(ctes: str, head: str, items: str) -> str:
    return f"WITH {ctes}\nSELECT {_COLUMNS.format(head=head)}\nFROM {head} LEFT JOIN {items}"


@dataclass(frozen=True)
class _Statements:
    page_asc: str
    page_desc: str
    by_ids: str


def _statements(position_name: str, gap_name: str, key_name: str) -> _Statements:
    names = {"pos": position_name, "gap": gap_name, "key": key_name}

    def page(direction: str, key_index: str, low: str, high: str) -> str:
        items = _ITEMS.format(
            **names, direction=direction, where=f"i.{position_name} BETWEEN {low} AND {high}",
            head="r", token=6,
        )  # fmt: skip
        return _statement(_RANGE.format(**names, key_index=key_index), "r", items)

    by_ids = _ITEMS.format(
        **names, direction="ASC", where="i.item_id = ANY($3::text[])", head="h", token=4
    )
    return _Statements(
        page_asc=page("ASC", "h.kp - h.lo", "r.lo + r.s", "r.lo + r.e - 1"),
        page_desc=page("DESC", "h.hi - h.kp", "r.hi - r.e + 1", "r.hi - r.s"),
        by_ids=_statement(_HEADER.format(**names), "h", by_ids),
    )


#: (order, key column) -> the page statements
STATEMENTS: dict[tuple[str, str], _Statements] = {
    (name, key): _statements(*cols, key) for name, cols in ORDERS.items() for key in KEY_COLUMNS
}


def _parameters(node_id: int, request: PageRequest, synced_by: str | None) -> tuple[Any, ...]:
    if request.item_ids is not None:
        return (node_id, None, list(request.item_ids), synced_by)
    key = request.after if request.after is not None else request.before or None
    from_end = request.max_items is not None or request.before is not None
    limit = request.max_items if request.max_items is not None else request.rsm_max
    return (node_id, key, from_end, limit, request.index, synced_by)


def _pick(statements: _Statements, request: PageRequest) -> str:
    if request.item_ids is not None:
        return statements.by_ids
    return statements.page_desc if request.descending else statements.page_asc


def page_request(
    node_id: int, request: PageRequest, synced_by: str | None
) -> tuple[str, tuple[Any, ...]]:
    """The statement and parameters answering ``request``."""
    statements = STATEMENTS[(request.order_by, request.keys)]
    return _pick(statements, request), _parameters(node_id, request, synced_by)


def row_version(rows: Sequence[Sequence[Any]]) -> int | None:
    """The version (``xmin``) of the node's row a page statement read (None: no row)."""
    return rows[0][0] if rows else None


def read_page_at_once(
    rows: Sequence[Sequence[Any]], node_id: int, request: PageRequest, synced_by: str | None
) -> ItemsPage:
    """The page from the row of a page statement (none: no such node): the version of
    the node's row (:func:`row_version`), a header (token, gap, bounds, position of the
    RSM key) and the page's items in arrays (None when the node is dirty or no longer
    the reader's). Raises as :func:`.pages.read_page`."""
    row = rows[0] if rows else None
    header = None if row is None or row[0] is None else row[1:6]  # None: no such node
    found: list[tuple[Any, ...]] = []
    if row is not None and row[6] is not None:
        found = list(zip(row[6], row[7], row[8], strict=True))
    return answer(header, found, node_id, request, synced_by)
