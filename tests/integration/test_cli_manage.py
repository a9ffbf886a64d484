"""Managing commands end to end: sync with progress, purge, reset, through one daemon.

Tests use their own nodes; the reset test forgets everything, so it comes last.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from twisted.words.protocols.jabber.jid import JID

from libervia_cache.control import ControlClient
from libervia_cache.errors import BridgeError
from tests.conftest import run
from tests.harness.daemon import (
    DaemonProcess,
    atom_entry,
    cli_argv,
    cli_json,
)
from tests.servers.base import XMPPServer, wait_until
from tests.servers.publisher import connect_publisher

MICROBLOG = "urn:xmpp:microblog:0"


@pytest.fixture
def blog_node(xmpp_server: XMPPServer, fresh_node: Callable[..., str]) -> Callable[[int], str]:
    """``blog_node(n)``: a new microblog node with ``n`` posts on the test service."""

    def create(count: int) -> str:
        service = JID(xmpp_server.pubsub_service)
        node = fresh_node(MICROBLOG)

        async def publish() -> None:
            publisher = await connect_publisher(xmpp_server, "alice", f"pub-{uuid.uuid4().hex[:8]}")
            try:
                await publisher.create_node(service, node, {"pubsub#access_model": "open"})
                posts = [(f"p{n}", atom_entry(f"p{n}", f"Post {n}")) for n in range(count)]
                await publisher.publish(service, node, posts)
            finally:
                await publisher.close()

        run(publish())
        return node

    return create


# --- sync ---------------------------------------------------------------------------------


def test_sync_wait_prints_progress_lines_when_stdout_is_not_a_terminal(
    daemon_process: DaemonProcess, xmpp_server: XMPPServer, blog_node: Callable[[int], str]
) -> None:
    node = blog_node(40)
    result = daemon_process.cli("sync", xmpp_server.pubsub_service, node, "--wait")
    lines = result.stdout.strip().splitlines()
    progress = [line for line in lines if line.startswith(f"sync {node}: ")]
    assert progress, result.stdout
    assert progress[-1] == f"sync {node}: 40 item(s) stored of 40"
    assert lines[-1] == f"{node} on {xmpp_server.pubsub_service}: COMPLETED, 40 item(s)"


def test_sync_wait_json_is_one_document_with_the_node_status(
    daemon_process: DaemonProcess, xmpp_server: XMPPServer, blog_node: Callable[[int], str]
) -> None:
    node = blog_node(3)
    result = cli_json(daemon_process, "sync", xmpp_server.pubsub_service, node, "--wait")
    [row] = result["nodes"]
    assert (row["node"], row["state"], row["items"], row["type"]) == (node, "COMPLETED", 3, "blog")


def test_sync_wait_shows_a_progress_bar_on_a_terminal(
    daemon_process: DaemonProcess, xmpp_server: XMPPServer, blog_node: Callable[[int], str]
) -> None:
    node = blog_node(25)
    leader, follower = os.openpty()
    try:
        process = subprocess.run(
            cli_argv(daemon_process.config, "sync", xmpp_server.pubsub_service, node, "--wait"),
            stdout=follower,
            stderr=subprocess.PIPE,
            timeout=120,
            env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
        )
        os.close(follower)
        output = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(leader)
    assert process.returncode == 0, process.stderr
    text = output.decode(errors="replace")
    assert "25/25" in text  # the bar's stored/total column
    assert "━" in text  # the bar itself
    assert f"{node} on {xmpp_server.pubsub_service}: COMPLETED, 25 item(s)" in text


def test_sync_without_wait_runs_in_the_background(
    daemon_process: DaemonProcess, xmpp_server: XMPPServer, blog_node: Callable[[int], str]
) -> None:
    node = blog_node(5)
    result = daemon_process.cli("sync", xmpp_server.pubsub_service, node)
    assert f"synchronisation of {node} on {xmpp_server.pubsub_service} started" in result.stdout

    def completed() -> bool:
        rows = cli_json(daemon_process, "status", xmpp_server.pubsub_service, node)["nodes"]
        return bool(rows) and rows[0]["state"] == "COMPLETED" and rows[0]["items"] == 5

    wait_until(completed, "the background sync to complete", timeout=60)


def test_sync_of_a_missing_node_is_one_line_naming_it_with_exit_code_1(
    daemon_process: DaemonProcess, xmpp_server: XMPPServer
) -> None:
    node = f"{MICROBLOG}-missing-{uuid.uuid4().hex}"
    result = daemon_process.cli("sync", xmpp_server.pubsub_service, node, "--wait", check=False)
    assert result.returncode == 1, result.stderr  # not_found: the caller's error
    assert all(line.startswith(f"sync {node}: ") for line in result.stdout.splitlines())
    assert len(result.stderr.strip().splitlines()) == 1
    assert "synchronisation of node" in result.stderr and f"has no node '{node}'" in result.stderr
    assert "ps_cache_sync failed" not in result.stderr  # a typed error, not an internal one
    # the cache forgets the node: no ERROR row
    assert cli_json(daemon_process, "status", xmpp_server.pubsub_service, node)["nodes"] == []


def test_sync_for_an_unknown_profile_is_not_found_with_exit_code_1(
    daemon_process: DaemonProcess, xmpp_server: XMPPServer
) -> None:
    result = daemon_process.cli(
        "sync", xmpp_server.pubsub_service, "any", "--profile", "nobody", check=False
    )
    assert result.returncode == 1
    assert "unknown profile 'nobody'" in result.stderr


# --- purge --------------------------------------------------------------------------------


def node_row(daemon_process: DaemonProcess, service: str, node: str) -> dict[str, object]:
    [row] = cli_json(daemon_process, "status", service, node)["nodes"]
    return row


def test_purge_shows_the_count_and_asks_before_deleting(
    daemon_process: DaemonProcess, xmpp_server: XMPPServer, blog_node: Callable[[int], str]
) -> None:
    service = xmpp_server.pubsub_service
    node = blog_node(4)
    daemon_process.cli("sync", service, node, "--wait")
    declined = subprocess.run(
        cli_argv(daemon_process.config, "purge", "--node", node),
        input="n\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert declined.returncode == 1
    assert "4 cached item(s) match" in declined.stdout
    assert "Purge 4 cached item(s)?" in declined.stderr
    assert "aborted" in declined.stderr
    assert node_row(daemon_process, service, node)["items"] == 4

    accepted = subprocess.run(
        cli_argv(daemon_process.config, "purge", "--node", node),
        input="y\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert accepted.returncode == 0, accepted.stderr
    assert "purged 4 item(s)" in accepted.stdout
    row = node_row(daemon_process, service, node)
    assert row["items"] == 0
    assert row["state"] != "COMPLETED"  # no longer a mirror of the node: not served


def test_purge_filters_by_relative_and_iso_dates(
    daemon_process: DaemonProcess, xmpp_server: XMPPServer, blog_node: Callable[[int], str]
) -> None:
    service = xmpp_server.pubsub_service
    node = blog_node(3)
    daemon_process.cli("sync", service, node, "--wait")
    recent = cli_json(daemon_process, "purge", "--node", node, "--created-before", "1h", "--yes")
    assert (recent["count"], recent["purged"]) == (0, 0)
    assert "created_before" in recent["filters"]
    dry = cli_json(
        daemon_process, "purge", "--node", node, "--updated-before", "2100-01-01", "--dry-run"
    )
    assert (dry["count"], dry["purged"]) == (3, 0)
    assert node_row(daemon_process, service, node)["items"] == 3
    done = cli_json(
        daemon_process,
        "purge",
        "--service",
        service,
        "--node",
        node,
        "--type",
        "blog",
        "--created-before",
        "2100-01-01T00:00:00",
        "--yes",
    )
    assert (done["count"], done["purged"]) == (3, 3)
    assert node_row(daemon_process, service, node)["items"] == 0


def test_purge_with_a_bad_date_is_a_usage_error_with_exit_code_1(
    daemon_process: DaemonProcess,
) -> None:
    result = daemon_process.cli("purge", "--created-before", "last tuesday", "--yes", check=False)
    assert result.returncode == 1
    assert "--created-before" in result.stderr and "30d" in result.stderr


# --- bridge methods, called directly -------------------------------------------------------


def test_bridge_methods_answer_bad_arguments_with_typed_errors(
    daemon_process: DaemonProcess,
) -> None:
    client = ControlClient(daemon_process.config.parent / "daemon.sock")
    cases: list[tuple[str, dict[str, Any], str, str]] = [
        ("ps_cache_purge", {"filters": {"bogus": 1}}, "bad_request", "bogus"),
        (
            "ps_cache_purge",
            {"filters": {"created_before": "someday"}},
            "bad_request",
            "created_before",
        ),
        ("ps_cache_search", {"query": {"limit": -1}}, "bad_request", "limit"),
        ("ps_cache_search", {"query": {"fts": "AND ("}}, "bad_request", "fts"),
        ("ps_cache_status", {"profile": "nobody"}, "not_found", "nobody"),
        ("ps_cache_get", {"service": "a@@b", "node": "n"}, "bad_request", "service"),
        ("ps_cache_get", {"service": "x", "node": "n", "rsm": {"page": 2}}, "bad_request", "rsm"),
        (
            "ps_cache_sync",
            {"service": "x", "node": "n", "profile": "nobody"},
            "not_found",
            "nobody",
        ),
        ("ps_cache_reset", {"everything": True}, "bad_request", "everything"),
    ]
    for method, params, kind, named in cases:
        with pytest.raises(BridgeError) as caught:
            client.call(method, params, timeout=30)
        assert (caught.value.kind, method) == (kind, method), caught.value.message
        assert named in caught.value.message, (method, caught.value.message)


# --- reset (last: it forgets everything) ----------------------------------------------------


def test_reset_asks_for_confirmation_then_forgets_every_node(
    daemon_process: DaemonProcess, xmpp_server: XMPPServer, blog_node: Callable[[int], str]
) -> None:
    node = blog_node(2)
    daemon_process.cli("sync", xmpp_server.pubsub_service, node, "--wait")
    declined = subprocess.run(
        cli_argv(daemon_process.config, "reset"),
        input="n\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert declined.returncode == 1
    assert "Forget every cached node" in declined.stderr
    assert cli_json(daemon_process, "status", xmpp_server.pubsub_service, node)["nodes"]

    result = cli_json(daemon_process, "reset", "--yes")
    assert result["nodes"] >= 1 and result["items"] >= 2
    assert cli_json(daemon_process, "status")["nodes"] == []
    assert "no cached node" in daemon_process.cli("status").stdout
    human = daemon_process.cli("reset", "--yes")
    assert human.stdout.strip() == "cache reset: 0 node(s) and 0 item(s) forgotten"
    assert json.loads(daemon_process.cli("search", "--json").stdout) == []
