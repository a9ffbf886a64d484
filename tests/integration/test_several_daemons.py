"""Several ``libervia-cache daemon`` processes on one PostgreSQL database, against the
session's real XMPP server, seen through the CLI as a user would see them.

- each daemon serves its own profiles: their nodes are synced and served from the
  cache by the daemon that serves them, and one profile's copy of a node is not
  another's (a cut by one daemon's ``cache_limit``, a purge by another daemon);
- a daemon configured with a profile another daemon serves refuses it (one line, in
  the commands' errors and in ``status``), reads it from the network, and keeps
  refusing it until restarted; a daemon started once the first one stopped takes it;
- two daemons asked to sync one node at once: one refuses, the other syncs it once;
- a daemon killed with SIGKILL in the middle of a sync leaves the node to the next
  daemon serving the profile, which redoes it; the node is never served partial.

Each test has a throwaway database of its own on the PostgreSQL server of
:mod:`tests.harness.databases` (dropped at its end; unreachable: skipped, failed in CI).
A sync is held in the middle (:class:`NodeRowHold`) by locking its node's row in the
database, which every write of a node does first: the daemon waits, the test acts.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.words.protocols.jabber.jid import JID

from libervia_cache.control import ControlClient
from libervia_cache.plugin.xml import parse_element
from libervia_cache.storage.leases import CLAIM_WAIT, lease_key
from tests.harness.daemon import (
    DaemonProcess,
    atom_entry,
    cli_argv,
    kill_daemon,
    write_config,
)
from tests.harness.databases import (
    PostgresDatabases,
    query,
    require_postgresql,
    server_url,
)
from tests.integration.test_faults_kill import READS, Reader, expected_answer, server_answer
from tests.servers.base import XMPPServer
from tests.servers.publisher import Publisher

T = TypeVar("T")

MICROBLOG = "urn:xmpp:microblog:0"
#: seconds a test waits for a state it caused (a sync's end, a lease given back)
WAIT_TIMEOUT = 60.0
#: the start of the message of a profile another daemon serves
SERVED_ELSEWHERE = "profile {profile} is served by another daemon on the database "
#: how it ends: what to do about it
RESTART_HINT = "until it is restarted after the other one stopped"


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
def database() -> Iterator[str]:
    """A throwaway PostgreSQL database of the test's own (its URL), dropped at the end."""
    databases = PostgresDatabases(server_url())
    require_postgresql(databases, databases.check())
    try:
        yield databases.create("several")
    finally:
        databases.drop_all()


class Daemons:
    """The test's daemon processes, each in a directory of its own (configuration,
    control socket, log), all on one database; those still running at the end are
    stopped, and must stop cleanly."""

    def __init__(self, directory: Path, server: XMPPServer, database: str) -> None:
        self.directory = directory
        self.server = server
        self.database = database
        self.started: list[DaemonProcess] = []

    def new(self, name: str, profiles: list[str], **options: Any) -> DaemonProcess:
        directory = self.directory / name
        directory.mkdir()
        config = write_config(
            directory, self.server, profiles=profiles, database=self.database, **options
        )
        return DaemonProcess(config)

    def start(self, *daemons: DaemonProcess) -> None:
        """Start ``daemons`` at once; return when each is ready."""
        errors: list[BaseException] = []

        def start(daemon: DaemonProcess) -> None:
            try:
                daemon.start()
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=start, args=(daemon,)) for daemon in daemons]
        self.started += daemons
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def stop_all(self) -> None:
        codes = {}
        for daemon in self.started:
            if daemon.process is not None and daemon.process.poll() is None:
                codes[daemon.config.parent.name] = daemon.stop()
        assert all(code == 0 for code in codes.values()), codes


@pytest.fixture
def daemons(xmpp_server: XMPPServer, database: str, tmp_path: Path) -> Iterator[Daemons]:
    started = Daemons(tmp_path, xmpp_server, database)
    try:
        yield started
    finally:
        started.stop_all()


def cli(daemon: DaemonProcess, *args: str, profile: str | None = None) -> Any:
    """A command that must succeed, with ``--json``: its document."""
    chosen = ("--profile", profile) if profile else ()
    return json.loads(daemon.cli(*chosen, *args, "--json").stdout)


def refused(daemon: DaemonProcess, *args: str, profile: str) -> str:
    """A command the daemon must refuse for ``profile``: its one-line error."""
    result = daemon.cli("--profile", profile, *args, check=False)
    assert result.returncode == 3, (args, result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def served_elsewhere(line: str, profile: str) -> bool:
    return SERVED_ELSEWHERE.format(profile=profile) in line and line.endswith(RESTART_HINT)


def node_rows(status: dict[str, Any], node: str) -> dict[str, dict[str, Any]]:
    """The rows of ``node`` in a ``status --json`` document, by profile."""
    return {row["profile"]: row for row in status["nodes"] if row["node"] == node}


def wait_for(condition: Callable[[], T], what: str, timeout: float = WAIT_TIMEOUT) -> T:
    """Poll ``condition`` until it returns something true (returned)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def advisory_locks(url: str) -> int:
    """Profile leases held on the database at ``url`` (its advisory locks)."""
    rows = query(
        url,
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()",
    )
    return int(rows[0][0])


def lease_holder(url: str, profile: str) -> int | None:
    """The PID of the PostgreSQL session holding ``profile``'s lease, if any."""
    key = lease_key(profile) & 0xFFFFFFFFFFFFFFFF
    rows = query(
        url,
        "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database() "
        "AND l.classid::bigint = $1 AND l.objid::bigint = $2",
        key >> 32,
        key & 0xFFFFFFFF,
    )
    return rows[0][0] if rows else None


def stored(url: str, profile: str, service: str, node: str) -> tuple[list[str | None], int, int]:
    """The node's rows for ``profile`` in the database (their states), its items and its
    distinct item ids."""
    states = query(
        url,
        "SELECT sync_state::text FROM pubsub_nodes WHERE profile = $1 AND service = $2 "
        "AND name = $3",
        profile,
        service,
        node,
    )
    counts = query(
        url,
        "SELECT count(*), count(DISTINCT i.item_id) FROM pubsub_items i "
        "JOIN pubsub_nodes n ON n.id = i.node_id "
        "WHERE n.profile = $1 AND n.service = $2 AND n.name = $3",
        profile,
        service,
        node,
    )
    return [row[0] for row in states], int(counts[0][0]), int(counts[0][1])


def item_ids(url: str, profile: str, service: str, node: str) -> list[str]:
    """The ids of the items the database holds for ``profile``'s copy of the node, sorted."""
    rows = query(
        url,
        "SELECT i.item_id FROM pubsub_items i JOIN pubsub_nodes n ON n.id = i.node_id "
        "WHERE n.profile = $1 AND n.service = $2 AND n.name = $3 ORDER BY i.item_id",
        profile,
        service,
        node,
    )
    return [row[0] for row in rows]


class NodeRowHold:
    """Holds a node's row ``FOR UPDATE`` on a PostgreSQL connection of the test's own:
    every write of that node by a daemon (a sync's start, each page) waits until
    :meth:`release`. Its connection runs on an asyncio loop in a thread of its own."""

    def __init__(self, url: str) -> None:
        import asyncpg
        from sqlalchemy.engine import make_url

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._connection = self._run(asyncpg.connect(dsn, timeout=10))
        self._transaction: Any = None

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(WAIT_TIMEOUT)

    def hold_when(
        self,
        profile: str,
        service: str,
        node: str,
        condition: Callable[[str | None, int], bool],
        what: str,
    ) -> tuple[str | None, int]:
        """Lock the node's row as soon as it exists and ``condition(state, items)``
        holds (each look holds it for an instant): the state and item count held."""

        async def attempt() -> tuple[str | None, int] | None:
            transaction = self._connection.transaction()
            await transaction.start()
            row = await self._connection.fetchrow(
                "SELECT id, sync_state::text AS state FROM pubsub_nodes "
                "WHERE profile = $1 AND service = $2 AND name = $3 FOR UPDATE",
                profile,
                service,
                node,
            )
            if row is not None:
                count = await self._connection.fetchval(
                    "SELECT count(*) FROM pubsub_items WHERE node_id = $1", row["id"]
                )
                if condition(row["state"], count):
                    self._transaction = transaction
                    return row["state"], count
            await transaction.rollback()
            return None

        deadline = time.monotonic() + WAIT_TIMEOUT
        while time.monotonic() < deadline:
            held = self._run(attempt())
            if held is not None:
                return held
        raise AssertionError(f"timed out waiting for {what}")

    def release(self) -> None:
        if self._transaction is not None:
            transaction, self._transaction = self._transaction, None
            self._run(transaction.rollback())

    def close(self) -> None:
        self.release()
        self._run(self._connection.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture
def hold(database: str) -> Iterator[NodeRowHold]:
    row_hold = NodeRowHold(database)
    try:
        yield row_hold
    finally:
        row_hold.close()


async def new_node(
    publisher: Publisher, service: JID, node: str, size: int, prefix: str = "i"
) -> list[str]:
    """Create ``node`` with ``size`` items; the server's items (XML), in its order."""
    await publisher.create_node(service, node, {"pubsub#access_model": "open"})
    await publisher.publish(
        service,
        node,
        [
            (f"{prefix}{n:05d}", atom_entry(f"{prefix}{n:05d}", f"{prefix} {n}"))
            for n in range(size)
        ],
    )
    items = [item.toXml() for item in await publisher.get_all_items(service, node, page=500)]
    assert len(items) == size
    return items


def ids_of(items: list[str]) -> list[str]:
    """The ids of items given as XML."""
    return [parse_element(item).getAttribute("id") for item in items]


def assert_served_from_cache(
    daemon: DaemonProcess, service: str, node: str, items: list[str], profile: str
) -> None:
    answer = cli(daemon, "get", service, node, profile=profile)
    assert answer["metadata"]["cached"] is True, answer["metadata"]
    assert answer["metadata"]["complete"] is True, answer["metadata"]
    assert answer["items"] == items


# --- the tests ----------------------------------------------------------------------------


async def test_daemons_with_their_own_profiles_share_one_database(
    xmpp_server: XMPPServer,
    publisher: Publisher,
    fresh_node: Callable[..., str],
    daemons: Daemons,
    database: str,
) -> None:
    service = JID(xmpp_server.pubsub_service)
    shared = fresh_node(MICROBLOG)  # every profile caches it
    own = {profile: fresh_node(MICROBLOG) for profile in ("bob", "carol", "dave")}
    shared_items = await new_node(publisher, service, shared, 8, prefix="s")
    own_items = {
        profile: await new_node(publisher, service, node, 2 + n, prefix=profile)
        for n, (profile, node) in enumerate(own.items())
    }
    # bob's daemon keeps 3 items a node: its copy of the shared node is not carol's
    first = daemons.new("first", ["bob"], cache_limit=3)
    second = daemons.new("second", ["carol", "dave"])
    daemons.start(first, second)

    for daemon, profile in ((first, "bob"), (second, "carol"), (second, "dave")):
        for node, size in ((shared, 8), (own[profile], len(own_items[profile]))):
            synced = cli(daemon, "sync", service.full(), node, "--wait", profile=profile)
            (row,) = synced["nodes"]
            assert (row["profile"], row["state"]) == (profile, "COMPLETED"), row
            kept = min(size, 3) if daemon is first else size
            assert (row["items"], row["server_items"]) == (kept, size), row

    # each serves its own nodes from the cache, with the server's items
    assert_served_from_cache(first, service.full(), own["bob"], own_items["bob"], "bob")
    for profile in ("carol", "dave"):
        assert_served_from_cache(second, service.full(), shared, shared_items, profile)
        assert_served_from_cache(second, service.full(), own[profile], own_items[profile], profile)
    # bob's copy of the shared node holds the newest 3 items, carol's and dave's all 8
    shared_ids = ids_of(shared_items)  # the server's order (libervia-pubsub's may differ)
    for profile, ids in (("bob", shared_ids[-3:]), ("carol", shared_ids), ("dave", shared_ids)):
        assert item_ids(database, profile, service.full(), shared) == sorted(ids)
    first_status = cli(first, "status")
    second_status = cli(second, "status")
    assert {row["profile"] for row in first_status["nodes"]} == {"bob"}
    assert {row["profile"] for row in second_status["nodes"]} == {"carol", "dave"}
    assert node_rows(first_status, shared)["bob"]["truncated"] is True
    assert first_status["database"]["refused_profiles"] == {}
    assert second_status["database"]["refused_profiles"] == {}

    # the second daemon purges its copies of the shared node: bob's stays
    purged = cli(second, "purge", "--node", shared, "--yes")
    assert purged["purged"] == 2 * len(shared_items), purged
    after = node_rows(cli(second, "status", service.full(), shared), shared)
    assert {profile: row["items"] for profile, row in after.items()} == {"carol": 0, "dave": 0}
    (row,) = node_rows(cli(first, "status", service.full(), shared), shared).values()
    assert (row["profile"], row["state"], row["items"]) == ("bob", "COMPLETED", 3), row
    assert item_ids(database, "bob", service.full(), shared) == sorted(shared_ids[-3:])
    assert_served_from_cache(first, service.full(), own["bob"], own_items["bob"], "bob")
    for profile, ids in (("bob", shared_ids[-3:]), ("carol", []), ("dave", [])):
        assert item_ids(database, profile, service.full(), shared) == sorted(ids)
    # carol's reads of it go to the network now (and start its sync again), and are right
    answer = cli(second, "get", service.full(), shared, profile="carol")
    assert answer["metadata"]["cached"] is False
    assert answer["items"] == shared_items
    # three leases: one per profile
    assert advisory_locks(database) == 3


async def test_a_profile_served_by_another_daemon_is_refused_until_a_restart(
    xmpp_server: XMPPServer,
    publisher: Publisher,
    fresh_node: Callable[..., str],
    daemons: Daemons,
    database: str,
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    items = await new_node(publisher, service, node, 5)
    first = daemons.new("first", ["bob"])
    daemons.start(first)
    cli(first, "sync", service.full(), node, "--wait", profile="bob")
    assert_served_from_cache(first, service.full(), node, items, "bob")
    holder = lease_holder(database, "bob")
    assert holder is not None

    # a second daemon with bob: refused at its connection (after CLAIM_WAIT), said once
    second = daemons.new("second", ["bob"])
    daemons.start(second)
    message = refused(second, "sync", service.full(), node, "--wait", profile="bob")
    assert message.startswith("libervia-cache: " + SERVED_ELSEWHERE.format(profile="bob"))
    assert served_elsewhere(message, "bob"), message
    reason = message.removeprefix("libervia-cache: ")
    assert served_elsewhere(
        refused(second, "cache-get", service.full(), node, profile="bob"), "bob"
    )
    assert refused(second, "status", profile="bob") == message
    # its status says so, and shows no node of bob's
    status = cli(second, "status")
    assert status["database"]["refused_profiles"] == {"bob": reason}
    assert status["nodes"] == []
    assert status["counters"]["syncs_started"] == 0
    human = second.cli("status").stdout  # wrapped to 80 columns, long words broken
    assert "".join(reason.split()) in "".join(human.split()), human
    # its reads go to the network, and are right
    answer = cli(second, "get", service.full(), node, profile="bob")
    assert answer["metadata"]["cached"] is False
    assert answer["items"] == items
    # the first one is undisturbed
    assert_served_from_cache(first, service.full(), node, items, "bob")
    assert lease_holder(database, "bob") == holder

    # the first one stops (giving the lease back): the second one, refused, goes on
    # refusing until restarted
    assert first.stop() == 0
    wait_for(lambda: lease_holder(database, "bob") is None, "bob's lease to be given back")
    assert refused(second, "sync", service.full(), node, profile="bob") == message
    answer = cli(second, "get", service.full(), node, profile="bob")
    assert answer["metadata"]["cached"] is False
    assert answer["items"] == items
    assert lease_holder(database, "bob") is None

    # the node changes while no daemon serves bob
    await publisher.retract(service, node, ["i00000"])
    items = [item for item in items if ids_of([item]) != ["i00000"]]

    # a daemon started now takes bob at once, checks the node the first one synced
    # against the server, and serves it
    third = daemons.new("third", ["bob"])
    started = time.monotonic()
    daemons.start(third)
    assert time.monotonic() - started < CLAIM_WAIT, "the third daemon waited for a lease"
    assert cli(third, "status")["database"]["refused_profiles"] == {}
    answer = cli(third, "get", service.full(), node, profile="bob")
    assert answer["items"] == items, answer["metadata"]
    wait_for(
        lambda: cli(third, "get", service.full(), node, profile="bob")["metadata"]["cached"],
        "the node to be served from the cache",
    )
    assert_served_from_cache(third, service.full(), node, items, "bob")
    (row,) = node_rows(cli(third, "status"), node).values()
    assert (row["profile"], row["state"], row["items"]) == ("bob", "COMPLETED", 4), row
    assert lease_holder(database, "bob") not in (None, holder)


async def test_two_daemons_asked_to_sync_one_node_at_once_sync_it_once(
    xmpp_server: XMPPServer,
    publisher: Publisher,
    fresh_node: Callable[..., str],
    daemons: Daemons,
    database: str,
    hold: NodeRowHold,
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    items = await new_node(publisher, service, node, 30)
    one = daemons.new("one", ["bob"], sync_page_size=10)
    other = daemons.new("other", ["bob"], sync_page_size=10)
    daemons.start(one, other)  # both claim bob at once: one gets it
    refusing = [
        daemon for daemon in (one, other) if cli(daemon, "status")["database"]["refused_profiles"]
    ]
    assert len(refusing) == 1
    (loser,) = refusing
    (winner,) = [daemon for daemon in (one, other) if daemon is not loser]

    def sync_both() -> list[subprocess.CompletedProcess[str]]:
        """``sync --wait --json`` on both daemons at once."""
        processes = [
            subprocess.Popen(
                cli_argv(daemon.config, "sync", service.full(), node, "--wait", "--json"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for daemon in (winner, loser)
        ]
        results = []
        for process in processes:
            stdout, stderr = process.communicate(timeout=WAIT_TIMEOUT)
            results.append(
                subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
            )
        return results

    won, lost = sync_both()
    assert lost.returncode == 3 and served_elsewhere(lost.stderr.strip(), "bob"), lost
    assert won.returncode == 0, won.stderr
    (row,) = json.loads(won.stdout)["nodes"]
    assert (row["state"], row["items"], row["server_items"]) == ("COMPLETED", 30, 30), row

    # again, the winner's sync held in the middle: asked again meanwhile, by both, it
    # is followed by one and refused by the other, not started twice
    hold.hold_when("bob", service.full(), node, lambda state, count: True, "the node's row")
    following = subprocess.Popen(
        cli_argv(winner.config, "sync", service.full(), node, "--wait", "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: cli(winner, "status")["syncs_running"] == 1, "the held sync to be running")
        again = winner.cli("sync", service.full(), node, "--json", check=False)
        assert again.returncode == 0, again.stderr
        assert served_elsewhere(refused(loser, "sync", service.full(), node, profile="bob"), "bob")
        during = cli(winner, "status")
        assert during["syncs_running"] == 1
        assert during["counters"]["syncs_started"] == 2, during["counters"]
    finally:
        hold.release()
        stdout, stderr = following.communicate(timeout=WAIT_TIMEOUT)
    assert following.returncode == 0, stderr
    (row,) = json.loads(stdout)["nodes"]
    assert (row["state"], row["items"], row["server_items"]) == ("COMPLETED", 30, 30), row

    counters = cli(winner, "status")["counters"]
    assert (counters["syncs_started"], counters["syncs_completed"]) == (2, 2), counters
    assert cli(loser, "status")["counters"]["syncs_started"] == 0
    # one node, the server's items once each, served from the cache by the winner
    assert stored(database, "bob", service.full(), node) == (["COMPLETED"], 30, 30)
    assert_served_from_cache(winner, service.full(), node, items, "bob")


#: items of the node killed in the middle of its sync, synced by pages of 10 (Prosody
#: ignores RSM: one page, whose fetch is the sync's longest step)
KILL_NODE_SIZE = {"ejabberd": 300, "prosody": 600, "libervia-pubsub": 300}


async def test_a_daemon_killed_mid_sync_leaves_the_node_to_the_next_daemon(
    xmpp_server: XMPPServer,
    publisher: Publisher,
    fresh_node: Callable[..., str],
    daemons: Daemons,
    database: str,
    hold: NodeRowHold,
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    size = KILL_NODE_SIZE[xmpp_server.kind]
    items = await new_node(publisher, service, node, size)
    several_pages = xmpp_server.quirks["rsm"]
    expected: list[Any]
    if several_pages:
        expected = [expected_answer(request, items) for request in READS]
    else:
        expected = [await server_answer(publisher, service, node, request) for request in READS]

    first = daemons.new("first", ["bob"], sync_page_size=10)
    daemons.start(first)

    def reader(daemon: DaemonProcess) -> Reader:
        return Reader(
            daemon.config.parent / "daemon.sock",
            service.full(),
            node,
            honours_rsm=several_pages,
            expected=expected,
        )

    readers = [reader(first)]
    try:
        readers[0].start()
        first.cli("sync", service.full(), node)
        # held (so killed) with some pages stored; Prosody stores its one page and the
        # COMPLETED state in one transaction: held before it
        state, count = hold.hold_when(
            "bob",
            service.full(),
            node,
            lambda state, count: state == "IN_PROGRESS" and (count > 0 or not several_pages),
            "the sync in the middle",
        )
        assert state == "IN_PROGRESS"
        assert (0 < count < size) if several_pages else count == 0, count
        status = ControlClient(first.config.parent / "daemon.sock")
        (row,) = status.call("ps_cache_status", {"node": node}, timeout=30)["nodes"]
        assert (row["state"], row["items"], row["progress"] is not None) == (
            "IN_PROGRESS",
            count,
            True,
        ), row
        first_pid = lease_holder(database, "bob")
        assert first_pid is not None
        assert kill_daemon(first) == -signal.SIGKILL
        readers[0].stop()
        hold.release()

        # PostgreSQL ends the dead daemon's sessions (its lease with them); the node is
        # left as it was, never COMPLETED
        wait_for(lambda: advisory_locks(database) == 0, "the dead daemon's lease to go")
        assert stored(database, "bob", service.full(), node) == (["IN_PROGRESS"], count, count)

        # the next daemon serving bob redoes the sync when bob connects (held at its
        # start, so that reads come while it runs), and serves the server's items
        hold.hold_when("bob", service.full(), node, lambda state, count: True, "the row")
        second = daemons.new("second", ["bob"], sync_page_size=10)
        daemons.start(second)
        assert cli(second, "status")["database"]["refused_profiles"] == {}
        wait_for(
            lambda: cli(second, "status")["syncs_running"] == 1,
            "the half-done sync to be redone (no read asked for it)",
        )
        readers.append(reader(second))
        readers[1].start()
        wait_for(lambda: readers[1].from_network >= len(READS), "reads during the sync")
        hold.release()
        wait_for(
            lambda: node_rows(cli(second, "status"), node)["bob"]["state"] == "COMPLETED",
            "the sync to be redone",
        )
        assert_served_from_cache(second, service.full(), node, items, "bob")
        assert stored(database, "bob", service.full(), node) == (["COMPLETED"], size, size)
        assert "was left half-synchronised: synchronising it again" in second.log()
        deadline = time.monotonic() + WAIT_TIMEOUT
        while readers[1].cached < 2 * len(READS):
            assert time.monotonic() < deadline, "the reader got no answer from the cache"
            time.sleep(0.01)
    finally:
        for each in readers:
            each.stop()
    for each in readers:
        assert each.wrong == [], f"partial or wrong answers from the cache: {each.wrong}"
    assert readers[0].cached == 0, "the node was served from the cache before it was synced"
