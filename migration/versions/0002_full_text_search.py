"""full-text search: item text column, FTS5 table and triggers

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

The FTS5 table and its triggers are SQLite's; PostgreSQL gets the text column here and
its own index in 0006.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from html import unescape

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen: this revision's DDL and text extraction, as they were when it was written
# (libervia_cache.storage.fts evolves; a revision must keep doing what it did).
CREATE = (
    "CREATE VIRTUAL TABLE pubsub_items_fts USING fts5(text, content='pubsub_items', "
    "content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
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
DROP = (
    "DROP TRIGGER IF EXISTS pubsub_items_fts_au",
    "DROP TRIGGER IF EXISTS pubsub_items_fts_ad",
    "DROP TRIGGER IF EXISTS pubsub_items_fts_ai",
    "DROP TABLE IF EXISTS pubsub_items_fts",
)
BATCH = 1000

_TAG_RE = re.compile(r"<[^>]*>")
_SPACE_RE = re.compile(r"\s+")


def extract_text(raw_xml: str) -> str:
    """The text content of an XML fragment: text nodes only, whitespace-normalised."""
    try:
        text = " ".join(ET.fromstring(raw_xml).itertext())
    except ET.ParseError:
        text = unescape(_TAG_RE.sub(" ", raw_xml))
    return _SPACE_RE.sub(" ", text).strip()


def upgrade() -> None:
    op.add_column("pubsub_items", sa.Column("text", sa.Text(), nullable=False, server_default=""))
    connection = op.get_bind()
    items = sa.table("pubsub_items", sa.column("id"), sa.column("data"), sa.column("text"))
    last_id = -1
    while True:
        rows = connection.execute(
            sa.select(items.c.id, items.c.data)
            .where(items.c.id > last_id)
            .order_by(items.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        connection.execute(
            items.update().where(items.c.id == sa.bindparam("row_id")),
            [{"row_id": row_id, "text": extract_text(data)} for row_id, data in rows],
        )
        last_id = rows[-1][0]
    if connection.dialect.name != "sqlite":
        return
    for statement in CREATE:
        op.execute(statement)
    op.execute("INSERT INTO pubsub_items_fts(pubsub_items_fts) VALUES ('rebuild')")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in DROP:
            op.execute(statement)
    with op.batch_alter_table("pubsub_items", recreate="never") as batch:
        batch.drop_column("text")
