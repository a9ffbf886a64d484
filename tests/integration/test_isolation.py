"""Isolation and trust: profiles never see each other's cache, a node one profile may not
read is never answered from another's cache, foreign events change nothing, and what
the cache writes on disk (database, control socket) is owner-only."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from tx_xmpp import pubsub

from libervia_cache.backend.daemon import Daemon
from libervia_cache.control import ControlClient
from libervia_cache.errors import BridgeError
from libervia_cache.plugin.sync import Outcome
from libervia_cache.plugin.xml import parse_element
from libervia_cache.storage import SyncState
from tests.harness.daemon import AppliedEvents, DaemonProcess, atom_entry, cache_of, write_config
from tests.integration.conftest import server_kinds, synchronise, synchronised
from tests.servers.base import XMPPServer
from tests.servers.publisher import Publisher

MICROBLOG = "urn:xmpp:microblog:0"
NS_PUBSUB_OWNER = "http://jabber.org/protocol/pubsub#owner"

#: the server does not matter to these tests: run them against one kind only
one_server = pytest.mark.parametrize("xmpp_server", server_kinds()[:1], indirect=True)

#: one daemon with two profiles, bob and carol
pytestmark = pytest.mark.daemon_options(profiles=["bob", "carol"])


async def make_node(
    publisher: Publisher, service: JID, node: str, count: int, access_model: str = "open"
) -> list[str]:
    await publisher.create_node(service, node, {"pubsub#access_model": access_model})
    ids = [f"i{n:02d}" for n in range(count)]
    await publisher.publish(service, node, [(i, atom_entry(i, i)) for i in ids], depth=1)
    return ids


async def server_items(publisher: Publisher, service: JID, node: str) -> list[tuple[str, str]]:
    return [(i["id"], i.toXml()) for i in await publisher.get_all_items(service, node)]


async def cached_items(
    daemon: Daemon, profile: str, service: JID, node: str
) -> list[tuple[str, str]] | None:
    answer = await cache_of(daemon).get_items_from_cache(daemon.get_client(profile), service, node)
    return None if answer is None else [(i["id"], i.toXml()) for i in answer[0]]


# --- two profiles, one node ------------------------------------------------------------


@one_server
async def test_two_profiles_caching_one_node_each_see_only_their_own_cache(
    daemon: Daemon, publisher: Publisher, xmpp_server: XMPPServer, fresh_node: Callable[..., str]
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await make_node(publisher, service, node, 6)
    cache = cache_of(daemon)
    store = cache.store_access.require()
    bob_node = await synchronised(daemon, service, node, "bob")
    carol_node = await synchronised(daemon, service, node, "carol")
    assert bob_node.id != carol_node.id
    assert (bob_node.profile, carol_node.profile) == ("bob", "carol")
    expected = await server_items(publisher, service, node)
    assert await cached_items(daemon, "bob", service, node) == expected
    assert await cached_items(daemon, "carol", service, node) == expected

    # what one profile's cache holds (here an item only bob's holds) is never the other's
    await store.cache_items(
        bob_node.id,
        [("bob-only", "<item xmlns='http://jabber.org/protocol/pubsub' id='bob-only'/>", None)],
        where="newest",
    )
    bob_ids = [i for i, __ in await cached_items(daemon, "bob", service, node) or []]
    assert bob_ids[-1] == "bob-only"
    assert await cached_items(daemon, "carol", service, node) == expected
    items, metadata = await daemon.xep_0060.get_items(daemon.get_client("carol"), service, node)
    assert metadata["cached"] is True
    assert [(i["id"], i.toXml()) for i in items] == expected
    found = await cache.management.search({"profiles": ["carol"], "nodes": [node]})
    assert sorted(r["item_id"] for r in found) == sorted(i for i, __ in expected)


@one_server
async def test_a_purge_filtered_on_one_profile_leaves_the_other_profile_cache_intact(
    daemon: Daemon, publisher: Publisher, xmpp_server: XMPPServer, fresh_node: Callable[..., str]
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    ids = await make_node(publisher, service, node, 5)
    cache = cache_of(daemon)
    store = cache.store_access.require()
    for profile in ("bob", "carol"):
        await synchronised(daemon, service, node, profile)
    expected = await server_items(publisher, service, node)

    assert await cache.management.purge({"profiles": ["bob"]}) == len(ids)
    bob_node = await store.get_node("bob", service.full(), node)
    carol_node = await store.get_node("carol", service.full(), node)
    assert bob_node is not None and carol_node is not None
    assert await store.count_items(bob_node.id) == 0
    assert bob_node.sync_state is not SyncState.COMPLETED
    assert await cached_items(daemon, "bob", service, node) is None
    assert await store.count_items(carol_node.id) == len(ids)
    assert carol_node.sync_state is SyncState.COMPLETED
    assert await cached_items(daemon, "carol", service, node) == expected

    # the same through the bridge, the other way round
    await synchronised(daemon, service, node, "bob")
    result = await daemon.bridge.dispatch("ps_cache_purge", {"filters": {"profiles": ["carol"]}})
    assert result == {"purged": len(ids)}
    assert await cached_items(daemon, "carol", service, node) is None
    assert await cached_items(daemon, "bob", service, node) == expected
    items, metadata = await daemon.xep_0060.get_items(daemon.get_client("bob"), service, node)
    assert metadata["cached"] is True and [(i["id"], i.toXml()) for i in items] == expected


# --- access control ----------------------------------------------------------------------


async def set_affiliation(
    publisher: Publisher, service: JID, node: str, jid: str, affiliation: str
) -> StanzaError | None:
    """Set one affiliation with a raw owner ``affiliations`` IQ; the error, if refused."""
    iq = xmlstream.IQ(publisher.xmlstream, "set")
    iq["to"] = service.full()
    affiliations = iq.addElement((NS_PUBSUB_OWNER, "pubsub")).addElement("affiliations")
    affiliations["node"] = node
    entry = affiliations.addElement("affiliation")
    entry["jid"] = jid
    entry["affiliation"] = affiliation
    try:
        await iq.send()
    except StanzaError as error:
        return error
    return None


#: how each server refuses a read of a whitelist node to a JID it does not list
REFUSAL = {"ejabberd": "not-allowed", "prosody": "forbidden", "libervia-pubsub": "forbidden"}


async def test_a_node_carol_may_not_read_is_never_answered_from_bob_cache(
    daemon: Daemon, publisher: Publisher, xmpp_server: XMPPServer, fresh_node: Callable[..., str]
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await make_node(publisher, service, node, 4, access_model="whitelist")
    # every server here takes a member affiliation set by the owner
    assert await set_affiliation(publisher, service, node, xmpp_server.jid("bob"), "member") is None
    cache = cache_of(daemon)
    store = cache.store_access.require()
    bob, carol = daemon.get_client("bob"), daemon.get_client("carol")
    await synchronised(daemon, service, node, "bob")
    expected = await server_items(publisher, service, node)
    items, metadata = await daemon.xep_0060.get_items(bob, service, node)
    assert metadata["cached"] is True and [(i["id"], i.toXml()) for i in items] == expected

    hits = cache.counters.hits
    for __ in range(2):  # the first read could have taught the cache something: ask twice
        with pytest.raises(StanzaError) as refused:
            await daemon.xep_0060.get_items(carol, service, node)
        assert refused.value.condition == REFUSAL[xmpp_server.kind]
    with pytest.raises(StanzaError):
        await daemon.xep_0060.get_items(carol, service, node, item_ids=[expected[0][0]])
    assert cache.counters.hits == hits
    assert await store.get_node("carol", service.full(), node) is None
    assert await cached_items(daemon, "carol", service, node) is None
    # and through the bridge: the server's refusal, never bob's items
    with pytest.raises(BridgeError) as bridge_refused:
        await daemon.bridge.dispatch(
            "ps_items_get", {"service": service.full(), "node": node, "profile": "carol"}
        )
    assert bridge_refused.value.kind == "server"
    with pytest.raises(BridgeError) as not_cached:
        await daemon.bridge.dispatch(
            "ps_cache_get", {"service": service.full(), "node": node, "profile": "carol"}
        )
    assert not_cached.value.kind == "not_cached"
    # an explicit sync by carol fails and leaves nothing served either
    sync = await synchronise(daemon, service, node, "carol")
    assert sync.outcome is not Outcome.COMPLETED and sync.error is not None, sync.outcome
    carol_node = await store.get_node("carol", service.full(), node)
    assert carol_node is None or carol_node.sync_state is not SyncState.COMPLETED
    with pytest.raises(StanzaError):
        await daemon.xep_0060.get_items(carol, service, node)


# --- foreign events ------------------------------------------------------------------------


def forged_items_event(
    sender: str, recipient: JID, node: str, published: list[str], retracted: list[str]
) -> pubsub.ItemsEvent:
    items = []
    for item_id in published:
        item = pubsub.Item(id=item_id, payload=parse_element(atom_entry(item_id, "forged")))
        items.append(item)
    for item_id in retracted:
        retract = domish.Element((pubsub.NS_PUBSUB_EVENT, "retract"))
        retract["id"] = item_id
        items.append(retract)
    return pubsub.ItemsEvent(JID(sender), recipient, node, items, {})


@one_server
async def test_events_from_another_sender_or_for_untracked_nodes_change_nothing(
    daemon: Daemon, publisher: Publisher, xmpp_server: XMPPServer, fresh_node: Callable[..., str]
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    ids = await make_node(publisher, service, node, 4)
    cache = cache_of(daemon)
    store = cache.store_access.require()
    bob = daemon.get_client("bob")
    await synchronised(daemon, service, node)
    applied = AppliedEvents(daemon)
    untracked = fresh_node(MICROBLOG)
    forged = [
        # another user, the server's domain, the user's own PEP service: not the node's service
        forged_items_event(xmpp_server.jid("mallory"), bob.jid, node, ["forged"], [ids[0]]),
        forged_items_event(xmpp_server.domain, bob.jid, node, ["forged"], [ids[1]]),
        forged_items_event(xmpp_server.jid("bob"), bob.jid, node, ["forged"], [ids[2]]),
        # the right service, but a node the cache does not track
        forged_items_event(service.full(), bob.jid, untracked, ["forged"], []),
    ]
    for event in forged:
        daemon.xep_0060.dispatch_event(bob, event)
    # events are applied one at a time in arrival order: once a real one that came
    # after is applied, the forged ones were handled
    waiting = applied.wait_for_items(node, ["real"], "the real publication")
    await publisher.publish(service, node, [("real", atom_entry("real", "real"))])
    await waiting
    assert not [e for e in applied.events if e in forged]
    expected = await server_items(publisher, service, node)
    assert [i for i, __ in expected] == [*ids, "real"]
    assert await cached_items(daemon, "bob", service, node) == expected
    assert await store.get_node("bob", service.full(), untracked) is None
    for other in (xmpp_server.jid("mallory"), xmpp_server.domain, xmpp_server.jid("bob")):
        assert await store.get_node("bob", other, node) is None
    assert await cache.management.search({"fts": "forged"}) == []


# --- owner-only files ----------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@one_server
def test_database_and_control_socket_are_created_owner_only_even_under_a_lax_umask(
    xmpp_server: XMPPServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path, xmpp_server)
    database = tmp_path / "data" / "libervia-cache" / "cache.db"
    socket = tmp_path / "run" / "libervia-cache" / "daemon.sock"
    text = config.read_text()
    text = text.replace(f"{tmp_path / 'cache.db'}", str(database))
    text = text.replace(f"socket = {tmp_path / 'daemon.sock'}", f"socket = {socket}")
    config.write_text(text)
    daemon = DaemonProcess(config)
    previous = os.umask(0)  # the child inherits it: only the daemon's own care protects
    try:
        daemon.start()
    finally:
        os.umask(previous)
    try:
        assert ControlClient(socket).call("ping") == "pong"
        assert stat.S_ISSOCK(socket.stat().st_mode)
        assert mode(socket) == 0o600
        assert mode(socket.parent) == 0o700
        assert mode(database.parent) == 0o700
        assert mode(database) == 0o600
        # SQLite's companions (WAL, shared memory) inherit the database file's mode
        companions = [p for p in database.parent.iterdir() if p != database]
        assert companions, "the database runs in WAL mode"
        for path in companions:
            assert mode(path) == 0o600, path
    finally:
        assert daemon.stop() == 0, daemon.log()
