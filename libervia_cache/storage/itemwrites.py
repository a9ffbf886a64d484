"""What the store's writes do inside their transaction: take the node's row, write a
batch of items at an end of the node, learn RSM keys, delete items and record the gaps
they leave, keep a node to its newest items.

Every function takes the caller's :class:`~sqlalchemy.Connection`, in a write
transaction that :func:`check_owner` (or, for several nodes, :func:`take_nodes`) began
by taking the node's row: on PostgreSQL that also gives the row a new version, which
tells readers that the node changed (:mod:`.pagecache`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    delete,
    func,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, TSVECTOR
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.types import TypeDecorator

from . import positions
from .fts import SEARCH_COLUMN
from .leases import NoLeases, ProfileLeases
from .models import items_table, nodes_table, utcnow
from .records import NodeGone, SyncSuperseded

items = items_table
nodes = nodes_table


class _TSVectorText(TypeDecorator[str]):
    """A ``tsvector`` written from its text (:func:`.fts.tsvector`)."""

    impl = TSVECTOR
    cache_ok = True

    def bind_expression(self, bindvalue: Any) -> Any:
        return cast(type_coerce(bindvalue, Text), TSVECTOR)


#: ``pubsub_items`` as PostgreSQL writes it: with the ``tsvector`` of the item's text
#: (a column the model leaves out: SQLite's index is its FTS5 table)
items_with_search = Table(
    "pubsub_items",
    MetaData(),
    *(Column(c.name, c.type, key=c.key, primary_key=c.primary_key) for c in items.c),
    Column(SEARCH_COLUMN, _TSVectorText()),
)


def is_postgresql(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def check_owner(
    connection: Connection,
    node_id: int,
    token: str | None,
    leases: NoLeases | ProfileLeases | None = None,
) -> None:
    """Raise :class:`NodeGone` if the node is gone, :class:`SyncSuperseded` if ``token``
    is given and no longer owns it, :class:`ProfileServedElsewhere` if its profile is
    not served here (in the caller's write transaction, whose lock on the node's row
    holds every other writer of the node back until it ends).

    On PostgreSQL the row is taken with an ``UPDATE`` (the same lock as ``SELECT … FOR
    UPDATE``), which gives it a new version: every write of a node's items goes through
    here, so a row still at the version a page was read at is a node whose items have
    not changed since (:mod:`.pagecache`).
    """
    if is_postgresql(connection):
        taken: Any = (
            update(nodes)
            .where(nodes.c.id == node_id)
            .values(sync_token=nodes.c.sync_token)
            .returning(nodes.c.sync_token, nodes.c.profile)
        )
    else:
        taken = select(nodes.c.sync_token, nodes.c.profile).where(nodes.c.id == node_id)
    row = connection.execute(taken).one_or_none()
    if row is None:
        raise NodeGone(f"node {node_id} no longer exists")
    if leases is not None:
        leases.check(row.profile)
    if token is not None and row.sync_token != token:
        raise SyncSuperseded(f"the synchronisation of node {node_id} was superseded")


def _json_list(values: Iterable[str]) -> str:
    return json.dumps(list(values))


def in_json(connection: Connection, column: Any, values: Iterable[str]) -> Any:
    """``column IN values`` with one bound parameter however many values (no SQL
    variable limit, one statement in the caches)."""
    if is_postgresql(connection):
        return column == any_(bindparam(None, list(values), type_=ARRAY(Text)))
    each = func.json_each(_json_list(values)).table_valued("value")
    return column.in_(select(each.c.value))


def insert_ignoring_conflicts(connection: Connection, table: Table, values: dict[str, Any]) -> None:
    """``INSERT`` unless a row with the same unique key exists."""
    insert = postgresql_insert if is_postgresql(connection) else sqlite_insert
    connection.execute(insert(table).values(values).on_conflict_do_nothing())


def delete_items_where(connection: Connection, condition: Any) -> int:
    """Delete the items matching ``condition`` and record the gaps they leave."""
    gaps = {
        row.node_id: {"position_gap_from": row.low, "creation_gap_from": row.creation_low}
        for row in connection.execute(
            select(
                items.c.node_id,
                func.min(items.c.position).label("low"),
                func.min(items.c.creation_position).label("creation_low"),
            )
            .where(condition)
            .group_by(items.c.node_id)
        )
    }
    if not gaps:
        return 0
    deleted = connection.execute(delete(items).where(condition)).rowcount
    positions.record_gaps(connection, gaps)
    return deleted


def keep_newest(connection: Connection, node_id: int, limit: int, truncated: bool = True) -> None:
    """Delete the oldest items of a node beyond its ``limit`` newest; mark it
    ``truncated`` (the cache holds fewer items than the server) if asked."""
    count = connection.execute(
        select(func.count()).select_from(items).where(items.c.node_id == node_id)
    ).scalar_one()
    if count <= limit:
        return
    oldest = (
        select(items.c.id)
        .where(items.c.node_id == node_id)
        .order_by(items.c.position)
        .limit(count - limit)
    )
    delete_items_where(connection, items.c.id.in_(oldest.scalar_subquery()))
    if truncated:
        extra = connection.execute(select(nodes.c.extra).where(nodes.c.id == node_id)).scalar_one()
        connection.execute(
            update(nodes)
            .where(nodes.c.id == node_id)
            .values(extra={**(extra or {}), "truncated": True})
        )
    positions.close_shallow_gaps(connection, node_id)


def _bounds(connection: Connection, node_id: int) -> tuple[Any, ...]:
    row = connection.execute(
        select(
            func.min(items.c.position),
            func.max(items.c.position),
            func.min(items.c.creation_position),
            func.max(items.c.creation_position),
        ).where(items.c.node_id == node_id)
    ).one()
    return tuple(row)


def learn_keys(connection: Connection, node_id: int, keys: Mapping[str, str]) -> None:
    connection.execute(
        update(items)
        .where(items.c.node_id == node_id, items.c.item_id == bindparam("wanted_id"))
        .values(rsm_key=bindparam("key")),
        [{"wanted_id": item_id, "key": key} for item_id, key in keys.items()],
    )


def write_items(
    connection: Connection,
    node_id: int,
    batch: Mapping[str, tuple[str, dict[str, Any] | None]],
    texts: Mapping[str, str],
    where: str,
    keep_place: bool = False,
    vectors: Mapping[str, str] | None = None,
) -> None:
    existing = {
        row.item_id: row
        for row in connection.execute(
            select(items.c.item_id, items.c.id, items.c.position).where(
                items.c.node_id == node_id,
                in_json(connection, items.c.item_id, batch),
            )
        )
    }
    low, high, creation_low, creation_high = _bounds(connection, node_id)
    count = len(batch)
    new_count = count - len(existing)
    # with keep_place, only new items take positions (in their order)
    moving = new_count if keep_place else count
    if where == "newest":
        first = 0 if high is None else high + 1
        creation_first = 0 if creation_high is None else creation_high + 1
    else:
        first = (0 if low is None else low) - moving
        creation_first = (0 if creation_low is None else creation_low) - new_count
    now = utcnow()
    updates: list[dict[str, Any]] = []
    inserts: list[dict[str, Any]] = []
    placed = 0
    for item_id, (raw_xml, parsed) in batch.items():
        known = existing.get(item_id)
        values: dict[str, Any] = {
            "data": raw_xml,
            "parsed": parsed,
            "text": texts[item_id],
            "updated": now,
        }
        if vectors is not None:
            values[SEARCH_COLUMN] = vectors[item_id]
        if known is None or not keep_place:
            values["position"] = first + placed
            placed += 1
        if known is not None:
            values["row_id"] = known.id
            updates.append(values)
        else:
            values.update(
                node_id=node_id,
                item_id=item_id,
                created=now,
                creation_position=creation_first + len(inserts),
            )
            inserts.append(values)
    if updates and not keep_place:
        # moving republished items opens gaps where they were
        positions.record_gaps(
            connection,
            {node_id: {"position_gap_from": min(row.position for row in existing.values())}},
        )
    table = items_with_search if vectors is not None else items
    if updates:
        connection.execute(update(table).where(table.c.id == bindparam("row_id")), updates)
    if inserts:
        connection.execute(table.insert(), inserts)
    if updates and not keep_place:
        positions.close_shallow_gaps(connection, node_id)


def take_nodes(connection: Connection, node_ids: Sequence[int]) -> None:
    """Take the rows of several nodes, in id order (as every writer of one node takes
    its row first, no two writers wait for each other's rows), and give each a new
    version on PostgreSQL (see :func:`check_owner`). SQLite has one writer at a time."""
    if not node_ids or not is_postgresql(connection):
        return
    connection.execute(
        select(nodes.c.id).where(nodes.c.id.in_(node_ids)).order_by(nodes.c.id).with_for_update()
    )
    connection.execute(
        update(nodes).where(nodes.c.id.in_(node_ids)).values(sync_token=nodes.c.sync_token)
    )
