"""PostgreSQL: JSONB, and full-text search with a tsvector column and GIN indexes

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

PostgreSQL's counterpart of SQLite's FTS5 objects (0002), and its JSON as ``JSONB``:
``pubsub_nodes.extra`` and ``pubsub_items.parsed`` become ``jsonb``; ``pubsub_items``
gains ``search``, the ``tsvector`` of the item's text with the tokens SQLite's
``unicode61 remove_diacritics 2`` gives (each character's fate asked of SQLite itself),
the first one weighted ``A``; a GIN index over it, and one over ``parsed``. The
``search`` of every item is computed here, in batches. The downgrade drops them and
turns the JSON columns back into ``json``.

Nothing changes on SQLite.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen: this revision's DDL and tokens, as they were when it was written
# (libervia_cache.storage.fts evolves; a revision must keep doing what it did).
UPGRADE = (
    "ALTER TABLE pubsub_nodes ALTER COLUMN extra TYPE jsonb USING extra::jsonb",
    "ALTER TABLE pubsub_items ALTER COLUMN parsed TYPE jsonb USING parsed::jsonb",
    "ALTER TABLE pubsub_items ADD COLUMN search tsvector",
)
INDEXES = (
    "CREATE INDEX ix_pubsub_items_search ON pubsub_items USING gin (search)",
    "CREATE INDEX ix_pubsub_items_parsed ON pubsub_items USING gin (parsed)",
)
DOWNGRADE = (
    "DROP INDEX IF EXISTS ix_pubsub_items_parsed",
    "DROP INDEX IF EXISTS ix_pubsub_items_search",
    "ALTER TABLE pubsub_items DROP COLUMN IF EXISTS search",
    "ALTER TABLE pubsub_items ALTER COLUMN parsed TYPE json USING parsed::json",
    "ALTER TABLE pubsub_nodes ALTER COLUMN extra TYPE json USING extra::json",
)
BATCH = 1000

MAX_LEXEME_BYTES = 2046
MAX_POSITION = 16383
MAX_TSVECTOR_BYTES = 1_000_000


class _Tokenizer:
    """SQLite's ``unicode61 remove_diacritics 2``, one character asked at a time."""

    def __init__(self) -> None:
        self.probe = sqlite3.connect(":memory:", isolation_level=None)
        self.probe.execute(
            "CREATE VIRTUAL TABLE t USING fts5(text, content='', "
            "tokenize='unicode61 remove_diacritics 2')"
        )
        self.probe.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
        self.fold: dict[int, str] = {}
        self._ask([chr(c) for c in range(1, 128)])

    def _ask(self, chars: list[str]) -> None:
        self.probe.execute("BEGIN")
        self.probe.executemany(
            "INSERT INTO t(rowid, text) VALUES (?, ?)", [(n, f"q{c}q") for n, c in enumerate(chars)]
        )
        terms: dict[int, list[str]] = {}
        for term, doc in self.probe.execute("SELECT term, doc FROM v"):
            terms.setdefault(doc, []).append(term)
        self.probe.execute("INSERT INTO t(t) VALUES ('delete-all')")
        self.probe.execute("COMMIT")
        for n, c in enumerate(chars):
            found = terms.get(n, [])
            self.fold[ord(c)] = " " if len(found) != 1 else found[0][1:-1]

    def tokens(self, text: str) -> list[str]:
        missing = {c for c in text if ord(c) not in self.fold}
        for c in [c for c in missing if c == "\0" or "\ud800" <= c <= "\udfff"]:
            self.fold[ord(c)] = " "
            missing.discard(c)
        if missing:
            self._ask(sorted(missing))
        return [t for t in text.translate(self.fold).split(" ") if t]

    def tsvector(self, text: str) -> str:
        positions: dict[str, list[str]] = {}
        size = 0
        for number, token in enumerate(self.tokens(text), start=1):
            raw = token.encode("utf-8")
            if len(raw) > MAX_LEXEME_BYTES:
                token = raw[:MAX_LEXEME_BYTES].decode("utf-8", "ignore")
            lexeme = "'" + token.replace("\\", "\\\\").replace("'", "''") + "'"
            found = positions.get(lexeme)
            if found is None:
                size += len(lexeme.encode("utf-8")) + 8
                if size > MAX_TSVECTOR_BYTES:
                    break
                positions[lexeme] = found = []
            if number == 1:
                found.append("1A")
            elif len(found) < 256:
                found.append(str(min(number, MAX_POSITION)))
                size += 2
        return " ".join(f"{lexeme}:{','.join(places)}" for lexeme, places in positions.items())


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "postgresql":
        return
    for statement in UPGRADE:
        op.execute(statement)
    tokenizer = _Tokenizer()
    items = sa.table("pubsub_items", sa.column("id"), sa.column("text"))
    last_id = -1
    while True:
        rows = connection.execute(
            sa.select(items.c.id, items.c.text)
            .where(items.c.id > last_id)
            .order_by(items.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        connection.execute(
            sa.text(
                "UPDATE pubsub_items SET search = CAST(:vector AS tsvector) WHERE id = :row_id"
            ),
            [{"row_id": row_id, "vector": tokenizer.tsvector(text)} for row_id, text in rows],
        )
        last_id = rows[-1][0]
    for statement in INDEXES:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in DOWNGRADE:
        op.execute(statement)
