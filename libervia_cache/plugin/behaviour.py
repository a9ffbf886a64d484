"""What a node's server does with items requests, as measured, and answering like it.

The server is the truth: where servers differ from each other and from the XEPs, the
cache answers as the node's own server does. A sync measures the server while it pages
through the node (does it honour RSM, are its RSM keys item ids, does a last page larger
than the node get a negative ``index``) and with two small requests at its end (does a
``max_items`` answer carry RSM data, in which order do items asked by id come). What
cannot be measured without changing the node (where a republished item goes) starts from
what the measured keys imply, and is checked against the server at the node's first
republication (:mod:`.events`). The measures are kept with the node
(``extra["server"]``).

Measured on the servers of the test suite (see their ``quirks``):

==========================  =========  ============  ===============
                            ejabberd   Prosody 0.12  libervia-pubsub
==========================  =========  ============  ===============
RSM honoured                yes        no            yes
RSM keys                    opaque     -             item ids
last page index             end - max  -             clamped at 0
``max_items`` + RSM data    yes        no            no
``max_items`` with RSM      RSM wins   max_items     RSM wins
items by id                 node order as asked      as asked
republished item            kept       moved         moved
==========================  =========  ============  ===============
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServerBehaviour:
    """How a node's server answers items requests."""

    #: RSM honoured on items requests (else: ignored, every item answered)
    rsm: bool = True
    #: RSM keys are item ids (else: the server's own keys, learnt item by item)
    keys_are_ids: bool = True
    #: whether ``keys_are_ids`` was seen (an empty node's first page shows nothing)
    keys_known: bool = True
    #: a backward page reaching the oldest item gets ``index = end - max`` (negative),
    #: not 0
    unclamped_index: bool = False
    #: a ``max_items`` answer carries RSM data (first, last, index, count)
    max_items_rsm: bool = False
    #: items asked by id come as asked (else: in the node's order)
    ids_as_asked: bool = False
    #: a republished item moves to the newest end (else: keeps its first place)
    republish_moves: bool = True
    #: ``republish_moves`` was seen on the server (else: implied by the keys)
    republish_checked: bool = False

    @classmethod
    def of(cls, extra: dict[str, Any]) -> ServerBehaviour:
        """The behaviour recorded in a node's ``extra`` (defaults: the XEPs')."""
        recorded = extra.get("server")
        if not isinstance(recorded, dict):
            # a node synchronised before behaviours were measured: what it recorded
            return cls(rsm=extra.get("rsm") is not False)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: bool(v) for k, v in recorded.items() if k in known})

    def to_json(self) -> dict[str, bool]:
        return dataclasses.asdict(self)

    def replace(self, **changes: bool) -> ServerBehaviour:
        return dataclasses.replace(self, **changes)

    @property
    def key_column(self) -> str:
        """Where the store keeps this server's RSM keys."""
        return "item_id" if self.keys_are_ids else "rsm_key"


def measured_from_first_page(
    items: list[Any], rsm_data: dict[str, Any], page_size: int
) -> ServerBehaviour:
    """What the first page of a sync (``before=""``) shows of its server."""
    if not rsm_data:
        return ServerBehaviour(rsm=False, republish_moves=True)
    ids = [item.getAttribute("id") for item in items]
    keys_are_ids = not items or (
        rsm_data.get("first") == ids[0] and rsm_data.get("last") == ids[-1]
    )
    behaviour = ServerBehaviour(
        rsm=True,
        keys_are_ids=keys_are_ids,
        keys_known=bool(items),
        # until seen: a server with keys of its own pages by them, end - max (ejabberd)
        unclamped_index=not keys_are_ids,
        # a server whose RSM keys are its own creation keys orders items by them: a
        # republished item keeps its key, hence its place (checked at the first one)
        republish_moves=keys_are_ids,
    )
    return with_index_seen(behaviour, len(items), rsm_data, page_size)


def keys_seen(
    behaviour: ServerBehaviour, items: list[Any], rsm_data: dict[str, Any]
) -> ServerBehaviour:
    """``behaviour`` once an RSM answer with items showed what the server's keys are."""
    if behaviour.keys_known or not behaviour.rsm or not items or not rsm_data.get("first"):
        return behaviour
    keys_are_ids = rsm_data.get("first") == items[0].getAttribute("id")
    return behaviour.replace(
        keys_are_ids=keys_are_ids, keys_known=True, republish_moves=keys_are_ids
    )


def with_index_seen(
    behaviour: ServerBehaviour, returned: int, rsm_data: dict[str, Any], asked: int
) -> ServerBehaviour:
    """Update ``unclamped_index`` from a backward page that reached the oldest item."""
    index = rsm_data.get("index")
    if index is None or returned >= asked:
        return behaviour
    if index < 0:
        return behaviour.replace(unclamped_index=True)
    if index == 0 and returned < asked:
        return behaviour.replace(unclamped_index=False)
    return behaviour


def server_max_items(extra: dict[str, Any]) -> int | None:
    """The node's ``pubsub#max_items`` on its server (recorded in its ``extra`` from its
    configuration), when known and a number: a full node drops its oldest items."""
    value = extra.get("max_items")
    try:
        return int(value) if value is not None and int(value) > 0 else None
    except (TypeError, ValueError):
        return None  # "max", or not given
