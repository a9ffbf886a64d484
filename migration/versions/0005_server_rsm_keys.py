"""items keep their server's RSM key when it is not the item id

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

ejabberd's RSM keys are creation timestamps, not item ids: to hand out the server's own
keys (so that a client can walk a node across cache and server pages), the cache learns
each item's key from the server's answers and keeps it with the item.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("pubsub_items", sa.Column("rsm_key", sa.String(), nullable=True))
    op.create_index("ix_pubsub_items_node_rsm_key", "pubsub_items", ["node_id", "rsm_key"])


def downgrade() -> None:
    op.drop_index("ix_pubsub_items_node_rsm_key", "pubsub_items")
    with op.batch_alter_table("pubsub_items", recreate="never") as batch:
        batch.drop_column("rsm_key")
