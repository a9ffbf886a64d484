"""Keeping item positions dense (see :mod:`.models`, "Item order").

Removals record the lowest position where a gap opened; :func:`renumber` closes
the gaps above it with one window-function ``UPDATE`` per order, touching only the rows
above the first gap (usually a handful: retracts and republishes mostly hit recent items).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import Connection, func, select, update

from .models import items_table, nodes_table
from .pages import ORDERS

items = items_table
nodes = nodes_table


def record_gaps(connection: Connection, gaps: Mapping[int, Mapping[str, int | None]]) -> None:
    """Record removals: ``{node_id: {gap column: lowest removed position}}``."""
    # the smaller of two values: SQLite's two-argument min(), PostgreSQL's least()
    smaller = func.least if connection.dialect.name == "postgresql" else func.min
    for node_id, node_gaps in gaps.items():
        values = {
            gap_name: smaller(func.coalesce(nodes.c[gap_name], removed), removed)
            for gap_name, removed in node_gaps.items()
            if removed is not None
        }
        if values:
            connection.execute(update(nodes).where(nodes.c.id == node_id).values(values))


def renumber(connection: Connection, node_ids: Iterable[int]) -> None:
    """Close the position gaps of ``node_ids`` (in the caller's transaction)."""
    for node_id in node_ids:
        gap_row = connection.execute(
            select(*(nodes.c[gap] for _, gap in ORDERS.values())).where(nodes.c.id == node_id)
        ).one_or_none()
        if gap_row is None:
            continue
        for (position_name, _), gap in zip(ORDERS.values(), gap_row, strict=True):
            if gap is None:
                continue
            position = items.c[position_name]
            ranked = (
                select(
                    items.c.id.label("row_id"),
                    (func.row_number().over(order_by=position) + (gap - 1)).label("dense"),
                )
                .where(items.c.node_id == node_id, position >= gap)
                .subquery()
            )
            connection.execute(
                update(items)
                .where(items.c.id == ranked.c.row_id, position != ranked.c.dense)
                .values({position_name: ranked.c.dense})
            )
        connection.execute(
            update(nodes)
            .where(nodes.c.id == node_id)
            .values({gap: None for _, gap in ORDERS.values()})
        )


#: a gap with at most this many rows above it is closed in the transaction that opened
#: it (a retract or republish of a recent item: reads then never wait for a write);
#: deeper gaps are left for the next read, which closes them once
EAGER_RENUMBER_ROWS = 2000


def close_shallow_gaps(connection: Connection, node_id: int) -> None:
    """Close the gaps of ``node_id`` now if only a few rows lie above them."""
    row = connection.execute(
        select(
            nodes.c.position_gap_from,
            nodes.c.creation_gap_from,
            select(func.max(items.c.position)).where(items.c.node_id == node_id).scalar_subquery(),
            select(func.max(items.c.creation_position))
            .where(items.c.node_id == node_id)
            .scalar_subquery(),
        ).where(nodes.c.id == node_id)
    ).one_or_none()
    if row is None:
        return
    position_gap, creation_gap, position_high, creation_high = row
    depths = [
        high - gap
        for gap, high in ((position_gap, position_high), (creation_gap, creation_high))
        if gap is not None and high is not None
    ]
    if depths and max(depths) <= EAGER_RENUMBER_ROWS:
        renumber(connection, [node_id])
