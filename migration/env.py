"""Alembic environment of libervia-cache.

Run in-process by :mod:`libervia_cache.storage.migrate`, which passes the connection
to use in ``config.attributes["connection"]``. The full-text objects (SQLite's FTS5
table, its shadow tables and triggers; PostgreSQL's ``tsvector`` column and GIN
indexes) are created by the revisions but not modelled by SQLAlchemy: they are left out
of autogenerate comparison (``include_object``).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from libervia_cache.storage.fts import is_fts_object
from libervia_cache.storage.models import Base

config = context.config
target_metadata = Base.metadata


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Leave the full-text objects out of comparisons: the FTS5 virtual table and its
    shadow tables (SQLite), the ``tsvector`` column and the GIN indexes (PostgreSQL)."""
    return not (type_ in ("table", "column", "index") and is_fts_object(name))


def run_migrations(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=include_object,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    # plain `alembic -x url=sqlite:///path ...` from a checkout (developers)
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("give the database: alembic -x url=sqlite:///path/to/cache.db ...")
    engine = create_engine(url)
    with engine.begin() as conn:
        run_migrations(conn)
