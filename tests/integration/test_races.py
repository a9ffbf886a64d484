"""The cache never lies: purge, reset, sync and cancel racing each other, through the real
daemon against a real server.

Each test holds the race at the point where the cache used to go wrong (a sync page in
flight, a payload fetch in flight) with a :class:`NetworkGate` on the daemon's real
network path, acts (reset, purge, a second sync...), lets the world go on, and checks
that whatever the cache answers as ``cached`` equals what the server answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID
from tx_xmpp import pubsub

from libervia_cache.backend.daemon import Daemon
from libervia_cache.errors import BridgeError
from libervia_cache.plugin.sync import Outcome
from libervia_cache.storage import SyncState
from tests.conftest import run
from tests.harness.daemon import AppliedEvents, atom_entry, cache_of, start_daemon, sync_of
from tests.harness.faults import fill, locked_by_another_process, small_tmpfs
from tests.harness.gates import NetworkGate
from tests.integration.conftest import SERVER_CLASSES, server_kinds
from tests.servers.base import XMPPServer
from tests.servers.publisher import Publisher

MICROBLOG = "urn:xmpp:microblog:0"


@pytest.fixture
def make_daemon(xmpp_server: XMPPServer, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``await make_daemon(profiles=..., **options)``: an in-process daemon, stopped after."""
    started: list[Daemon] = []

    async def make(profiles: tuple[str, ...] = ("bob",), **options: Any) -> Daemon:
        daemon = await start_daemon(tmp_path, xmpp_server, profiles=profiles, **options)
        daemon.test_server_keys_are_ids = xmpp_server.quirks["rsm_keys_are_item_ids"]  # type: ignore[attr-defined]
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        run(daemon.stop())


def page(server: XMPPServer, wanted: int) -> int:
    """The page of a sync to hold: ``wanted``, or the only one a server without RSM sends
    (Prosody answers the whole node at once)."""
    return wanted if server.quirks["rsm"] else 1


async def make_node(
    publisher: Publisher, service: JID, node: str, count: int, prefix: str = "i"
) -> list[str]:
    await publisher.create_node(
        service, node, {"pubsub#access_model": "open", "pubsub#max_items": "max"}
    )
    ids = [f"{prefix}{n:03d}" for n in range(count)]
    await publisher.publish(service, node, [(i, atom_entry(i, i)) for i in ids])
    return ids


def _comparable(items: list[Any], metadata: dict[str, Any]) -> Any:
    # items and the RSM count and index: what these race tests are about (RSM keys are
    # compared by the fidelity tests: ejabberd's are timestamps)
    rsm = metadata.get("rsm") or {}
    return [i.toXml() for i in items], rsm.get("count"), rsm.get("index")


async def server_answer(
    daemon: Daemon, profile: str, service: JID, node: str, **request: Any
) -> Any:
    """What the server answers ``profile``'s request, through the daemon."""
    items, metadata = await daemon.xep_0060.get_items_from_network(
        daemon.get_client(profile), service, node, **request
    )
    return _comparable(items, metadata)


async def cached_answer(
    daemon: Daemon, profile: str, service: JID, node: str, **request: Any
) -> Any:
    """What the cache answers (None: it does not). An answer carrying RSM data needs the
    server's keys of its ends: where they are the server's own (ejabberd), a request the
    cache cannot answer yet is asked once through the transparent path (the cache learns
    them), then asked of the cache again."""
    cache, client = cache_of(daemon), daemon.get_client(profile)
    answer = await cache.get_items_from_cache(client, service, node, **request)
    if answer is None and request and not _keys_are_ids(daemon):
        await daemon.xep_0060.get_items(client, service, node, **request)
        answer = await cache.get_items_from_cache(client, service, node, **request)
    return None if answer is None else _comparable(*answer)


def _keys_are_ids(daemon: Daemon) -> bool:
    return bool(getattr(daemon, "test_server_keys_are_ids", True))


async def wait_synced(daemon: Daemon, profile: str, service: JID, node: str) -> Any:
    """Read the node until its (re)sync has run; the NodeSync that ran, or None."""
    await daemon.xep_0060.get_items(daemon.get_client(profile), service, node)
    sync = sync_of(daemon, service, node, profile)
    if sync is not None:
        await sync.wait()
    return sync


# --- 1. node identity after a reset --------------------------------------------------------


async def test_a_sync_held_across_a_reset_never_writes_into_the_node_that_follows(
    make_daemon: Callable[..., Any],
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
) -> None:
    """bob's sync holds its second page while the cache is reset and carol syncs her own
    node (the first node created after the reset): bob's page must not land in it."""
    service = JID(xmpp_server.pubsub_service)
    bobs, carols = fresh_node(MICROBLOG), fresh_node(MICROBLOG)
    await make_node(publisher, service, bobs, 12, prefix="bob-")
    await make_node(publisher, service, carols, 3, prefix="carol-")
    daemon = await make_daemon(profiles=("bob", "carol"), sync_page_size=5)
    cache = cache_of(daemon)
    gate = NetworkGate(daemon.xep_0060, "page", at=page(xmpp_server, 2), node=bobs)
    await daemon.xep_0060.get_items(daemon.get_client("bob"), service, bobs)
    await gate.reached
    bobs_sync = sync_of(daemon, service, bobs)
    assert bobs_sync is not None
    await cache.management.reset()
    assert bobs_sync.outcome is Outcome.CANCELLED
    # carol's node is the first created after the reset
    assert await wait_synced(daemon, "carol", service, carols) is not None
    gate.remove()  # bob's held page goes on, to a sync that no longer owns anything
    await bobs_sync.wait()
    assert await cached_answer(daemon, "carol", service, carols) == await server_answer(
        daemon, "carol", service, carols
    )
    carol_node = await cache.store_access.require().get_node("carol", service.full(), carols)
    assert carol_node is not None
    assert await cache.store_access.require().count_items(carol_node.id) == 3
    # bob's node is synced again from scratch by his next read, and answers right
    await wait_synced(daemon, "bob", service, bobs)
    assert await cached_answer(daemon, "bob", service, bobs) == await server_answer(
        daemon, "bob", service, bobs
    )


# --- 2. purge during a sync ----------------------------------------------------------------


async def test_a_purge_during_a_sync_never_leaves_a_partial_node_served_as_complete(
    make_daemon: Callable[..., Any],
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await make_node(publisher, service, node, 23)
    daemon = await make_daemon(sync_page_size=5)
    cache = cache_of(daemon)
    gate = NetworkGate(daemon.xep_0060, "page", at=page(xmpp_server, 3), node=node)
    await daemon.xep_0060.get_items(daemon.get_client("bob"), service, node)
    await gate.reached  # two pages stored, the third held (without RSM: the only page)
    first = sync_of(daemon, service, node)
    assert first is not None
    purged = await cache.management.purge({"nodes": [node]})
    if xmpp_server.quirks["rsm"]:
        assert purged == 10
        assert first.ended and first.outcome is Outcome.CANCELLED
        node_info = await cache.store_access.require().get_node("bob", service.full(), node)
        assert node_info is not None and node_info.sync_state is None
    else:
        assert purged == 0  # nothing stored yet: the sync goes on, and completes
    assert await cached_answer(daemon, "bob", service, node) is None
    gate.remove()
    # the next read synchronises it again, completely
    assert await wait_synced(daemon, "bob", service, node) is not None
    for request in ({}, {"max_items": 3}, {"rsm_request": _rsm(7, before="")}):
        assert await cached_answer(daemon, "bob", service, node, **request) == await server_answer(
            daemon, "bob", service, node, **request
        ), request


def _rsm(max_: int, **anchors: Any) -> Any:
    from tx_xmpp import rsm

    return rsm.RSMRequest(max_=max_, **anchors)


# --- 3. cancelled syncs and the write lock ------------------------------------------------


async def test_syncs_cancelled_mid_write_leave_the_database_writable(
    make_daemon: Callable[..., Any],
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
) -> None:
    """Resets and new syncs hit a sync at every point of its pages: afterwards every write
    (an event, a sync, a reset) goes through at once."""
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await make_node(publisher, service, node, 30)
    daemon = await make_daemon(sync_page_size=3)
    cache = cache_of(daemon)
    client = daemon.get_client("bob")
    for held in range(1, 8):
        gate = NetworkGate(daemon.xep_0060, "page", at=page(xmpp_server, held), node=node)
        await daemon.xep_0060.get_items(client, service, node)
        await gate.reached
        gate.release()  # the page goes to the store while the reset comes
        await cache.management.reset()
        gate.remove()
    applied = AppliedEvents(daemon)
    assert await wait_synced(daemon, "bob", service, node) is not None
    await publisher.publish(service, node, [("late", atom_entry("late", "late"))])
    await applied.wait_for_items(node, ["late"], "late")
    assert await cached_answer(daemon, "bob", service, node) == await server_answer(
        daemon, "bob", service, node
    )
    assert await cache.management.reset() == (1, 31)


async def test_a_second_sync_request_follows_the_running_sync(
    make_daemon: Callable[..., Any],
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await make_node(publisher, service, node, 12)
    daemon = await make_daemon(sync_page_size=4)
    cache = cache_of(daemon)
    client = daemon.get_client("bob")
    gate = NetworkGate(daemon.xep_0060, "page", at=page(xmpp_server, 2), node=node)
    first = await cache.management.synchronise(client, service, node)
    await gate.reached
    second = await cache.management.synchronise(client, service, node)
    assert second is first and cache.counters.syncs_started == 1
    gate.remove()
    await second.wait()
    assert second.outcome is Outcome.COMPLETED
    assert await cached_answer(daemon, "bob", service, node) == await server_answer(
        daemon, "bob", service, node
    )


# --- 4. an event that cannot be stored ------------------------------------------------------


@pytest.fixture
def quick_lock_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer gives up on a locked database after 1 s, not 30."""
    from libervia_cache.storage import engine

    monkeypatch.setattr(engine, "BUSY_TIMEOUT", 1.0)


async def test_an_event_the_store_cannot_take_holds_its_node_until_synced_again(
    make_daemon: Callable[..., Any],
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
    tmp_path: Path,
    quick_lock_timeout: None,
) -> None:
    """Another process holds the database's write lock while an event arrives: the node
    is never served stale, not while locked, not once the lock is gone; it is synced
    again instead."""
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await make_node(publisher, service, node, 5)
    daemon = await make_daemon()
    cache = cache_of(daemon)
    applied = AppliedEvents(daemon)
    assert await wait_synced(daemon, "bob", service, node) is not None
    node_info = await cache.store_access.require().get_node("bob", service.full(), node)
    assert node_info is not None
    with locked_by_another_process(tmp_path / "cache.db"):
        await publisher.publish(service, node, [("while-locked", atom_entry("l", "l"))])
        await applied.wait_for_items(node, ["while-locked"], "while-locked")
        assert cache.holds.reason("bob", node_info.id) is not None
        assert await cached_answer(daemon, "bob", service, node) is None
        items, metadata = await daemon.xep_0060.get_items(daemon.get_client("bob"), service, node)
        assert metadata["cached"] is False and items[-1]["id"] == "while-locked"
        sync = sync_of(daemon, service, node)
        if sync is not None:
            await sync.wait()  # fails: still locked
        assert await cached_answer(daemon, "bob", service, node) is None
    assert await wait_synced(daemon, "bob", service, node) is not None
    assert await cached_answer(daemon, "bob", service, node) == await server_answer(
        daemon, "bob", service, node
    )


async def test_a_disk_full_while_events_arrive_never_leaves_a_stale_node_served(
    make_daemon: Callable[..., Any],
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
    tmp_path: Path,
) -> None:
    """The disk fills up: events are published until one cannot be stored (SQLite first
    uses the free pages it has), and from then on the node is not served until it was
    synced again, once space is back."""
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await make_node(publisher, service, node, 5)
    with small_tmpfs(tmp_path / "data", "16m") as data:
        daemon = await make_daemon(database=data / "cache.db")
        try:
            cache = cache_of(daemon)
            applied = AppliedEvents(daemon)
            assert await wait_synced(daemon, "bob", service, node) is not None
            node_info = await cache.store_access.require().get_node("bob", service.full(), node)
            assert node_info is not None
            filler = fill(data)
            for n in range(80):  # 80 items of 100 KB: more than any free space SQLite has
                item_id = f"full-{n:02d}"
                await publisher.publish(
                    service, node, [(item_id, atom_entry(item_id, "x" * 100_000))]
                )
                await applied.wait_for_items(node, [item_id], item_id)
                if cache.holds.reason("bob", node_info.id) is not None:
                    break
                # stored: then the cache answers exactly the server
                assert await cached_answer(daemon, "bob", service, node) == await server_answer(
                    daemon, "bob", service, node
                )
            else:
                raise AssertionError("no event failed to be stored on a full disk")
            assert await cached_answer(daemon, "bob", service, node) is None
            sync = sync_of(daemon, service, node)
            if sync is not None:
                await sync.wait()  # fails: the disk is still full
            assert await cached_answer(daemon, "bob", service, node) is None
            filler.unlink()
            assert await wait_synced(daemon, "bob", service, node) is not None
            assert await cached_answer(daemon, "bob", service, node) == await server_answer(
                daemon, "bob", service, node
            )
        finally:
            await daemon.stop()


# --- 5. an item too deep to store ----------------------------------------------------------


@pytest.mark.parametrize(
    "xmpp_server",
    [k for k in server_kinds() if SERVER_CLASSES[k].quirks["deep_items_relayed"]],
    indirect=True,
)
async def test_an_item_nested_too_deeply_never_leaves_its_node_served_and_reads_say_why(
    make_daemon: Callable[..., Any],
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await make_node(publisher, service, node, 3)
    daemon = await make_daemon()
    cache = cache_of(daemon)
    applied = AppliedEvents(daemon)
    assert await wait_synced(daemon, "bob", service, node) is not None
    depth = 1500
    deep = "<a xmlns='urn:example:deep'>" * depth + "</a>" * depth
    # sent as text: the publisher's own serialiser cannot write it either
    await publish_raw(publisher, service, node, f"<item id='deep'>{deep}</item>")
    await applied.wait_for_items(node, ["deep"], "deep")
    assert await cached_answer(daemon, "bob", service, node) is None
    sync = sync_of(daemon, service, node)
    if sync is not None:
        await sync.wait()
    node_info = await cache.store_access.require().get_node("bob", service.full(), node)
    assert node_info is not None and node_info.sync_state is SyncState.ERROR
    assert node_info.sync_error is not None and "'deep' is nested more than" in node_info.sync_error
    # the transparent read through the bridge: a one-line error, not an internal one
    with pytest.raises(BridgeError) as raised:
        await daemon.bridge.dispatch("ps_items_get", {"service": service.full(), "node": node})
    assert raised.value.kind == "bad_request"
    assert "nested too deeply" in raised.value.message


async def publish_raw(publisher: Publisher, service: JID, node: str, item_xml: str) -> None:
    """Publish an item given as XML text; fails on an error answer."""
    from twisted.words.xish import domish

    stanza_id = f"raw-{node}"
    answered: defer.Deferred[domish.Element] = defer.Deferred()
    publisher.xmlstream.addOnetimeObserver(f"/iq[@id='{stanza_id}']", answered.callback)
    publisher.xmlstream.send(
        f"<iq type='set' to='{service.full()}' id='{stanza_id}'>"
        f"<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'>"
        f"{item_xml}</publish></pubsub></iq>"
    )
    answer = await answered
    assert answer["type"] == "result", answer.toXml()


# --- 6. a payload that cannot be fetched -------------------------------------------------


async def test_a_payload_fetch_that_fails_holds_its_node_and_no_other(
    make_daemon: Callable[..., Any],
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
) -> None:
    """A node notifying without payloads: while the fetch of a payload hangs, another
    node's events are applied; when it fails, the empty item is never served."""
    service = JID(xmpp_server.pubsub_service)
    bare, other = fresh_node(MICROBLOG), fresh_node(MICROBLOG)
    await make_node(publisher, service, bare, 3)
    await publisher.configure(service, bare, {"pubsub#deliver_payloads": "0"})
    await make_node(publisher, service, other, 3)
    daemon = await make_daemon()
    applied = AppliedEvents(daemon)
    for node in (bare, other):
        assert await wait_synced(daemon, "bob", service, node) is not None
    gate = NetworkGate(daemon.xep_0060, "payload", node=bare, fail_with=defer.TimeoutError())
    try:
        await publisher.publish(service, bare, [("no-payload", atom_entry("n", "n"))])
        await gate.reached  # the payload fetch of `bare` hangs...
        await publisher.publish(service, other, [("meanwhile", atom_entry("m", "m"))])
        # ... `other` does not wait for it
        await applied.wait_for_items(other, ["meanwhile"], "meanwhile")
        assert await cached_answer(daemon, "bob", service, other) == await server_answer(
            daemon, "bob", service, other
        )
        node_info = (
            await cache_of(daemon).store_access.require().get_node("bob", service.full(), bare)
        )
        assert node_info is not None
        gate.release()  # the fetch fails
        await applied.wait_for_items(bare, ["no-payload"], "no-payload")
        # the node is held, or already synchronised again: never the empty item
        held = cache_of(daemon).holds.reason("bob", node_info.id)
        resync = sync_of(daemon, service, bare)
        assert (
            held is not None
            or resync is not None
            or await cached_answer(daemon, "bob", service, bare)
            == await server_answer(daemon, "bob", service, bare)
        )
    finally:
        gate.remove()
    await wait_synced(daemon, "bob", service, bare)
    answer = await cached_answer(daemon, "bob", service, bare)
    assert answer == await server_answer(daemon, "bob", service, bare)
    assert "<entry" in answer[0][-1]


# --- 7. a node deleted during its sync ------------------------------------------------------


async def test_a_node_deleted_during_its_sync_is_cached_again_once_recreated(
    make_daemon: Callable[..., Any],
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await make_node(publisher, service, node, 12)
    daemon = await make_daemon(sync_page_size=5)
    cache = cache_of(daemon)
    applied = AppliedEvents(daemon)
    gate = NetworkGate(daemon.xep_0060, "page", at=page(xmpp_server, 2), node=node)
    await daemon.xep_0060.get_items(daemon.get_client("bob"), service, node)
    await gate.reached
    sync = sync_of(daemon, service, node)
    assert sync is not None
    await publisher.delete_node(service, node)
    gate.remove()  # the sync's next page finds the node gone
    await sync.wait()
    await applied.wait(lambda: applied.count(node, pubsub.DeleteEvent) == 1, "the deletion")
    assert sync.outcome in (Outcome.CANCELLED, Outcome.FAILED)
    # the node is forgotten, not left in ERROR: once it exists again, it is synced like
    # any new node
    store = cache.store_access.require()
    assert await store.get_node("bob", service.full(), node) is None
    await make_node(publisher, service, node, 4, prefix="again-")
    assert await wait_synced(daemon, "bob", service, node) is not None
    assert await cached_answer(daemon, "bob", service, node) == await server_answer(
        daemon, "bob", service, node
    )


# --- 8. cache-get right after a restart -----------------------------------------------------


async def test_cache_get_right_after_a_restart_never_answers_what_changed_meanwhile(
    make_daemon: Callable[..., Any],
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await make_node(publisher, service, node, 4)
    daemon = await make_daemon()
    assert await wait_synced(daemon, "bob", service, node) is not None
    await daemon.stop()
    await publisher.publish(service, node, [("while-down", atom_entry("d", "d"))])
    daemon = await make_daemon()  # the same database
    request = {"service": service.full(), "node": node}
    try:
        answer = await daemon.bridge.dispatch("ps_cache_get", request)
    except BridgeError as error:
        assert error.kind == "not_cached", error  # held until checked
    else:  # checked already: then it is the fresh node
        assert [i for i in answer["items"] if "while-down" in i]
    await cache_of(daemon).freshness.checks
    await wait_synced(daemon, "bob", service, node)
    answer = await daemon.bridge.dispatch("ps_cache_get", request)
    server_items, __, __ = await server_answer(daemon, "bob", service, node)
    assert answer["items"] == server_items


# --- 9. the cache limit and events -----------------------------------------------------------


async def test_events_never_make_a_node_hold_more_than_the_cache_limit(
    make_daemon: Callable[..., Any],
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await make_node(publisher, service, node, 5)
    daemon = await make_daemon(cache_limit=10)
    cache = cache_of(daemon)
    applied = AppliedEvents(daemon)
    assert await wait_synced(daemon, "bob", service, node) is not None
    new = [(f"new-{n:02d}", atom_entry(f"n{n}", f"n{n}")) for n in range(30)]
    await publisher.publish(service, node, new, depth=1)
    await applied.wait_for_items(node, ["new-29"], "new-29")
    store = cache.store_access.require()
    node_info = await store.get_node("bob", service.full(), node)
    assert node_info is not None and node_info.truncated
    assert await store.count_items(node_info.id) == 10
    if xmpp_server.quirks["max_items_rsm"]:
        # ejabberd counts every item of the node in a max_items answer: the cache, which
        # holds 10, only answers the items it holds by id
        assert await cached_answer(daemon, "bob", service, node, max_items=10) is None
        held = [f"new-{n:02d}" for n in range(20, 30)]
        assert await cached_answer(
            daemon, "bob", service, node, item_ids=held
        ) == await server_answer(daemon, "bob", service, node, item_ids=held)
    else:
        assert await cached_answer(
            daemon, "bob", service, node, max_items=10
        ) == await server_answer(daemon, "bob", service, node, max_items=10)
    assert await cached_answer(daemon, "bob", service, node) is None  # all 35: not held


# --- 11. badly typed bridge parameters ------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "part"),
    [
        ({"max_items": "abc"}, "max_items"),
        ({"node": None}, "node"),
        ({"item_ids": "abc"}, "item_ids"),
        ({"rsm": {"max": 5, "index": -1}}, "rsm.index"),
        ({"rsm": {"max": "ten"}}, "rsm.max"),
        ({"use_cache": "no"}, "use_cache"),
    ],
)
async def test_badly_typed_read_parameters_are_bad_requests_naming_them(
    make_daemon: Callable[..., Any],
    xmpp_server: XMPPServer,
    params: dict[str, Any],
    part: str,
) -> None:
    daemon = await make_daemon()
    request = {"service": xmpp_server.pubsub_service, "node": "n", **params}
    for method in ("ps_items_get", "ps_cache_get"):
        if method == "ps_cache_get" and "use_cache" in params:
            continue
        with pytest.raises(BridgeError) as raised:
            await daemon.bridge.dispatch(method, request)
        assert raised.value.kind == "bad_request", raised.value
        assert raised.value.message.startswith(f"{part}:"), raised.value.message


async def test_max_items_zero_is_answered_as_the_server_does(
    make_daemon: Callable[..., Any],
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await make_node(publisher, service, node, 4)
    daemon = await make_daemon()
    assert await wait_synced(daemon, "bob", service, node) is not None
    answer = await daemon.bridge.dispatch(
        "ps_items_get", {"service": service.full(), "node": node, "max_items": 0}
    )
    server_items, __, __ = await server_answer(daemon, "bob", service, node, max_items=0)
    assert answer["items"] == server_items


async def test_a_sync_cancelled_while_subscribing_records_no_subscription_failure(
    make_daemon: Callable[..., Any],
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await make_node(publisher, service, node, 4)
    daemon = await make_daemon()
    cache = cache_of(daemon)
    gate = NetworkGate(daemon.xep_0060, "subscribe", node=node)
    sync = await cache.management.synchronise(daemon.get_client("bob"), service, node)
    await gate.reached
    await cache.syncs.cancel_and_wait([sync.key])
    gate.remove()
    assert sync.outcome is Outcome.CANCELLED
    assert "could not subscribe" not in caplog.text
    node_info = await cache.store_access.require().get_node("bob", service.full(), node)
    assert node_info is not None and node_info.sync_state is SyncState.IN_PROGRESS
