"""The daemon killed with SIGKILL in the middle of a sync: the database stays sound, the
node is redone at the next start, and no reader ever got a partial node from the cache."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.words.protocols.jabber.jid import JID

from libervia_cache.control import ControlClient
from libervia_cache.hostapi import answer_metadata, rsm_request
from tests.harness.daemon import (
    DaemonProcess,
    atom_entry,
    kill_daemon,
    restart_log,
    write_config,
)
from tests.servers.base import XMPPServer
from tests.servers.publisher import Publisher

MICROBLOG = "urn:xmpp:microblog:0"
#: items of the node: pages of 100 are synced one by one (Prosody ignores RSM: one page);
#: libervia-pubsub publishes at about 6 ms an item, so it gets fewer
NODE_SIZE = {"ejabberd": 2000, "prosody": 1000, "libervia-pubsub": 600}
WAIT_TIMEOUT = 90.0

#: what the reader asks, again and again: the oldest page and the newest page with RSM.
#: A partial node (synced from the newest item backwards) would get the first one wrong,
#: and the RSM count of both; on a server that ignores RSM (every item, no RSM data), the
#: items of both.
READS: list[dict[str, Any]] = [{"rsm": {"max": 10}}, {"rsm": {"max": 10, "before": ""}}]


def expected_answer(request: dict[str, Any], items: list[str]) -> tuple[list[str], int]:
    """The items and RSM count a correct server answers (XEP-0059)."""
    if request["rsm"].get("before") == "":
        return items[-10:], len(items)
    return items[:10], len(items)


def without_cached(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metadata.items() if key != "cached"}


async def server_answer(
    publisher: Publisher, service: JID, node: str, request: dict[str, Any]
) -> tuple[list[str], dict[str, Any]]:
    """The server's own answer to ``request``: its items and the metadata the daemon
    gives such a network answer (``cached`` apart)."""
    asked = rsm_request(request["rsm"])
    items, response = await publisher.get_items(service, node, rsm_request=asked)
    rsm_data = response.toDict() if response is not None else None
    metadata = answer_metadata(service, node, len(items), asked, rsm_data, cached=False)
    return [item.toXml() for item in items], without_cached(metadata)


@dataclass
class Reader:
    """Reads the node through the daemon (the transparent ``ps_items_get``) in a thread
    until stopped, and keeps every answer that came from the cache and was wrong.

    ``expected``: for each of ``READS``, the right answer: where the server honours RSM,
    the items and RSM count of :func:`expected_answer`; else the server's own answer,
    items and metadata."""

    socket: Path
    service: str
    node: str
    honours_rsm: bool
    expected: list[Any]
    cached: int = 0
    from_network: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    wrong: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        client = ControlClient(self.socket)
        while not self._stop.is_set():
            for request, expected in zip(READS, self.expected, strict=True):
                try:
                    answer = client.call(
                        "ps_items_get",
                        {"service": self.service, "node": self.node, **request},
                        timeout=30,
                    )
                except Exception as error:  # down, killed, restarting: keep asking
                    name = type(error).__name__
                    self.failed[name] = self.failed.get(name, 0) + 1
                    time.sleep(0.01)
                    continue
                metadata = answer["metadata"]
                if not metadata.get("cached"):
                    self.from_network += 1
                    continue
                self.cached += 1
                if self.honours_rsm:
                    got = (answer["items"], metadata.get("rsm", {}).get("count"))
                else:
                    got = (answer["items"], without_cached(metadata))
                if got != expected:
                    self.wrong.append((request, got, metadata))


def status_of(client: ControlClient, node: str) -> dict[str, Any] | None:
    rows = client.call("ps_cache_status", {"node": node}, timeout=30)["nodes"]
    return rows[0] if rows else None


def wait_for_status(
    client: ControlClient, node: str, condition: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_TIMEOUT
    seen: list[Any] = []
    while time.monotonic() < deadline:
        row = status_of(client, node)
        if row is not None:
            if condition(row):
                return row
            state = (row["state"], row["items"])
            if not seen or seen[-1] != state:
                seen.append(state)
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}; (state, items) seen: {seen}")


async def test_a_sigkill_mid_sync_leaves_a_sound_database_and_the_node_redone_never_served_partial(
    xmpp_server: XMPPServer, publisher: Publisher, tmp_path: Path, fresh_node: Callable[..., str]
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    size = NODE_SIZE[xmpp_server.kind]
    await publisher.create_node(service, node, {"pubsub#access_model": "open"})
    await publisher.publish(
        service, node, [(f"i{n:05d}", atom_entry(f"i{n:05d}", f"item {n}")) for n in range(size)]
    )
    server = [item.toXml() for item in await publisher.get_all_items(service, node, page=500)]
    assert len(server) == size
    several_pages = xmpp_server.quirks["rsm"]
    if several_pages:
        expected = [expected_answer(request, server) for request in READS]
    else:
        expected = [await server_answer(publisher, service, node, request) for request in READS]

    config = write_config(tmp_path, xmpp_server)
    database = tmp_path / "cache.db"
    socket = tmp_path / "daemon.sock"
    daemon = DaemonProcess(config)
    daemon.start()
    running = True
    reader = Reader(
        socket, service.full(), node, honours_rsm=xmpp_server.quirks["rsm"], expected=expected
    )
    status = ControlClient(socket)
    try:
        reader.start()  # its first read starts the sync
        if several_pages:
            # killed while some pages are stored (and at least half of them still due)
            row = wait_for_status(
                status,
                node,
                lambda row: row["state"] == "IN_PROGRESS" and 0 < row["items"] <= size // 2,
                "a sync half done",
            )
        else:
            # Prosody sends the whole node in one page, stored with the COMPLETED state
            # in one transaction: a sync in progress never holds items
            row = wait_for_status(
                status,
                node,
                lambda row: row["state"] == "IN_PROGRESS" or row["state"] == "COMPLETED",
                "the sync to start",
            )
            assert row["state"] == "IN_PROGRESS" and row["items"] == 0, row
        assert kill_daemon(daemon) == -signal.SIGKILL
        running = False
        cached_before_kill = reader.cached

        with closing(sqlite3.connect(database)) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            (stored,) = connection.execute("SELECT count(*) FROM pubsub_items").fetchone()
            states = connection.execute("SELECT sync_state FROM pubsub_nodes").fetchall()
        assert states == [("IN_PROGRESS",)]
        if several_pages:
            assert 0 < stored < size
        else:
            assert stored == 0

        restart_log(daemon)
        daemon = DaemonProcess(config)
        daemon.start()
        running = True
        # the half-done sync is redone (at connection, or by the reader's next read)
        row = wait_for_status(
            status, node, lambda row: row["state"] == "COMPLETED", "the sync to be redone"
        )
        assert row["items"] == size
        cached = status.call("ps_cache_get", {"service": service.full(), "node": node})
        assert cached["items"] == server
        assert cached["metadata"]["cached"] is True
        deadline = time.monotonic() + WAIT_TIMEOUT
        while reader.cached < cached_before_kill + 2 * len(READS):
            assert time.monotonic() < deadline, "the reader got no answer from the cache"
            time.sleep(0.01)
    finally:
        reader.stop()
        if running:
            daemon.stop()
    assert reader.wrong == [], f"partial or wrong answers served from the cache: {reader.wrong}"
    assert reader.from_network > 0 and reader.cached > 0, (reader.from_network, reader.cached)
