"""Bad input on a real server: odd items and a misbehaving parser never break a sync.

Items with server-assigned ids, empty payloads, payloads in unknown namespaces, 1 MiB
payloads, deeply nested XML, unusual characters, and a parser that raises or returns
what is not JSON: each item is cached (raw when its parser fails), the failure is logged
with node and item named, the sync completes, and the cached answer equals the server's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from tx_xmpp import pubsub

from libervia_cache.backend.daemon import Daemon
from libervia_cache.plugin import PubsubCache
from tests.harness.daemon import cache_of
from tests.integration.conftest import synchronised
from tests.servers.base import XMPPServer
from tests.servers.publisher import Publisher

PREFIX = "urn:example:bad-input"
NS = "urn:example:payload"
DEPTH = 200
HUGE = 1024 * 1024
PUBLISH_TIMEOUT = 30  # only a server that never answers waits this long
ODD_TEXT = "zero\u200bwidth \u202eRTL\u202c emoji 🦆 replacement \ufffd ]]> &amp; <tag/> \"'\t"

#: item id -> payload (None: no payload)
PAYLOADS: dict[str, str | None] = {
    "plain": f"<entry xmlns='{NS}'>plain</entry>",
    "unknown-namespace": "<thing xmlns='urn:example:nobody-knows-me'>?</thing>",
    "huge": f"<entry xmlns='{NS}'>{'x' * HUGE}</entry>",
    "deep": f"<entry xmlns='{NS}'>{'<n>' * DEPTH}bottom{'</n>' * DEPTH}</entry>",
    "odd-characters": "odd",  # built by odd_payload()
    "parser-raises": f"<entry xmlns='{NS}'>raises</entry>",
    "parser-not-a-dict": f"<entry xmlns='{NS}'>list</entry>",
    "empty": None,
}


def odd_payload() -> domish.Element:
    """Unusual characters in text and attribute (domish escapes what XML needs)."""
    entry = domish.Element((NS, "entry"))
    entry["title"] = ODD_TEXT
    entry.addContent(ODD_TEXT)
    return entry


#: what each server refuses to publish, and how (the rest it accepts)
REFUSED_BY: dict[str, dict[str, str]] = {
    # max_payload_size defaults to 250000 bytes; an item must carry a payload
    "ejabberd": {"huge": "not-acceptable", "empty": "bad-request"},
    "prosody": {"empty": "bad-request"},
    # after a 1 MiB item, or a deeply nested one, the component answers no more
    # publish or read of the node (measured): not published there, so that the rest
    # can be checked
    "libervia-pubsub": {"huge": "not published", "deep": "not published"},
}

#: items whose parser fails: stored raw (parsed None), logged
UNPARSED = ("parser-raises", "parser-not-a-dict")


def parser(client: Any, item: domish.Element, service: JID, node: str) -> Any:
    item_id = item.getAttribute("id")
    if item_id == "parser-raises":
        raise RuntimeError("this parser does not like this item")
    if item_id == "parser-not-a-dict":
        return ["a", "list"]
    return {"id": item_id, "text": str(item)[:20]}


@pytest.fixture
def cache(daemon: Daemon) -> PubsubCache:
    """The daemon's cache, with an analyser for the test's nodes using :func:`parser`."""
    cache = cache_of(daemon)
    cache.register_analyser(
        {"name": "bad-input", "type": "test", "node": PREFIX, "to_sync": True, "parser": parser}
    )
    return cache


async def publish_what_the_server_accepts(
    publisher: Publisher, service: JID, node: str, kind: str
) -> dict[str, str]:
    """Publish every bad item; returns what each became: "published" or the error."""
    outcome: dict[str, str] = {}
    for item_id, payload in PAYLOADS.items():
        if REFUSED_BY[kind].get(item_id) == "not published":
            outcome[item_id] = "not published"
            continue
        if payload is None:
            published = pubsub.PubSubClient.publish(
                publisher, service, node, [pubsub.Item(item_id)]
            )
        else:
            content = odd_payload() if item_id == "odd-characters" else payload
            published = defer.Deferred.fromCoroutine(
                publisher.publish(service, node, [(item_id, content)], depth=1)
            )
        published.addTimeout(PUBLISH_TIMEOUT, reactor)
        try:
            await published
        except StanzaError as error:
            outcome[item_id] = str(error.condition)
        except defer.TimeoutError:
            outcome[item_id] = "no answer"
        else:
            outcome[item_id] = "published"
    # an item published without id: the service names it
    (assigned,) = await publisher.publish(service, node, [(None, f"<entry xmlns='{NS}'/>")])
    outcome[assigned] = "published"
    return outcome


async def test_odd_items_and_a_failing_parser_never_stop_a_sync(
    daemon: Daemon,
    cache: PubsubCache,
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(PREFIX)
    client = daemon.get_client("bob")
    await publisher.create_node(service, node, {"pubsub#access_model": "open"})
    outcome = await publish_what_the_server_accepts(publisher, service, node, xmpp_server.kind)
    refused = {i: condition for i, condition in outcome.items() if condition != "published"}
    assert refused == REFUSED_BY[xmpp_server.kind], outcome

    with caplog.at_level(logging.WARNING, logger="libervia_cache"):
        await synchronised(daemon, service, node)

    server_items = await publisher.get_all_items(service, node)
    answer = await cache.get_items_from_cache(client, service, node)
    assert answer is not None
    cached_items, metadata = answer
    assert metadata["cached"] is True
    assert [i["id"] for i in cached_items] == [i["id"] for i in server_items]
    assert [i.toXml() for i in cached_items] == [i.toXml() for i in server_items]
    # the transparent path answers the same, from the cache
    items, metadata = await daemon.xep_0060.get_items(client, service, node)
    assert metadata["cached"] is True
    assert [i.toXml() for i in items] == [i.toXml() for i in server_items]

    results = {r["item_id"]: r for r in await cache.management.search({"nodes": [node]})}
    assert set(results) == {i["id"] for i in server_items}
    for item_id in UNPARSED:
        assert results[item_id]["parsed"] is None, item_id
        logged = [r.getMessage() for r in caplog.records if item_id in r.getMessage()]
        assert logged and all(node in message for message in logged), (item_id, caplog.text)
    plain = next(i for i in cached_items if i["id"] == "plain")
    assert results["plain"]["parsed"] == {"id": "plain", "text": str(plain)[:20]}
    if "huge" not in refused:
        huge = next(i for i in cached_items if i["id"] == "huge")
        assert len(str(huge.firstChildElement())) == HUGE
    deep = ["deep"] if "deep" not in refused else []
    assert [r["item_id"] for r in await cache.management.search({"fts": "bottom"})] == deep
    odd = ["odd-characters"] if "odd-characters" not in refused else []
    assert [r["item_id"] for r in await cache.management.search({"fts": "emoji"})] == odd
