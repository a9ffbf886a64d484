"""Database faults: locked by another process, read-only, full, corrupt. The daemon keeps
answering (from the network when it must), says what is wrong with the cache, never
serves a node it could not finish writing, and loses nothing once the problem is gone.

Filesystem faults use a small tmpfs mounted in the test's directory (``mount`` needs
root, which the CI has); everything mounted is unmounted in a ``finally``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from twisted.internet import defer, reactor
from twisted.words.protocols.jabber.jid import JID

from libervia_cache.backend.daemon import Daemon
from libervia_cache.hostapi import Client
from libervia_cache.plugin import PubsubCache
from libervia_cache.plugin import store_access as store_access_module
from libervia_cache.plugin.sync import NodeSync, Outcome
from libervia_cache.storage import SyncState
from libervia_cache.storage import engine as engine_module
from tests.harness.daemon import atom_entry, cache_of
from tests.harness.daemon import synced as sync_ended
from tests.harness.faults import fill, locked_by_another_process, mount, small_tmpfs
from tests.harness.gates import NetworkGate
from tests.integration.conftest import DaemonFactory, server_kinds, synchronise, synchronised
from tests.integration.test_sync_lifecycle import assert_cache_equals_server
from tests.servers.base import XMPPServer
from tests.servers.publisher import Publisher

MICROBLOG = "urn:xmpp:microblog:0"

#: the server does not matter to these tests: run them against one kind only
pytestmark = pytest.mark.parametrize("xmpp_server", server_kinds()[:1], indirect=True)

CONDITION_TIMEOUT = 30.0


@pytest.fixture(autouse=True)
def quick_database_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer gives up on a locked database after 1 s (not 30), and a database that
    could not be opened is retried after 0.2 s (not 5): the tests wait less."""
    monkeypatch.setattr(engine_module, "BUSY_TIMEOUT", 1.0)
    monkeypatch.setattr(store_access_module, "FIRST_REOPEN_DELAY", 0.2)
    monkeypatch.setattr(store_access_module, "MAX_REOPEN_DELAY", 0.5)


@pytest.fixture
def log_text(caplog: pytest.LogCaptureFixture) -> Callable[[], str]:
    caplog.set_level(logging.INFO, logger="libervia_cache")
    return lambda: caplog.text


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` on the reactor (not blocking it) until it holds."""
    deadline = reactor.seconds() + CONDITION_TIMEOUT  # type: ignore[attr-defined]
    while not condition():
        if reactor.seconds() > deadline:  # type: ignore[attr-defined]
            raise AssertionError(f"timed out after {CONDITION_TIMEOUT:g} s waiting for {what}")
        await deferLater(0.05)


def deferLater(seconds: float) -> defer.Deferred[None]:
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)


async def make_node(
    publisher: Publisher, service: JID, node: str, count: int, content: str = ""
) -> list[str]:
    await publisher.create_node(service, node, {"pubsub#access_model": "open"})
    ids = [f"i{n:03d}" for n in range(count)]
    # one at a time: the ids are returned in the server's order (libervia-pubsub may
    # commit pipelined neighbours in another order)
    await publisher.publish(service, node, [(i, atom_entry(i, i, content)) for i in ids], depth=1)
    return ids


async def server_ids(publisher: Publisher, service: JID, node: str) -> list[str]:
    return [i["id"] for i in await publisher.get_all_items(service, node)]


# --- locked ------------------------------------------------------------------------------


async def assert_failed_and_not_served(
    cache: PubsubCache,
    client: Client,
    sync: NodeSync,
    service: JID,
    node: str,
    log: str,
    reason: str,
) -> None:
    """The sync of ``node`` failed with ``reason`` in the log, and is never served."""
    assert sync.outcome in (Outcome.FAILED, Outcome.RETRY), (sync.outcome, sync.error)
    assert f"synchronisation of node {node} on {service.full()} failed" in log
    assert reason in log
    node_info = await cache.store_access.require().get_node("bob", service.full(), node)
    assert node_info is not None and node_info.sync_state is not SyncState.COMPLETED
    assert await cache.get_items_from_cache(client, service, node) is None


@pytest.mark.daemon_options(sync_page_size=3)
async def test_a_locked_database_fails_syncs_clearly_keeps_serving_reads_and_loses_nothing(
    daemon: Daemon,
    xmpp_server: XMPPServer,
    publisher: Publisher,
    tmp_path: Path,
    fresh_node: Callable[..., str],
    log_text: Callable[[], str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    synced, unsynced = fresh_node(MICROBLOG), fresh_node(MICROBLOG)
    synced_ids = await make_node(publisher, service, synced, 5)
    unsynced_ids = await make_node(publisher, service, unsynced, 8)
    cache = cache_of(daemon)
    assert cache.store_access.store is not None
    bob = daemon.get_client("bob")
    await synchronised(daemon, service, synced)
    # a second sync stops after its first page (fetched, not stored) ...
    gate = NetworkGate(daemon.xep_0060, "page", at=1)
    sync = await cache.management.synchronise(bob, service, unsynced)
    await gate.reached
    with locked_by_another_process(tmp_path / "cache.db"):
        # ... and goes on with the database locked: it cannot write its pages
        gate.release()
        await sync.wait()
        gate.remove()
        await assert_failed_and_not_served(
            cache, bob, sync, service, unsynced, log_text(), "database is locked"
        )
        # reads go on: the synced node from the cache, the other from the network
        items, metadata = await daemon.xep_0060.get_items(bob, service, synced)
        assert metadata["cached"] is True and [i["id"] for i in items] == synced_ids
        items, metadata = await daemon.xep_0060.get_items(bob, service, unsynced)
        assert metadata["cached"] is False and [i["id"] for i in items] == unsynced_ids
        status = await daemon.bridge.dispatch("ps_cache_status", {})
        states = {row["node"]: row["state"] for row in status["nodes"]}
        assert states[synced] == "COMPLETED" and states[unsynced] != "COMPLETED"
    # the lock is gone: an explicit sync works, and what was cached before is intact
    await sync_ended(daemon, service, unsynced)  # one a read started while it was locked
    await synchronised(daemon, service, unsynced)
    await assert_cache_equals_server(daemon, publisher, service, unsynced)
    await assert_cache_equals_server(daemon, publisher, service, synced)


# --- read-only, full -----------------------------------------------------------------------


async def test_a_read_only_database_sends_reads_to_the_network_until_it_is_writable_again(
    make_daemon: DaemonFactory,
    xmpp_server: XMPPServer,
    publisher: Publisher,
    tmp_path: Path,
    fresh_node: Callable[..., str],
    log_text: Callable[[], str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    synced, unsynced = fresh_node(MICROBLOG), fresh_node(MICROBLOG)
    synced_ids = await make_node(publisher, service, synced, 6)
    unsynced_ids = await make_node(publisher, service, unsynced, 4)
    with small_tmpfs(tmp_path / "data", "8m") as data:
        daemon = await make_daemon(database=data / "cache.db")
        try:
            synced_info = await synchronised(daemon, service, synced)
        finally:
            await make_daemon.stop(daemon)
        # Linux refuses to remount read-only a filesystem where a file is open for
        # writing (EBUSY): the database goes read-only while no daemon holds it open
        mount("-o", "remount,ro", str(data))
        daemon = await make_daemon(database=data / "cache.db")
        try:
            cache = cache_of(daemon)
            access = cache.store_access
            bob = daemon.get_client("bob")
            assert access.unavailable_reason is not None
            assert "cannot be opened" in access.unavailable_reason
            assert "readonly" in access.unavailable_reason or "unable to open" in (
                access.unavailable_reason
            ), access.unavailable_reason
            assert access.unavailable_reason in log_text()
            # the status says why, and what it can still say (the counters)
            status = await daemon.bridge.dispatch("ps_cache_status", {})
            assert status["nodes"] == [] and status["database"]["open"] is False
            assert status["database"]["unavailable"] == access.unavailable_reason
            for node, ids in ((synced, synced_ids), (unsynced, unsynced_ids)):
                items, metadata = await daemon.xep_0060.get_items(bob, service, node)
                assert metadata["cached"] is False and [i["id"] for i in items] == ids
            with pytest.raises(Exception, match="cache"):
                await synchronise(daemon, service, unsynced)
            # writable again: the cache opens by itself, with what it held
            mount("-o", "remount,rw", str(data))
            await wait_for(lambda: access.unavailable_reason is None, "the cache to reopen")
            assert "the cache database is open again" in log_text()
            # events sent while it was closed are lost: a synced node waits for its check
            await wait_for(
                lambda: cache.holds.reason("bob", synced_info.id) is None,
                "the check of the synced node",
            )
            items, metadata = await daemon.xep_0060.get_items(bob, service, synced)
            assert metadata["cached"] is True and [i["id"] for i in items] == synced_ids
            await assert_cache_equals_server(daemon, publisher, service, synced)
            await synchronised(daemon, service, unsynced)
            await assert_cache_equals_server(daemon, publisher, service, unsynced)
        finally:
            # before the tmpfs goes
            await make_daemon.stop(daemon)


async def test_a_full_disk_fails_syncs_clearly_keeps_serving_and_loses_nothing_once_space_is_back(
    make_daemon: DaemonFactory,
    xmpp_server: XMPPServer,
    publisher: Publisher,
    tmp_path: Path,
    fresh_node: Callable[..., str],
    log_text: Callable[[], str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    synced, big = fresh_node(MICROBLOG), fresh_node(MICROBLOG)
    synced_ids = await make_node(publisher, service, synced, 6)
    # far more than the free pages the database and its WAL may hold
    big_ids = await make_node(publisher, service, big, 60, content="x" * 8000)
    with small_tmpfs(tmp_path / "data", "16m") as data:
        daemon = await make_daemon(database=data / "cache.db", sync_page_size=10)
        try:
            cache = cache_of(daemon)
            assert cache.store_access.store is not None
            bob = daemon.get_client("bob")
            await synchronised(daemon, service, synced)
            # the big node's sync has its node recorded and its first page fetched ...
            gate = NetworkGate(daemon.xep_0060, "page", at=1)
            sync = await cache.management.synchronise(bob, service, big)
            await gate.reached
            # ... when the disk fills up
            filler = fill(data)
            gate.release()
            await sync.wait()
            gate.remove()
            await assert_failed_and_not_served(
                cache, bob, sync, service, big, log_text(), "database or disk is full"
            )
            items, metadata = await daemon.xep_0060.get_items(bob, service, big)
            assert metadata["cached"] is False and [i["id"] for i in items] == big_ids
            items, metadata = await daemon.xep_0060.get_items(bob, service, synced)
            assert metadata["cached"] is True and [i["id"] for i in items] == synced_ids
            await sync_ended(daemon, service, big)  # the read may redo it
            # space is back: nothing was lost, and the big node can be synchronised
            filler.unlink()
            await assert_cache_equals_server(daemon, publisher, service, synced)
            await synchronised(daemon, service, big)
            await assert_cache_equals_server(daemon, publisher, service, big)
        finally:
            # before the tmpfs goes
            await make_daemon.stop(daemon)


# --- corrupt -------------------------------------------------------------------------------


async def test_a_corrupt_database_is_reported_left_in_place_and_reads_go_to_the_network(
    make_daemon: DaemonFactory,
    xmpp_server: XMPPServer,
    publisher: Publisher,
    tmp_path: Path,
    fresh_node: Callable[..., str],
    log_text: Callable[[], str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    ids = await make_node(publisher, service, node, 5)
    daemon = await make_daemon()
    await synchronised(daemon, service, node)
    await make_daemon.stop(daemon)
    database = tmp_path / "cache.db"
    garbage = bytes(range(256)) * (database.stat().st_size // 256 + 1)
    database.write_bytes(garbage)

    daemon = await make_daemon()
    access = cache_of(daemon).store_access
    assert access.store is None
    assert access.unavailable_reason is not None
    assert "cannot be opened" in access.unavailable_reason
    assert "file is not a database" in access.unavailable_reason
    assert access.unavailable_reason in log_text()
    bob = daemon.get_client("bob")
    for __ in range(2):  # a second read does not sync from a cache it cannot open
        items, metadata = await daemon.xep_0060.get_items(bob, service, node)
        assert metadata["cached"] is False and [i["id"] for i in items] == ids
    status = await daemon.bridge.dispatch("ps_cache_status", {})
    assert status["nodes"] == [] and status["database"]["open"] is False
    assert "file is not a database" in status["database"]["unavailable"]
    assert status["counters"]["miss_reasons"] == {"cache unavailable": 2}
    # the retries (every MAX_REOPEN_DELAY here) leave the file as it was
    await wait_for(lambda: log_text().count("cache database cannot be opened") >= 3, "retries")
    assert "Traceback" not in log_text()  # a known failure, said in one line each time
    assert database.read_bytes() == garbage
    await make_daemon.stop(daemon)
    assert database.read_bytes() == garbage
