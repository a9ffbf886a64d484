"""What the store hands out: plain snapshots, never live ORM objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .models import SyncState


class UnknownRSMKey(LookupError):
    """An RSM ``after``/``before`` item id that the node does not hold.

    The plugin turns it into a cache miss: the key may be a server's own key (ejabberd
    uses timestamps) from a page that came from the network.
    """


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


@dataclass
class ItemsPage:
    """An answer to a get-items request, in the shape of XEP-0060 + XEP-0059.

    ``items`` are the raw XML of the ``<item/>`` elements, in the answer's order;
    ``first``/``last`` are the item ids of the page's ends (RSM keys); ``index`` (of the
    first item) and ``count`` (of the whole node) are filled when RSM was used;
    ``complete`` is True when the page reaches the end of the node in the requested
    direction (forward for first page/``after``/``index``, backward for ``before``,
    last page and ``max_items``).
    """

    items: list[str] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)
    first: str | None = None
    last: str | None = None
    index: int | None = None
    count: int | None = None
    complete: bool = True
