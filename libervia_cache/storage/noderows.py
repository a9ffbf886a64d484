"""Node rows as the store reads them: the columns, the lookups compiled once for the
lean read paths (SQLite's ``sqlite3`` connection, PostgreSQL's asyncpg pool), and the
:class:`~.records.NodeInfo` made of a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, literal_column, select
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from .models import nodes_table
from .records import NodeInfo

nodes = nodes_table

NODE_COLUMNS = (
    nodes.c.id,
    nodes.c.profile,
    nodes.c.service,
    nodes.c.name,
    nodes.c.analyser,
    nodes.c.type,
    nodes.c.subtype,
    nodes.c.sync_state,
    nodes.c.sync_state_updated,
    nodes.c.subscribed,
    nodes.c.extra,
    nodes.c.sync_error,
    nodes.c.last_synced,
    nodes.c.server_count,
    nodes.c.sync_token,
)


def _lookup(dialect: Any, *extra: Any) -> str:
    """The lookup of a node by profile, service and name, compiled for ``dialect``."""
    statement = select(*NODE_COLUMNS, *extra).where(
        nodes.c.profile == bindparam("profile"),
        nodes.c.service == bindparam("service"),
        nodes.c.name == bindparam("name"),
    )
    return str(statement.compile(dialect=dialect))


#: the node lookup of every read, compiled once for the ``sqlite3`` read connection,
#: with the result processors of its columns (enum, UTC datetime, JSON)
NODE_SQL = _lookup(sqlite_dialect.dialect(paramstyle="named"))
NODE_PROCESSORS = [
    column.type._cached_result_processor(sqlite_dialect.dialect(), None) for column in NODE_COLUMNS
]

#: the same for PostgreSQL (``$1``.. parameters, run on a :class:`PostgresReader`),
#: with the row's version
PG_DIALECT = postgresql_dialect.asyncpg.dialect()
PG_NODE_SQL = _lookup(PG_DIALECT, literal_column("pubsub_nodes.xmin"))
#: the version of a node's row (see :mod:`.pagecache`): one primary-key lookup
PG_VERSION_SQL = "SELECT xmin FROM pubsub_nodes WHERE id = $1::integer"
PG_NODE_PROCESSORS = [
    column.type._cached_result_processor(PG_DIALECT, None) for column in NODE_COLUMNS
]


def node_info(row: Any, version: int | None = None) -> NodeInfo:
    (
        id_,
        profile,
        service,
        name,
        analyser,
        type_,
        subtype,
        state,
        updated,
        subscribed,
        extra,
        sync_error,
        last_synced,
        server_count,
        sync_token,
    ) = row
    return NodeInfo(
        id_,
        profile,
        service,
        name,
        analyser,
        type_,
        subtype,
        state,
        updated,
        bool(subscribed),
        dict(extra or {}),
        sync_error,
        last_synced,
        server_count,
        sync_token,
        version,
    )


def pg_node_info(row: Sequence[Any], version: int) -> NodeInfo:
    """The node of a row of the node columns read by a :class:`PostgresReader`."""
    return node_info(
        [p(v) if p else v for p, v in zip(PG_NODE_PROCESSORS, row, strict=True)], version
    )


def sqlite_node_info(row: Sequence[Any]) -> NodeInfo:
    """The node of a row of :data:`NODE_SQL` read on the ``sqlite3`` connection."""
    return node_info([p(v) if p else v for p, v in zip(NODE_PROCESSORS, row, strict=True)])
