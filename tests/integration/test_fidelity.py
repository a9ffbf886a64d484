"""Fidelity: for a synced node, the cache answers what the server answers.

After a sync, a battery of requests (max_items 1..N+1, by ids, RSM pages forward and
backward from every position, last page, index, count-only) is asked of the server
and of the cache; answers are compared on every request the server handles correctly
(``quirks`` of each test server say which): items in order, RSM ``count`` and
``index``; item-id requests as sets (servers disagree on their order); server RSM keys
are opaque (ejabberd's are timestamps), so pages are walked with each side's own keys.
A server that ignores RSM (Prosody 0.12: every item, no RSM data) is the model of its
own nodes: there the cache's answer to every RSM request must be the server's answer,
item for item (XML) and metadata for metadata.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from tx_xmpp import rsm

from libervia_cache.backend.daemon import Daemon, ProfileClient
from libervia_cache.plugin import PubsubCache
from tests.conftest import run
from tests.harness.daemon import atom_entry, cache_of, start_daemon
from tests.integration.conftest import synchronised
from tests.servers.base import XMPPServer
from tests.servers.publisher import connect_publisher

MICROBLOG = "urn:xmpp:microblog:0"
ITEM_COUNT = 23


@dataclass
class SyncedNode:
    server: XMPPServer
    daemon: Daemon
    client: ProfileClient
    cache: PubsubCache
    service: JID
    node: str
    ids: list[str]  # the server's order, oldest first

    async def network(self, **request: Any) -> tuple[list[str], dict[str, Any]]:
        items, metadata = await self.daemon.xep_0060.get_items_from_network(
            self.client, self.service, self.node, **request
        )
        return [i["id"] for i in items], metadata.get("rsm", {})

    async def cached(self, **request: Any) -> tuple[list[str], dict[str, Any]]:
        answer = await self.cache.get_items_from_cache(
            self.client, self.service, self.node, **request
        )
        assert answer is not None, f"the cache did not answer {request}"
        items, metadata = answer
        assert metadata["cached"] is True
        return [i["id"] for i in items], metadata.get("rsm", {})

    async def network_answer(self, **request: Any) -> Answer:
        items, metadata = await self.daemon.xep_0060.get_items_from_network(
            self.client, self.service, self.node, **request
        )
        assert metadata["cached"] is False
        return Answer.of(items, metadata)

    async def cached_answer(self, **request: Any) -> Answer:
        answer = await self.cache.get_items_from_cache(
            self.client, self.service, self.node, **request
        )
        assert answer is not None, f"the cache did not answer {request}"
        items, metadata = answer
        assert metadata["cached"] is True
        return Answer.of(items, metadata)


@dataclass(frozen=True)
class Answer:
    """A whole answer to an items request, where it came from apart."""

    items: list[tuple[str, str]]  # (id, XML) in the order given
    metadata: dict[str, Any]  # all but ``cached``

    @classmethod
    def of(cls, items: list[Any], metadata: dict[str, Any]) -> Answer:
        return cls(
            [(item["id"], item.toXml()) for item in items],
            {key: value for key, value in metadata.items() if key != "cached"},
        )

    @property
    def ids(self) -> list[str]:
        return [item_id for item_id, __ in self.items]


@pytest.fixture(scope="module")
def synced(
    xmpp_server: XMPPServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SyncedNode]:
    """A microblog node with history (publish, republish, retract), synced by bob."""
    directory = tmp_path_factory.mktemp("fidelity")
    daemon = run(start_daemon(directory, xmpp_server))
    publisher = run(connect_publisher(xmpp_server, "alice", f"fidelity-{uuid.uuid4().hex[:6]}"))
    service = JID(xmpp_server.pubsub_service)
    node = f"{MICROBLOG}:fidelity-{uuid.uuid4().hex[:8]}"

    async def prepare() -> list[str]:
        await publisher.create_node(service, node, {"pubsub#access_model": "open"})
        ids = [f"item-{n:02d}" for n in range(ITEM_COUNT)]
        await publisher.publish(service, node, [(i, atom_entry(i, i)) for i in ids], depth=1)
        # history: a retract and, where the server moves republished items to the
        # newest place, two republishes
        await publisher.retract(service, node, ["item-05"])
        if xmpp_server.quirks.get("republish_moves_to_newest"):
            await publisher.publish(
                service,
                node,
                [(i, atom_entry(i, i + " v2")) for i in ("item-03", "item-10")],
                depth=1,
            )
        server_ids = [i["id"] for i in await publisher.get_all_items(service, node)]
        await synchronised(daemon, service, node)
        return server_ids

    ids = run(prepare())
    try:
        yield SyncedNode(
            xmpp_server,
            daemon,
            daemon.get_client("bob"),
            cache_of(daemon),
            service,
            node,
            ids,
        )
    finally:
        run(publisher.close())
        run(daemon.stop())


def handles(synced: SyncedNode, *quirks: str) -> bool:
    """Whether the server handles these requests correctly (else, on a server that
    honours RSM, only the cache is checked, against the XEP-0059 model of the node)."""
    return all(synced.server.quirks.get(q) for q in quirks)


async def assert_answered_like_the_server(synced: SyncedNode, **request: Any) -> Answer:
    """The cache answers ``request`` exactly as the server does: the same items (XML) in
    the same order, the same metadata (``complete``, ``rsm`` or its absence). Returns
    the answer."""
    network = await synced.network_answer(**request)
    cached = await synced.cached_answer(**request)
    asked = describe(request)
    assert cached.metadata == network.metadata, asked
    assert cached.items == network.items, asked
    if not synced.server.quirks["rsm"]:
        assert "rsm" not in cached.metadata, asked  # the server sends no RSM data
    return cached


def describe(request: dict[str, Any]) -> str:
    """``request`` for people: the RSM request's fields rather than its repr."""
    shown = dict(request)
    if (asked := shown.get("rsm_request")) is not None:
        fields = {name: getattr(asked, name) for name in ("max", "after", "before", "index")}
        shown["rsm_request"] = {name: value for name, value in fields.items() if value is not None}
    return repr(shown)


def model_page(ids: list[str], request: rsm.RSMRequest) -> tuple[list[str], int]:
    """XEP-0059 answer (items, index) for a node holding ``ids``, oldest first."""
    count, size = len(ids), request.max
    if request.index is not None:
        start = request.index
    elif request.after is not None:
        start = ids.index(request.after) + 1
    elif request.before == "":
        start = max(0, count - size)
    elif request.before is not None:
        start = max(0, ids.index(request.before) - size)
    else:
        start = 0
    end = min(count, start + size)
    if request.before not in (None, ""):
        end = min(end, ids.index(request.before))
    return ids[start:end], start


async def test_the_whole_node_is_the_same(synced: SyncedNode) -> None:
    network, __ = await synced.network()
    cached, __ = await synced.cached()
    assert cached == network == synced.ids


async def test_max_items_gives_the_same_newest_items(synced: SyncedNode) -> None:
    for max_items in range(1, len(synced.ids) + 2):
        network, __ = await synced.network(max_items=max_items)
        cached, __ = await synced.cached(max_items=max_items)
        assert cached == network, f"max_items={max_items}"


async def test_items_by_id_are_the_same_set(synced: SyncedNode) -> None:
    rng = random.Random(4)
    for size in (1, 2, 5, len(synced.ids)):
        asked = rng.sample(synced.ids, size)
        network, __ = await synced.network(item_ids=asked)
        cached, __ = await synced.cached(item_ids=asked)
        assert sorted(cached) == sorted(network) == sorted(asked)


async def test_unknown_item_ids_are_dropped_like_the_server_does(synced: SyncedNode) -> None:
    asked = [synced.ids[0], "no-such-item", synced.ids[-1]]
    cached, __ = await synced.cached(item_ids=asked)
    assert sorted(cached) == sorted([synced.ids[0], synced.ids[-1]])
    try:
        network, __ = await synced.network(item_ids=asked)
    except StanzaError:
        # libervia-pubsub fails the whole request: the cache follows XEP-0060 instead
        assert synced.server.quirks["unknown_id_fails"]
    else:
        assert sorted(network) == sorted(cached)


async def walk(
    side: Any, ids: list[str], page: int, backward: bool
) -> list[tuple[list[str], dict[str, Any]]]:
    """Every page of the node, following the side's own RSM keys."""
    pages = []
    request = rsm.RSMRequest(max_=page, before="") if backward else rsm.RSMRequest(max_=page)
    end_id = ids[0] if backward else ids[-1]
    for __ in range(len(ids) + 1):
        page_ids, rsm_data = await side(rsm_request=request)
        pages.append((page_ids, rsm_data))
        if not page_ids or end_id in page_ids:
            break
        if backward:
            request = rsm.RSMRequest(max_=page, before=rsm_data["first"])
        else:
            request = rsm.RSMRequest(max_=page, after=rsm_data["last"])
    return pages


def model_walk(ids: list[str], page: int, backward: bool) -> list[tuple[list[str], int]]:
    if backward:
        return [
            (ids[max(0, end - page) : end], max(0, end - page)) for end in range(len(ids), 0, -page)
        ]
    return [(ids[start : start + page], start) for start in range(0, len(ids), page)]


@pytest.mark.parametrize("page", [1, 4, 10, 30])
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
async def test_rsm_pages_are_the_same_walking_both_ways(
    synced: SyncedNode, page: int, backward: bool
) -> None:
    if not synced.server.quirks["rsm"]:
        # the server answers the first request of a walk with the whole node and no RSM
        # data (no key to go on with): the cache must give that same answer
        request = rsm.RSMRequest(max_=page, before="") if backward else rsm.RSMRequest(max_=page)
        answer = await assert_answered_like_the_server(synced, rsm_request=request)
        assert answer.ids == synced.ids
        return
    expected = model_walk(synced.ids, page, backward)
    cached = await walk(synced.cached, synced.ids, page, backward)
    assert [(ids, r["index"]) for ids, r in cached] == expected
    assert {r["count"] for __, r in cached} == {len(synced.ids)}
    if handles(synced, "rsm", "rsm_count"):
        network = await walk(synced.network, synced.ids, page, backward)
        assert [ids for ids, __ in network] == [ids for ids, __ in cached]
        assert {r["count"] for __, r in network} == {len(synced.ids)}
        for (__, network_rsm), (__, cached_rsm) in zip(network, cached, strict=True):
            # ejabberd gives a negative index for a last page larger than the node
            if network_rsm.get("index", -1) >= 0:
                assert cached_rsm["index"] == network_rsm["index"]


async def test_rsm_pages_after_and_before_every_position(synced: SyncedNode) -> None:
    if not synced.server.quirks["rsm"]:
        for key in synced.ids:
            for direction in ("after", "before"):
                request = rsm.RSMRequest(max_=3, **{direction: key})
                await assert_answered_like_the_server(synced, rsm_request=request)
        return
    for key in synced.ids:
        for direction in ("after", "before"):
            request = rsm.RSMRequest(max_=3, **{direction: key})
            expected, index = model_page(synced.ids, request)
            cached, cached_rsm = await synced.cached(rsm_request=request)
            assert (cached, cached_rsm.get("index")) == (
                expected,
                index if expected else None,
            ), f"{direction} {key}"
            assert cached_rsm["count"] == len(synced.ids)
            if handles(synced, "rsm", "rsm_keys_are_item_ids"):
                network, network_rsm = await synced.network(rsm_request=request)
                assert network == cached, f"{direction} {key}"
                assert network_rsm.get("index") == cached_rsm.get("index")
                assert network_rsm["count"] == cached_rsm["count"]


async def test_rsm_pages_at_every_index(synced: SyncedNode) -> None:
    if not synced.server.quirks["rsm"]:
        for index in range(len(synced.ids)):
            request = rsm.RSMRequest(max_=4, index=index)
            await assert_answered_like_the_server(synced, rsm_request=request)
        return
    for index in range(len(synced.ids)):
        request = rsm.RSMRequest(max_=4, index=index)
        cached, cached_rsm = await synced.cached(rsm_request=request)
        assert cached == model_page(synced.ids, request)[0], f"index {index}"
        assert cached_rsm["index"] == index
        assert cached_rsm["count"] == len(synced.ids)
        if handles(synced, "rsm", "rsm_index"):
            network, network_rsm = await synced.network(rsm_request=request)
            assert network == cached, f"index {index}"
            assert network_rsm["index"] == index
            assert network_rsm["count"] == cached_rsm["count"]


async def test_count_only_requests_are_answered_like_the_server(synced: SyncedNode) -> None:
    if not synced.server.quirks["rsm"]:
        # no count-only answer from a server that ignores RSM: every item
        answer = await assert_answered_like_the_server(synced, rsm_request=rsm.RSMRequest(max_=0))
        assert answer.ids == synced.ids
        return
    cached, cached_rsm = await synced.cached(rsm_request=rsm.RSMRequest(max_=0))
    assert cached == []
    assert cached_rsm["count"] == len(synced.ids)
    if handles(synced, "rsm", "rsm_count"):
        network, network_rsm = await synced.network(rsm_request=rsm.RSMRequest(max_=0))
        assert network == []
        assert network_rsm["count"] == cached_rsm["count"]


async def test_a_server_rsm_key_the_cache_does_not_know_is_a_miss(synced: SyncedNode) -> None:
    __, network_rsm = await synced.network(rsm_request=rsm.RSMRequest(max_=5))
    if not synced.server.quirks["rsm"]:
        assert network_rsm == {}  # Prosody: no RSM, nothing to page on with
        return
    if synced.server.quirks["rsm_keys_are_item_ids"]:
        assert network_rsm["last"] == synced.ids[4]
        return
    # ejabberd: a timestamp key, from a page that came from the network
    answer = await synced.cache.get_items_from_cache(
        synced.client,
        synced.service,
        synced.node,
        rsm_request=rsm.RSMRequest(max_=5, after=network_rsm["last"]),
    )
    assert answer is None
    # ... and through the transparent path the network answers it, the right page
    items, metadata = await synced.daemon.xep_0060.get_items(
        synced.client,
        synced.service,
        synced.node,
        rsm_request=rsm.RSMRequest(max_=5, after=network_rsm["last"]),
    )
    assert metadata["cached"] is False
    assert [i["id"] for i in items] == synced.ids[5:10]
