"""What the store hands out: plain snapshots, never live ORM objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from .models import SyncState


class UnknownRSMKey(LookupError):
    """An RSM ``after``/``before`` item id that the node does not hold.

    The plugin turns it into a cache miss: the key may be a server's own key (ejabberd
    uses timestamps) from a page that came from the network.
    """


class NodeGone(LookupError):
    """The node a write was meant for no longer exists (reset, deleted, or forgotten):
    nothing was written. Node ids are never reused, so a write can never land in
    another node."""


class SyncSuperseded(NodeGone):
    """The sync a write belongs to no longer owns its node (a newer sync, a purge or a
    reset replaced it): nothing was written."""


class ProfileServedElsewhere(SQLAlchemyError):
    """The profile is served by another daemon on the shared database (see
    :mod:`.leases`): this store neither reads nor writes its nodes.

    A database error to its callers (the cache is unavailable for that profile), with
    a message saying why."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "profile served by another daemon"


class NodeChanged(LookupError):
    """The node is no longer what the reader found: another sync, a purge or a reset
    took it between the lookup and the page read (the read is a miss)."""


@dataclass(frozen=True)
class NodeInfo:
    """A snapshot of a ``pubsub_nodes`` row."""

    id: int
    profile: str
    service: str
    name: str
    analyser: str | None
    type: str | None
    subtype: str | None
    sync_state: SyncState | None
    sync_state_updated: datetime | None
    subscribed: bool
    extra: dict[str, Any]
    sync_error: str | None = None
    last_synced: datetime | None = None
    server_count: int | None = None
    #: the token of the sync that owns the node (opaque; changes with each sync)
    sync_token: str | None = None
    #: the row's version where the database has one (PostgreSQL: its ``xmin``, which
    #: every change of the row changes): a row read with the same id and version is
    #: this very row (not compared: two reads of an unchanged row are equal anyway)
    version: int | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str, str, str]:
        """``(profile, service, name)``: what identifies the node, whatever its id."""
        return (self.profile, self.service, self.name)

    @property
    def truncated(self) -> bool:
        """Whether the node holds only its newest items (the cache limit was reached)."""
        return bool(self.extra.get("truncated"))


@dataclass
class ItemsPage:
    """An answer to a get-items request, in the shape of XEP-0060 + XEP-0059.

    ``items`` are the raw XML of the ``<item/>`` elements, in the answer's order;
    ``first``/``last`` are the RSM keys of the page's ends (item ids, or the server's own
    keys when asked for them: None where the store has not learnt one); ``index`` (of the
    first item) and ``count`` (of the whole node) are filled when RSM was used. Whether
    the answer is ``complete`` is the host's rule
    (:func:`libervia_cache.hostapi.answer_metadata`), the same for cache and network.
    """

    items: list[str] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)
    first: str | None = None
    last: str | None = None
    index: int | None = None
    count: int | None = None
    #: items the node holds, and the index of the page's first item in the node's order
    #: (filled for every request but items by id, RSM or not)
    node_count: int | None = None
    start: int | None = None
