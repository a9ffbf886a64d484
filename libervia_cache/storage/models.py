"""The data model: pubsub nodes and their items (SQLAlchemy 2 typed mapping).

Item order
----------
XEP-0060 servers (ejabberd, Prosody, libervia-pubsub) list a node's items in
*modification* order: an item republished with the same id takes the newest position.
Each item keeps two integer positions, one per order the store serves:

* ``position``: modification order (moved to the newest end on republish);
* ``creation_position``: order of first publication (kept on republish).

Positions are *dense* (consecutive integers) whenever the node is clean, so that an
item's RSM ``index`` is ``position - min(position)`` and a node's ``count`` is
``max - min + 1``: two index lookups, whatever the depth of the page. Appending (events,
forward paging) takes ``max + 1``, prepending (sync paging backwards from the newest
page) takes ``min - 1``: both keep positions dense. Only removals (retract, republish
moving an item, purge) open gaps; the node then records the lowest position at which a
gap opened (``position_gap_from``, ``creation_gap_from``), and the next read closes the
gaps above it with one window-function ``UPDATE`` (see :mod:`.positions`).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Constraint naming convention, so that migrations name constraints deterministically.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class SyncState(enum.Enum):
    """Synchronisation state of a node (``None`` in the database: never synchronised)."""

    IN_PROGRESS = 1
    COMPLETED = 2
    ERROR = 3
    NO_SYNC = 4


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes, stored as naive UTC (SQLite has no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


#: JSON columns: ``JSON`` on SQLite, ``JSONB`` on PostgreSQL (indexable, compared by value)
JSONData = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONData}


class PubsubNode(Base):
    """A pubsub node the cache knows about (one per profile, service and node name).

    Node ids are never reused (SQLite ``AUTOINCREMENT``, PostgreSQL sequences): work
    still holding the id of a node that a reset or a delete removed finds it gone,
    rather than writing into another node that took its id.
    """

    __tablename__ = "pubsub_nodes"
    __table_args__ = (
        UniqueConstraint("profile", "service", "name"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    profile: Mapped[str] = mapped_column(String, nullable=False)
    service: Mapped[str] = mapped_column(String, nullable=False)
    name: Mapped[str] = mapped_column(String, nullable=False)
    analyser: Mapped[str | None] = mapped_column(String)
    type_: Mapped[str | None] = mapped_column("type", String)
    subtype: Mapped[str | None] = mapped_column(String)
    sync_state: Mapped[SyncState | None] = mapped_column(
        Enum(SyncState, name="sync_state", native_enum=False, length=16)
    )
    sync_state_updated: Mapped[datetime | None] = mapped_column()
    subscribed: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    extra: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    # Lowest position (resp. creation position) at which a removal opened a gap since
    # the last renumbering; NULL when positions are dense.
    position_gap_from: Mapped[int | None] = mapped_column(Integer)
    creation_gap_from: Mapped[int | None] = mapped_column(Integer)
    # The running sync's token: every write of a sync names it, and is refused once a
    # newer sync, a purge or a reset replaced it (NULL when no sync owns the node).
    sync_token: Mapped[str | None] = mapped_column(String)
    # Why the last sync failed (ERROR), in one line.
    sync_error: Mapped[str | None] = mapped_column(Text)
    # When the node was last completely synchronised.
    last_synced: Mapped[datetime | None] = mapped_column()
    # How many items the service said the node holds at the last sync (RSM count).
    server_count: Mapped[int | None] = mapped_column(Integer)


class PubsubItem(Base):
    """A cached item: its raw XML, its parsed form and its place in the node."""

    __tablename__ = "pubsub_items"
    __table_args__ = (
        UniqueConstraint("node_id", "item_id"),
        # every RSM page is a range scan of one of these two indexes
        Index("ix_pubsub_items_node_position", "node_id", "position"),
        Index("ix_pubsub_items_node_creation", "node_id", "creation_position"),
        # the server's own RSM key of an item, when it is not the item id (ejabberd)
        Index("ix_pubsub_items_node_rsm_key", "node_id", "rsm_key"),
        # search ordering and purge filters across nodes
        Index("ix_pubsub_items_created", "created"),
        Index("ix_pubsub_items_updated", "updated"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(
        ForeignKey("pubsub_nodes.id", ondelete="CASCADE"), nullable=False
    )
    item_id: Mapped[str] = mapped_column(String, nullable=False)
    data: Mapped[str] = mapped_column(Text, nullable=False)
    parsed: Mapped[dict[str, Any] | None] = mapped_column()
    # the item's text content (no tag or attribute names): what full-text search indexes
    text: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")
    created: Mapped[datetime] = mapped_column(nullable=False, default=utcnow)
    updated: Mapped[datetime] = mapped_column(nullable=False, default=utcnow)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    creation_position: Mapped[int] = mapped_column(Integer, nullable=False)
    # the item's RSM key on its server when the server's keys are not item ids (ejabberd:
    # creation timestamps); learnt from the server's answers, NULL until then
    rsm_key: Mapped[str | None] = mapped_column(String)


#: the tables, typed as Core tables for the query modules
nodes_table = cast(Table, PubsubNode.__table__)
items_table = cast(Table, PubsubItem.__table__)
