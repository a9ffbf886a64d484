"""Background synchronisation of one node into the store.

A sync subscribes to the node (so that events keep it fresh), then pages through every
item from the newest backwards with RSM (``before=""``, then ``before=<first>``), so
that the per-node limit keeps the newest items. A service that ignores RSM (Prosody
0.12) answers every item at once, which is the whole node. Each page is parsed with the
analyser's parser and stored in one transaction; the last page is stored in the same
transaction that marks the node COMPLETED, so a partial node is never served as complete.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from tx_xmpp import pubsub, rsm

from libervia_cache.aio import SerialQueue, as_deferred
from libervia_cache.analysis import Analyser
from libervia_cache.hostapi import XEP0060, Client
from libervia_cache.storage import NodeInfo, Store, SyncState

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100


class SyncError(Exception):
    """A synchronisation could not complete; the message says why, naming the node."""


@dataclass
class SyncProgress:
    """Where a running sync stands (for status and progress bars)."""

    stored: int = 0
    total: int | None = None
    pages: int = 0


def normalise_item(item: domish.Element) -> domish.Element:
    """An ``<item/>`` in the pubsub namespace, as an items request answers it.

    Items from event notifications are in the ``pubsub#event`` namespace; the cache
    stores and serves them as the service would answer an items request.
    """
    if item.uri == pubsub.NS_PUBSUB:
        return item
    normalised = domish.Element((pubsub.NS_PUBSUB, "item"))
    for name, value in item.attributes.items():
        normalised[name] = value
    for child in item.children:
        normalised.addChild(child)
    return normalised


async def parse_items(
    analyser: Analyser | None,
    client: Client,
    service: JID,
    node: str,
    items: list[domish.Element],
) -> list[tuple[str, str, dict[str, Any] | None]]:
    """``(item_id, raw_xml, parsed)`` for each item that has an id.

    A parser that raises or returns something that is not a mapping leaves the item
    stored raw (parsed ``None``); the error is logged with node and item named.
    """
    parsed_items: list[tuple[str, str, dict[str, Any] | None]] = []
    for item in items:
        item_id = item.getAttribute("id")
        if not item_id:
            log.warning("item without id in node %s on %s: not cached", node, service.full())
            continue
        item = normalise_item(item)
        parsed: dict[str, Any] | None = None
        if analyser is not None and analyser.parser is not None:
            try:
                result = await as_deferred(analyser.parser, client, item, service, node)
            except Exception as error:
                log.warning(
                    "parser of analyser %r failed on item %r of node %s on %s: %s",
                    analyser.name,
                    item_id,
                    node,
                    service.full(),
                    error,
                )
            else:
                if isinstance(result, dict) and not _jsonable(result):
                    log.warning(
                        "parser of analyser %r returned data that is not JSON for item %r "
                        "of node %s: stored raw",
                        analyser.name,
                        item_id,
                        node,
                    )
                elif isinstance(result, dict):
                    parsed = result
                elif result is not None:
                    log.warning(
                        "parser of analyser %r returned %s for item %r of node %s: stored raw",
                        analyser.name,
                        type(result).__name__,
                        item_id,
                        node,
                    )
        parsed_items.append((item_id, item.toXml(), parsed))
    return parsed_items


def _jsonable(data: dict[str, Any]) -> bool:
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


async def synchronise_node(
    store: Store,
    pubsub_plugin: XEP0060,
    client: Client,
    node_info: NodeInfo,
    analyser: Analyser | None,
    *,
    limit: int,
    page_size: int = DEFAULT_PAGE_SIZE,
    progress: SyncProgress | None = None,
    updated_by_events: set[str] | None = None,
    is_cancelled: Callable[[], bool] = lambda: False,
    events_queue: SerialQueue | None = None,
) -> SyncProgress:
    """Synchronise ``node_info`` completely; raise :class:`SyncError` when it cannot.

    ``updated_by_events`` holds the ids of items that events published or retracted
    while this sync runs: the event is newer than any page, so a page never overwrites
    (or resurrects) them. The caller owns the single-flight rule and the state changes
    around failures; ``progress`` is updated in place as pages are stored.
    ``is_cancelled`` is checked before every write, so a sync cancelled while a request
    was in flight writes nothing more. ``events_queue`` is the queue in which events
    are applied: the sync empties the node as a job of it, so that an event is either
    applied before (and then found in the pages) or after (and then kept, and skipped
    in pages).
    """
    service = JID(node_info.service)
    node = node_info.name
    progress = progress if progress is not None else SyncProgress()
    updated_by_events = updated_by_events if updated_by_events is not None else set()
    extra = {k: v for k, v in node_info.extra.items() if k != "truncated"}

    async def empty_node() -> None:
        if is_cancelled():
            raise defer.CancelledError()
        await store.update_node(node_info.id, sync_state=SyncState.IN_PROGRESS, extra=extra)
        await store.purge_node_items(node_info.id)
        updated_by_events.clear()

    queue = events_queue if events_queue is not None else SerialQueue()
    await queue.run(empty_node)

    try:
        await pubsub_plugin.subscribe(client, service, node)
    except Exception as error:
        log.warning(
            "could not subscribe to node %s on %s (%s): this node will go stale",
            node,
            service.full(),
            error,
        )
        await store.update_node(node_info.id, subscribed=False)
    else:
        await store.update_node(node_info.id, subscribed=True)

    # ids of items that events stored during the sync and that a page held too (the
    # count check needs them); the duplicate check asks the store, so memory does not
    # grow with the node
    paged_event_ids: set[str] = set()
    request = rsm.RSMRequest(max_=page_size, before="")
    # item ids of the previous page, newest last: when the service keys pages by item id
    # and the key of the next page was retracted meanwhile (libervia-pubsub then answers
    # an empty page), the next id of that page is a key for the same older page
    previous_ids: list[str] = []
    previous_index: int | None = None
    spare_keys: list[str] = []
    while True:
        items, metadata = await pubsub_plugin.get_items_from_network(
            client, service, node, rsm_request=request
        )
        progress.pages += 1
        rsm_data = metadata.get("rsm") or {}
        ids = [item.getAttribute("id") for item in items]
        present = [i for i in ids if i]
        held = await store.held_item_ids(node_info.id, present)
        repeated = (held - updated_by_events) | {i for i in present if present.count(i) > 1}
        if repeated:
            raise SyncError(
                f"node {node} on {service.full()}: the service returned item(s) "
                f"{', '.join(sorted(repeated)[:3])} twice while paging; synchronisation stopped"
            )
        count = rsm_data.get("count")
        index = rsm_data.get("index")
        first = rsm_data.get("first")
        if count is not None:
            progress.total = min(int(count), limit)
        older_expected = previous_index is not None and previous_index > 0
        if not items and older_expected and spare_keys:
            request = rsm.RSMRequest(max_=page_size, before=spare_keys.pop(0))
            continue
        if not rsm_data:
            # no RSM: the service ignored it (Prosody 0.12) and sent the whole node
            oldest_page = True
        elif index is not None:
            # ejabberd answers a negative index (count - max) for a last page larger
            # than the node: it starts at the oldest item all the same
            oldest_page = index <= 0 or not items
        else:
            oldest_page = len(items) < page_size
        if items and not oldest_page and first is None:
            raise SyncError(
                f"node {node} on {service.full()}: the service sent a page without RSM "
                "keys and more items are due; synchronisation stopped"
            )
        paged_event_ids.update(updated_by_events.intersection(present))
        room = limit - progress.stored
        truncated = len(items) > room or (len(items) == room and not oldest_page)
        if oldest_page and not truncated:
            _check_count(
                node,
                service,
                count,
                progress.stored + len(items),
                paged_event_ids,
                updated_by_events,
            )
        if truncated and not is_cancelled():
            items = items[len(items) - room :] if room else []
            log.warning(
                "node %s on %s holds more than the cache limit of %d items: only the newest "
                "%d are cached, and only requests they answer are served from the cache",
                node,
                service.full(),
                limit,
                limit,
            )
            await store.update_node(node_info.id, extra={**extra, "truncated": True})
        # the page's slots count toward the limit even for items that events already
        # stored (or retracted): the limit caps what the node holds
        page_slots = len(items)
        items = [i for i in items if i.getAttribute("id") not in updated_by_events]
        parsed = await parse_items(analyser, client, service, node, items)
        last_page = oldest_page or truncated
        if is_cancelled():
            raise defer.CancelledError()
        await store.cache_items(node_info.id, parsed, where="oldest", complete=last_page)
        progress.stored += page_slots
        if last_page:
            return progress
        previous_ids, previous_index = present, index
        spare_keys = (
            previous_ids[1:] if first == (previous_ids[0] if previous_ids else None) else []
        )
        request = rsm.RSMRequest(max_=page_size, before=first)


def _check_count(
    node: str,
    service: JID,
    count: int | None,
    paged: int,
    paged_event_ids: set[str],
    updated_by_events: set[str],
) -> None:
    """Refuse to complete a node when the service said it holds more than was paged.

    Items published by events during the sync are counted by the service but may be
    in no page; items retracted meanwhile only lower the count.
    """
    if count is None:
        return
    known = paged + len(updated_by_events - paged_event_ids)
    if known < count:
        raise SyncError(
            f"node {node} on {service.full()}: paging ended after {paged} items but the "
            f"service counts {count}; synchronisation stopped"
        )
