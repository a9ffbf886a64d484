"""initial schema: pubsub nodes and items with dense positions

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pubsub_nodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("profile", sa.String(), nullable=False),
        sa.Column("service", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("analyser", sa.String(), nullable=True),
        sa.Column("type", sa.String(), nullable=True),
        sa.Column("subtype", sa.String(), nullable=True),
        sa.Column(
            "sync_state",
            sa.Enum(
                "IN_PROGRESS",
                "COMPLETED",
                "ERROR",
                "NO_SYNC",
                name="sync_state",
                native_enum=False,
                length=16,
            ),
            nullable=True,
        ),
        sa.Column("sync_state_updated", sa.DateTime(), nullable=True),
        sa.Column("subscribed", sa.Boolean(), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.Column("position_gap_from", sa.Integer(), nullable=True),
        sa.Column("creation_gap_from", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pubsub_nodes")),
        sa.UniqueConstraint("profile", "service", "name", name=op.f("uq_pubsub_nodes_profile")),
    )
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


def downgrade() -> None:
    op.drop_table("pubsub_items")
    op.drop_table("pubsub_nodes")
