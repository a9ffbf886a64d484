"""node ids never reused; sync token, error, last sync and server count of each node

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

Node ids were SQLite rowids, reused after a reset: work still holding an old node's id
(a sync page, an event) wrote into whichever node took the id. ``pubsub_nodes`` becomes
``AUTOINCREMENT`` (SQLite can only add it by rebuilding the table), and gains the
columns a sync records: its token (which sync owns the node), why it failed, when it
last completed and how many items the service counted.

SQLite rebuild, in the migration's transaction: the FTS triggers are dropped, both
tables are copied aside, dropped (child first, so no cascade runs) and created again,
rows go back with their ids (the FTS index, keyed by item id, stays valid), the
triggers are created again. Other databases (PostgreSQL) only add the columns: their
sequences never reuse ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen: this revision's schema, as it was when it was written.
SYNC_STATE = sa.Enum(
    "IN_PROGRESS", "COMPLETED", "ERROR", "NO_SYNC", name="sync_state", native_enum=False, length=16
)
NODE_COLUMNS = (
    "id, profile, service, name, analyser, type, subtype, sync_state, sync_state_updated, "
    "subscribed, extra, position_gap_from, creation_gap_from"
)
ITEM_COLUMNS = (
    "id, node_id, item_id, data, parsed, created, updated, position, creation_position, text"
)


def new_node_columns() -> list[sa.Column[object]]:
    """The columns this revision adds to pubsub_nodes (new objects at each call)."""
    return [
        sa.Column("sync_token", sa.String(), nullable=True),
        sa.Column("sync_error", sa.Text(), nullable=True),
        sa.Column("last_synced", sa.DateTime(), nullable=True),
        sa.Column("server_count", sa.Integer(), nullable=True),
    ]


FTS_TRIGGERS = (
    "CREATE TRIGGER pubsub_items_fts_ai AFTER INSERT ON pubsub_items BEGIN "
    "INSERT INTO pubsub_items_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER pubsub_items_fts_ad AFTER DELETE ON pubsub_items BEGIN "
    "INSERT INTO pubsub_items_fts(pubsub_items_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER pubsub_items_fts_au AFTER UPDATE OF text ON pubsub_items BEGIN "
    "INSERT INTO pubsub_items_fts(pubsub_items_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); "
    "INSERT INTO pubsub_items_fts(rowid, text) VALUES (new.id, new.text); END",
)
DROP_FTS_TRIGGERS = (
    "DROP TRIGGER IF EXISTS pubsub_items_fts_au",
    "DROP TRIGGER IF EXISTS pubsub_items_fts_ad",
    "DROP TRIGGER IF EXISTS pubsub_items_fts_ai",
)


def _create_nodes(with_new_columns: bool) -> None:
    op.create_table(
        "pubsub_nodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("profile", sa.String(), nullable=False),
        sa.Column("service", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("analyser", sa.String(), nullable=True),
        sa.Column("type", sa.String(), nullable=True),
        sa.Column("subtype", sa.String(), nullable=True),
        sa.Column("sync_state", SYNC_STATE, nullable=True),
        sa.Column("sync_state_updated", sa.DateTime(), nullable=True),
        sa.Column("subscribed", sa.Boolean(), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.Column("position_gap_from", sa.Integer(), nullable=True),
        sa.Column("creation_gap_from", sa.Integer(), nullable=True),
        *(new_node_columns() if with_new_columns else []),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pubsub_nodes")),
        sa.UniqueConstraint("profile", "service", "name", name=op.f("uq_pubsub_nodes_profile")),
        sqlite_autoincrement=with_new_columns,
    )


def _create_items() -> None:
    op.create_table(
        "pubsub_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("parsed", sa.JSON(), nullable=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("updated", sa.DateTime(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("creation_position", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False, server_default=""),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["pubsub_nodes.id"],
            name=op.f("fk_pubsub_items_node_id_pubsub_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pubsub_items")),
        sa.UniqueConstraint("node_id", "item_id", name=op.f("uq_pubsub_items_node_id")),
    )
    op.create_index("ix_pubsub_items_node_position", "pubsub_items", ["node_id", "position"])
    op.create_index(
        "ix_pubsub_items_node_creation", "pubsub_items", ["node_id", "creation_position"]
    )
    op.create_index("ix_pubsub_items_created", "pubsub_items", ["created"])
    op.create_index("ix_pubsub_items_updated", "pubsub_items", ["updated"])


def _rebuild(with_new_columns: bool) -> None:
    """Rebuild both tables (SQLite), keeping every row and id."""
    for statement in DROP_FTS_TRIGGERS:
        op.execute(statement)
    op.execute("CREATE TABLE _pubsub_nodes_0003 AS SELECT * FROM pubsub_nodes")
    op.execute("CREATE TABLE _pubsub_items_0003 AS SELECT * FROM pubsub_items")
    # child first: dropping the parent with items left would cascade
    op.drop_table("pubsub_items")
    op.drop_table("pubsub_nodes")
    _create_nodes(with_new_columns)
    _create_items()
    op.execute(
        f"INSERT INTO pubsub_nodes ({NODE_COLUMNS}) SELECT {NODE_COLUMNS} FROM _pubsub_nodes_0003"
    )
    op.execute(
        f"INSERT INTO pubsub_items ({ITEM_COLUMNS}) SELECT {ITEM_COLUMNS} FROM _pubsub_items_0003"
    )
    op.execute("DROP TABLE _pubsub_items_0003")
    op.execute("DROP TABLE _pubsub_nodes_0003")
    for statement in FTS_TRIGGERS:
        op.execute(statement)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(with_new_columns=True)
        # a node some sync finished or began is owned by that sync: give it a token,
        # which readers check against (the value only has to be unique)
        op.execute(
            "UPDATE pubsub_nodes SET sync_token = lower(hex(randomblob(16))) "
            "WHERE sync_state IS NOT NULL"
        )
        return
    for column in new_node_columns():
        op.add_column("pubsub_nodes", column)
    op.execute(
        "UPDATE pubsub_nodes SET sync_token = md5(random()::text || id::text) "
        "WHERE sync_state IS NOT NULL"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(with_new_columns=False)
        op.execute("DELETE FROM sqlite_sequence WHERE name = 'pubsub_nodes'")
        return
    for column in reversed(new_node_columns()):
        op.drop_column("pubsub_nodes", column.name)
