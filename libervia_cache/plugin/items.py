"""Items as the cache stores them: normalised, serialised and parsed by their analyser.

Items reach the cache from items requests (``pubsub`` namespace) and from event
notifications (``pubsub#event`` namespace); the cache stores and serves them as the
service answers an items request. An item the cache cannot store faithfully (no id, or
nested too deeply to be serialised) is reported, never stored in part.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from tx_xmpp import pubsub

from libervia_cache.errors import describe
from libervia_cache.hostapi import Client, as_deferred
from libervia_cache.plugin.analysis import Analyser

log = logging.getLogger(__name__)

#: what every cached item is: the store keeps them as an items request answers them
ITEM_QNAME = (pubsub.NS_PUBSUB, "item")

#: Deepest payload (levels of elements inside ``<item/>``) the cache stores. Serialising
#: a domish element recurses once per level: far deeper items would exhaust the
#: interpreter's recursion limit (1000 frames, some used by the caller). Real payloads
#: are a few levels deep.
MAX_ITEM_DEPTH = 500

#: ``(item_id, raw_xml, parsed)``: an item ready for the store
ParsedItem = tuple[str, str, dict[str, Any] | None]


class UnstorableItem(ValueError):
    """An item the cache cannot store faithfully; the message names it and why."""


def normalise_item(item: domish.Element) -> domish.Element:
    """An ``<item/>`` in the pubsub namespace, as an items request answers it."""
    if item.uri == pubsub.NS_PUBSUB:
        return item
    normalised = domish.Element(ITEM_QNAME)
    for name, value in item.attributes.items():
        normalised[name] = value
    for child in item.children:
        normalised.addChild(child)
    return normalised


def depth(element: domish.Element) -> int:
    """How many levels of elements ``element`` holds (itself included), counted without
    recursion (the point is to refuse what recursion cannot handle)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(element, 1)]
    while stack:
        current, level = stack.pop()
        deepest = max(deepest, level)
        for child in getattr(current, "children", ()):
            if isinstance(child, domish.Element):
                stack.append((child, level + 1))
    return deepest


def serialise(item: domish.Element) -> str:
    """The XML of an item; :class:`UnstorableItem` when it is too deep to serialise."""
    if depth(item) - 1 > MAX_ITEM_DEPTH:
        raise UnstorableItem(
            f"item {item.getAttribute('id')!r} is nested more than {MAX_ITEM_DEPTH} levels deep"
        )
    try:
        return item.toXml()
    except RecursionError:
        raise UnstorableItem(
            f"item {item.getAttribute('id')!r} is nested too deeply to be serialised"
        ) from None


async def parse_items(
    analyser: Analyser | None,
    client: Client,
    service: JID,
    node: str,
    items: list[domish.Element],
) -> list[ParsedItem]:
    """``(item_id, raw_xml, parsed)`` for each item that has an id, in order.

    A parser that raises or returns something that is not a JSON mapping leaves the item
    stored raw (parsed ``None``); the error is logged with node and item named. An item
    that cannot be serialised raises :class:`UnstorableItem`: storing the others alone
    would make the node differ from the server.
    """
    parsed_items: list[ParsedItem] = []
    for item in items:
        item_id = item.getAttribute("id")
        if not item_id:
            log.warning("item without id in node %s on %s: not cached", node, service.full())
            continue
        item = normalise_item(item)
        raw_xml = serialise(item)
        parsed = await _parse(analyser, client, service, node, item, item_id)
        parsed_items.append((item_id, raw_xml, parsed))
    return parsed_items


async def _parse(
    analyser: Analyser | None,
    client: Client,
    service: JID,
    node: str,
    item: domish.Element,
    item_id: str,
) -> dict[str, Any] | None:
    if analyser is None or analyser.parser is None:
        return None
    try:
        result = await as_deferred(analyser.parser, client, item, service, node)
    except Exception as error:
        log.warning(
            "parser of analyser %r failed on item %r of node %s on %s: %s",
            analyser.name,
            item_id,
            node,
            service.full(),
            describe(error),
        )
        return None
    if result is None:
        return None
    if not isinstance(result, dict):
        log.warning(
            "parser of analyser %r returned %s for item %r of node %s: stored raw",
            analyser.name,
            type(result).__name__,
            item_id,
            node,
        )
        return None
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        log.warning(
            "parser of analyser %r returned data that is not JSON for item %r of node %s: "
            "stored raw",
            analyser.name,
            item_id,
            node,
        )
        return None
    return result
