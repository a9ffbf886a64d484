"""Fidelity: for a synced node, the cache answers exactly what the node's server answers.

The server is the model: a battery of requests (every item, ``max_items`` 1..N+1, items
by id in any order and with unknown ids, RSM first and last pages of every size, after
and before every key, every index, count only, and the combinations clients send:
``max_items`` with RSM, ids with RSM) is asked of the server and of the cache, and every
answer the cache gives must equal the server's: the same items (XML) in the same order
and the same metadata (``rsm`` with the server's own keys, its ``index`` and ``count``,
``complete``). A request the server refuses is one the cache must not answer. Where the
server's RSM keys are its own (ejabberd's timestamps), the cache learns them from the
server's answers: a request it cannot answer yet is asked through the daemon's
transparent path once, and then the cache must answer it, like the server.

Each test reports how many answers it compared (``-s`` shows them).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from tx_xmpp import rsm

from libervia_cache.backend.daemon import Daemon, ProfileClient
from libervia_cache.plugin import PubsubCache
from tests.conftest import run
from tests.harness.daemon import atom_entry, cache_of, start_daemon
from tests.harness.gates import NetworkGate
from tests.integration.conftest import synchronised
from tests.servers.base import XMPPServer
from tests.servers.publisher import connect_publisher

MICROBLOG = "urn:xmpp:microblog:0"
ITEM_COUNT = 23


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


@dataclass
class Tally:
    """What a test compared."""

    compared: int = 0
    refused: int = 0  # requests the server refused or failed
    xep0059: int = 0  # server failures the cache answered as XEP-0059 defines
    learnt: int = 0  # answered by the cache once the server's keys were learnt
    differences: list[str] = field(default_factory=list)


@dataclass
class SyncedNode:
    server: XMPPServer
    daemon: Daemon
    client: ProfileClient
    cache: PubsubCache
    service: JID
    node: str
    ids: list[str]  # the server's order, oldest first
    keys: list[str]  # the server's RSM keys of ``ids`` ([] without RSM)
    xml: dict[str, str]  # the server's XML of each item
    tally: Tally = field(default_factory=Tally)

    async def network(self, **request: Any) -> Answer:
        items, metadata = await self.daemon.xep_0060.get_items_from_network(
            self.client, self.service, self.node, **request
        )
        assert metadata["cached"] is False
        return Answer.of(items, metadata)

    async def cached(self, **request: Any) -> Answer | None:
        answer = await self.cache.get_items_from_cache(
            self.client, self.service, self.node, **request
        )
        if answer is None:
            return None
        items, metadata = answer
        assert metadata["cached"] is True
        return Answer.of(items, metadata)

    async def compare(self, **request: Any) -> Answer | None:
        """Ask the server and the cache; record a difference if the cache answered and
        differs. A server whose keys are its own: a request the cache cannot answer goes
        once through the transparent path (the cache learns the keys), then must be
        answered. Returns the cache's answer."""
        asked = describe(request)
        try:
            network = await self.network(**request)
        except StanzaError as error:
            cached = await self.cached(**request)
            self.tally.refused += 1
            if cached is None:
                return None
            # a server *failure* on a valid request may be answered, with what XEP-0059
            # defines (ejabberd's <index> past the end, libervia-pubsub's <index>); a
            # clean refusal never
            model = self.xep0059(request.get("rsm_request"))
            if error.condition != "internal-server-error" or model is None:
                self.tally.differences.append(f"{asked}: answered what the server refuses")
            elif cached != model:
                self.tally.differences.append(f"{asked}: {cached} is not XEP-0059's {model}")
            else:
                self.tally.xep0059 += 1
            return cached
        cached = await self.cached(**request)
        if cached is None and not self.server.quirks["rsm_keys_are_item_ids"]:
            await self.daemon.xep_0060.get_items(self.client, self.service, self.node, **request)
            cached = await self.cached(**request)
            self.tally.learnt += cached is not None
        if cached is None:
            self.tally.differences.append(f"{asked}: not answered by the cache")
            return None
        self.tally.compared += 1
        if cached != network:
            self.tally.differences.append(
                f"{asked}: cache {cached.ids} {cached.metadata.get('rsm')} "
                f"!= server {network.ids} {network.metadata.get('rsm')}"
            )
        return cached

    def xep0059(self, request: rsm.RSMRequest | None) -> Answer | None:
        """XEP-0059's answer to an ``index`` request on this node (None: not one)."""
        if request is None or request.index is None:
            return None
        count = len(self.ids)
        start = min(request.index, count)
        page = list(range(start, min(count, start + request.max)))
        rsm_data: dict[str, Any] = {"count": count}
        if page:
            keys = self.keys or self.ids
            rsm_data = {
                "first": keys[page[0]],
                "last": keys[page[-1]],
                "index": start,
                "count": count,
            }
        items = [(self.ids[i], self.xml[self.ids[i]]) for i in page]
        return Answer(
            items,
            {
                "service": self.service.full(),
                "node": self.node,
                "rsm": rsm_data,
                "complete": start + len(page) >= count,
            },
        )

    def report(self, what: str) -> str:
        tally = self.tally
        text = (
            f"{what} on {self.server.kind}: {tally.compared} answers compared "
            f"({tally.learnt} after learning keys), {tally.refused} refused or failed by the "
            f"server ({tally.xep0059} of them answered as XEP-0059 defines), "
            f"{len(tally.differences)} differences"
        )
        print(text)
        return text


def describe(request: dict[str, Any]) -> str:
    """``request`` for people: the RSM request's fields rather than its repr."""
    shown = dict(request)
    if (asked := shown.get("rsm_request")) is not None:
        fields = {name: getattr(asked, name) for name in ("max", "after", "before", "index")}
        shown["rsm_request"] = {name: value for name, value in fields.items() if value is not None}
    return repr(shown)


async def server_keys(daemon: Daemon, client: Any, service: JID, node: str) -> list[str]:
    """The server's RSM key of every item, oldest first (a walk of one-item pages)."""
    keys: list[str] = []
    request = rsm.RSMRequest(max_=1)
    while True:
        items, metadata = await daemon.xep_0060.get_items_from_network(
            client, service, node, rsm_request=request
        )
        rsm_data = metadata.get("rsm") or {}
        if not items or not rsm_data.get("last"):
            return keys
        keys.append(rsm_data["last"])
        request = rsm.RSMRequest(max_=1, after=rsm_data["last"])


@pytest.fixture(scope="module")
def synced(
    xmpp_server: XMPPServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SyncedNode]:
    """A microblog node with history (publish, retract, republish), synced by bob."""
    directory = tmp_path_factory.mktemp("fidelity")
    daemon = run(start_daemon(directory, xmpp_server))
    publisher = run(connect_publisher(xmpp_server, "alice", f"fidelity-{uuid.uuid4().hex[:6]}"))
    service = JID(xmpp_server.pubsub_service)
    node = f"{MICROBLOG}:fidelity-{uuid.uuid4().hex[:8]}"

    async def prepare() -> tuple[list[str], list[str], dict[str, str]]:
        await publisher.create_node(service, node, {"pubsub#access_model": "open"})
        ids = [f"item-{n:02d}" for n in range(ITEM_COUNT)]
        await publisher.publish(service, node, [(i, atom_entry(i, i)) for i in ids], depth=1)
        await publisher.retract(service, node, ["item-05"])
        await publisher.publish(
            service, node, [(i, atom_entry(i, i + " v2")) for i in ("item-03", "item-10")], depth=1
        )
        await synchronised(daemon, service, node)
        client = daemon.get_client("bob")
        items, __ = await daemon.xep_0060.get_items_from_network(client, service, node)
        keys = await server_keys(daemon, client, service, node) if xmpp_server.quirks["rsm"] else []
        return [i["id"] for i in items], keys, {i["id"]: i.toXml() for i in items}

    ids, keys, xml = run(prepare())
    try:
        yield SyncedNode(
            xmpp_server,
            daemon,
            daemon.get_client("bob"),
            cache_of(daemon),
            service,
            node,
            ids,
            keys,
            xml,
        )
    finally:
        run(publisher.close())
        run(daemon.stop())


@pytest.fixture
def fresh_tally(synced: SyncedNode) -> SyncedNode:
    synced.tally = Tally()
    return synced


def assert_no_difference(synced: SyncedNode, what: str) -> None:
    report = synced.report(what)
    assert not synced.tally.differences, f"{report}: {synced.tally.differences[:3]}"
    assert synced.tally.compared > 0, report


async def test_every_item_and_max_items_are_answered_like_the_server(
    fresh_tally: SyncedNode,
) -> None:
    synced = fresh_tally
    assert (await synced.compare()) is not None
    for max_items in range(1, len(synced.ids) + 2):
        await synced.compare(max_items=max_items)
    assert_no_difference(synced, "every item, max_items")


async def test_items_by_id_are_answered_like_the_server(fresh_tally: SyncedNode) -> None:
    synced = fresh_tally
    rng = random.Random(4)
    for size in (1, 2, 5, len(synced.ids)):
        for __ in range(3):
            await synced.compare(item_ids=rng.sample(synced.ids, size))
    # an unknown id: the servers drop it or fail the request; the cache asks the server
    asked = [synced.ids[0], "no-such-item", synced.ids[-1]]
    assert await synced.cached(item_ids=asked) is None
    assert_no_difference(synced, "items by id")


async def test_rsm_first_and_last_pages_and_counts_are_answered_like_the_server(
    fresh_tally: SyncedNode,
) -> None:
    synced = fresh_tally
    for size in (0, 1, 4, 10, len(synced.ids), 30):
        await synced.compare(rsm_request=rsm.RSMRequest(max_=size))
        await synced.compare(rsm_request=rsm.RSMRequest(max_=size, before=""))
    assert_no_difference(synced, "RSM first and last pages")


async def test_rsm_pages_after_and_before_every_key_are_answered_like_the_server(
    fresh_tally: SyncedNode,
) -> None:
    synced = fresh_tally
    keys = synced.keys or synced.ids  # a server without RSM takes any key, and ignores it
    for key in keys:
        for direction in ("after", "before"):
            await synced.compare(rsm_request=rsm.RSMRequest(max_=3, **{direction: key}))
    assert_no_difference(synced, "RSM after/before every key")


async def test_rsm_pages_at_every_index_are_answered_like_the_server(
    fresh_tally: SyncedNode,
) -> None:
    synced = fresh_tally
    for index in range(len(synced.ids) + 2):
        await synced.compare(rsm_request=rsm.RSMRequest(max_=4, index=index))
    report = synced.report("RSM index")
    assert not synced.tally.differences, f"{report}: {synced.tally.differences[:3]}"
    if synced.server.quirks["rsm_index"] or not synced.server.quirks["rsm"]:
        assert synced.tally.compared > 0, report
    else:  # libervia-pubsub fails every <index>: the cache answers as XEP-0059 defines
        assert synced.tally.xep0059 == len(synced.ids) + 2, report


async def test_what_clients_send_together_is_answered_like_the_server(
    fresh_tally: SyncedNode,
) -> None:
    """The real Libervia backend sends max_items and RSM together; ids come with RSM too."""
    synced = fresh_tally
    for max_items in (1, 5, 50):
        for size in (2, 10):
            await synced.compare(max_items=max_items, rsm_request=rsm.RSMRequest(max_=size))
            await synced.compare(
                max_items=max_items, rsm_request=rsm.RSMRequest(max_=size, before="")
            )
    asked = [synced.ids[7], synced.ids[2]]
    network = await synced.network(item_ids=asked, rsm_request=rsm.RSMRequest(max_=1))
    cached = await synced.cached(item_ids=asked, rsm_request=rsm.RSMRequest(max_=1))
    if cached is not None:  # ejabberd answers ids with RSM with no item: the cache asks it
        assert cached == network
    assert_no_difference(synced, "max_items with RSM")


@pytest.mark.parametrize("page", [1, 4, 10])
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
async def test_a_walk_alternating_cache_and_server_pages_is_the_servers_walk(
    synced: SyncedNode, page: int, backward: bool
) -> None:
    """Page k from the cache, page k+1 from the server with the key the cache gave, and
    so on: the same pages as a walk on the server alone, in both directions."""
    server_pages = await walk(synced, page, backward, lambda k: "server")
    mixed = await walk(synced, page, backward, lambda k: "cache" if k % 2 == 0 else "server")
    assert mixed == server_pages
    if synced.server.quirks["rsm"]:
        assert len(server_pages) >= len(synced.ids) // page


async def walk(
    synced: SyncedNode, page: int, backward: bool, side_of: Any
) -> list[tuple[list[str], Any]]:
    """The node's pages, each from the side ``side_of(k)`` names, following the keys the
    previous page gave (a side that cannot answer a page is a failure)."""
    pages: list[tuple[list[str], Any]] = []
    request = rsm.RSMRequest(max_=page, before="") if backward else rsm.RSMRequest(max_=page)
    for k in range(len(synced.ids) + 2):
        if side_of(k) == "server":
            answer = await synced.network(rsm_request=request)
        else:
            cached = await synced.cached(rsm_request=request)
            if cached is None and not synced.server.quirks["rsm_keys_are_item_ids"]:
                await synced.daemon.xep_0060.get_items(
                    synced.client, synced.service, synced.node, rsm_request=request
                )
                cached = await synced.cached(rsm_request=request)
            assert cached is not None, f"page {k}: {describe({'rsm_request': request})}"
            answer = cached
        rsm_data = answer.metadata.get("rsm") or {}
        pages.append((answer.ids, rsm_data))
        if not answer.ids or not rsm_data:
            break
        if backward:
            if rsm_data.get("index", 0) <= 0:
                break
            request = rsm.RSMRequest(max_=page, before=rsm_data["first"])
        else:
            if rsm_data["index"] + len(answer.ids) >= rsm_data["count"]:
                break
            request = rsm.RSMRequest(max_=page, after=rsm_data["last"])
    return pages


async def test_republished_items_are_where_the_server_puts_them_replay_included(
    make_daemon: Any, publisher: Any, xmpp_server: XMPPServer
) -> None:
    """A node where an old item was republished, synced while the server replays the last
    published item to the new subscriber (ejabberd's default), then republished again
    once synced: after each step every answer equals the server's, order included."""
    service = JID(xmpp_server.pubsub_service)
    node = f"{MICROBLOG}:republish-{uuid.uuid4().hex[:8]}"
    options: dict[str, Any] = {"pubsub#access_model": "open"}
    if xmpp_server.kind == "ejabberd":
        options["pubsub#send_last_published_item"] = "on_sub_and_presence"
    await publisher.create_node(service, node, options)
    ids = [f"r-{n}" for n in range(6)]
    await publisher.publish(service, node, [(i, atom_entry(i, i)) for i in ids], depth=1)
    await publisher.publish(service, node, [(ids[1], atom_entry(ids[1], "again"))])
    daemon = await make_daemon()
    await synchronised(daemon, service, node)
    client = daemon.get_client("bob")
    items, __ = await daemon.xep_0060.get_items_from_network(client, service, node)
    keys = await server_keys(daemon, client, service, node) if xmpp_server.quirks["rsm"] else []
    synced = SyncedNode(
        xmpp_server,
        daemon,
        client,
        cache_of(daemon),
        service,
        node,
        [i["id"] for i in items],
        keys,
        {i["id"]: i.toXml() for i in items},
    )
    for request in ({}, {"max_items": 2}, {"item_ids": [ids[4], ids[1]]}):
        await synced.compare(**request)
    # republished once synced: the cache checks where the server put it, and follows
    from tests.harness.daemon import AppliedEvents

    applied = AppliedEvents(daemon)
    waiting = applied.wait_for_items(node, [ids[2]], "the republication")
    await publisher.publish(service, node, [(ids[2], atom_entry(ids[2], "once more"))])
    await waiting
    await synced_again(daemon, service, node)
    for request in ({}, {"max_items": 2}, {"max_items": 4}):
        await synced.compare(**request)
    assert_no_difference(synced, "republished items")


async def synced_again(daemon: Daemon, service: JID, node: str) -> None:
    """Wait for a resync the cache may have started (a wrong guess of the order)."""
    sync = cache_of(daemon).syncs.running(("bob", service.full(), node))
    if sync is not None:
        await sync.wait()


@pytest.mark.parametrize("switch", ["resync", "purge", "reconnection"])
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
async def test_a_walk_through_the_daemon_is_the_servers_walk_whatever_stops_the_cache(
    make_daemon: Any, publisher: Any, xmpp_server: XMPPServer, switch: str, backward: bool
) -> None:
    """A client walks a synced node page by page through the daemon's transparent path;
    half-way, the cache stops answering (a resync, a purge, a reconnection) and the
    server answers the next pages with the keys the cache gave, then the cache answers
    again with the keys the server gave: the pages are those of a walk on the server."""
    service = JID(xmpp_server.pubsub_service)
    node = f"{MICROBLOG}:walk-{uuid.uuid4().hex[:8]}"
    await publisher.create_node(service, node, {"pubsub#access_model": "open"})
    ids = [f"w-{n:02d}" for n in range(17)]
    await publisher.publish(service, node, [(i, atom_entry(i, i)) for i in ids], depth=1)
    daemon = await make_daemon()
    await synchronised(daemon, service, node)
    client = daemon.get_client("bob")
    cache = cache_of(daemon)

    async def through_daemon(request: rsm.RSMRequest, use_cache: bool) -> tuple[Answer, bool]:
        items, metadata = await daemon.xep_0060.get_items(
            client, service, node, rsm_request=request, extra={"use_cache": use_cache}
        )
        return Answer.of(items, metadata), bool(metadata["cached"])

    gates: list[NetworkGate] = []

    async def stop_the_cache() -> None:
        info = await cache.store_access.require().get_node("bob", service.full(), node)
        assert info is not None
        if switch == "resync":
            # held on its first page: the next pages of the walk come from the server
            gates.append(NetworkGate(daemon.xep_0060, "page", node=node))
            cache.syncs.restart(client, info)
            await gates[-1].reached
        elif switch == "purge":
            await cache.management.purge({"nodes": [node]})
        else:
            await cache.profile_connected(client)

    async def walk_once(use_cache: bool, switch_at: int | None) -> tuple[list[Any], set[bool]]:
        pages: list[Any] = []
        sources: set[bool] = set()
        request = rsm.RSMRequest(max_=3, before="") if backward else rsm.RSMRequest(max_=3)
        for k in range(len(ids)):
            if k == switch_at:
                await stop_the_cache()
            elif gates and switch_at is not None and k == switch_at + 2:
                gates.pop().remove()
                await synced_again(daemon, service, node)
            answer, cached = await through_daemon(request, use_cache)
            sources.add(cached)
            rsm_data = answer.metadata.get("rsm") or {}
            pages.append((answer.ids, rsm_data))
            if not xmpp_server.quirks["rsm"] or not answer.ids:
                break
            if backward:
                if rsm_data["index"] <= 0:
                    break
                request = rsm.RSMRequest(max_=3, before=rsm_data["first"])
            elif rsm_data["index"] + len(answer.ids) >= rsm_data["count"]:
                break
            else:
                request = rsm.RSMRequest(max_=3, after=rsm_data["last"])
        return pages, sources

    server_pages, __ = await walk_once(use_cache=False, switch_at=None)
    # a first walk warms the cache (it learns the server's keys where they are its own)
    await walk_once(use_cache=True, switch_at=None)
    pages, sources = await walk_once(use_cache=True, switch_at=2)
    assert pages == server_pages
    if xmpp_server.quirks["rsm"]:
        assert sources == {True, False}, "the walk went through both the cache and the server"
