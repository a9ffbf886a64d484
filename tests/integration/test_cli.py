"""The ``libervia-cache`` command end to end: a real daemon process, a real server."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.words.protocols.jabber.jid import JID

from tests.harness.daemon import (
    DaemonProcess,
    atom_entry,
    run_cli,
    write_config,
)
from tests.servers.base import XMPPServer
from tests.servers.publisher import Publisher

MICROBLOG = "urn:xmpp:microblog:0"


def without_cached(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metadata.items() if key != "cached"}


async def test_get_answers_from_the_network_then_from_the_cache_after_sync(
    daemon_process: DaemonProcess,
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await publisher.create_node(service, node, {"pubsub#access_model": "open"})
    published = await publisher.publish(
        service, node, [(f"p{n}", atom_entry(f"p{n}", f"Post {n}")) for n in range(12)], depth=1
    )

    network = json.loads(daemon_process.cli("get", service.full(), node, "--json").stdout)
    assert network["metadata"]["cached"] is False
    assert network["metadata"]["service"] == service.full()
    assert network["metadata"]["node"] == node

    synced = json.loads(daemon_process.cli("sync", service.full(), node, "--wait", "--json").stdout)
    assert [row["state"] for row in synced["nodes"]] == ["COMPLETED"]
    assert synced["nodes"][0]["items"] == len(published)

    cached = json.loads(daemon_process.cli("get", service.full(), node, "--json").stdout)
    assert cached["metadata"]["cached"] is True
    assert cached["items"] == network["items"]

    last_page = ("get", service.full(), node, "--rsm-max", "5", "--before", "--json")
    page = json.loads(daemon_process.cli(*last_page).stdout)
    if xmpp_server.quirks["rsm"] and not xmpp_server.quirks["rsm_keys_are_item_ids"]:
        # the server's own RSM keys of these items are not known yet: the first read of
        # the page goes to the server and the cache learns them from its answer
        assert page["metadata"]["cached"] is False
        learnt = json.loads(daemon_process.cli(*last_page).stdout)
        assert learnt["metadata"]["cached"] is True
        assert learnt["items"] == page["items"]
        assert without_cached(learnt["metadata"]) == without_cached(page["metadata"])
        page = learnt
    assert page["metadata"]["cached"] is True
    if xmpp_server.quirks["rsm"]:
        assert page["items"] == network["items"][-5:]
        assert page["metadata"]["rsm"]["count"] == 12
        assert page["metadata"]["rsm"]["index"] == 7
    else:
        # the server ignores RSM (every item, no RSM data): the cache answers as it does
        server_page = json.loads(daemon_process.cli(*last_page, "--no-cache").stdout)
        assert server_page["metadata"]["cached"] is False
        assert page["items"] == server_page["items"] == network["items"]
        assert without_cached(page["metadata"]) == without_cached(server_page["metadata"])
        assert "rsm" not in page["metadata"]

    bypass = json.loads(
        daemon_process.cli("get", service.full(), node, "--no-cache", "--json").stdout
    )
    assert bypass["metadata"]["cached"] is False
    assert bypass["items"] == network["items"]


async def test_human_output_lists_items_and_says_where_they_came_from(
    daemon_process: DaemonProcess,
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node("plain")
    await publisher.create_node(service, node, {"pubsub#access_model": "open"})
    await publisher.publish(service, node, [("only", "<x xmlns='urn:test'>hello</x>")])
    result = daemon_process.cli("get", service.full(), node)
    assert "hello" in result.stdout
    assert "1 item(s)" in result.stderr and "from the network" in result.stderr


def test_commands_say_in_one_line_when_no_daemon_runs(
    xmpp_server: XMPPServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path, xmpp_server, profiles=["bob"])
    result = run_cli(config, "get", "pubsub.localhost", "node", check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no daemon is running" in result.stderr


def test_a_node_the_service_does_not_have_is_one_line_with_exit_code_1(
    daemon_process: DaemonProcess, xmpp_server: XMPPServer
) -> None:
    # item-not-found on the node is the caller's error (libervia_cache.errors: not_found)
    result = daemon_process.cli(
        "get", xmpp_server.pubsub_service, "this-node-does-not-exist", check=False
    )
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "item-not-found" in result.stderr


#: how each server refuses a read of a whitelist node to a JID it does not list
REFUSAL = {"ejabberd": "not-allowed", "prosody": "forbidden", "libervia-pubsub": "forbidden"}


async def test_a_server_error_is_one_line_with_exit_code_3(
    daemon_process: DaemonProcess,
    publisher: Publisher,
    xmpp_server: XMPPServer,
    fresh_node: Callable[..., str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await publisher.create_node(service, node, {"pubsub#access_model": "whitelist"})
    await publisher.publish(service, node, [("p0", atom_entry("p0", "Post 0"))])
    result = daemon_process.cli("get", service.full(), node, check=False)
    assert result.returncode == 3, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert REFUSAL[xmpp_server.kind] in result.stderr


def test_the_daemon_stops_cleanly_on_sigint(xmpp_server: XMPPServer, tmp_path: Path) -> None:
    daemon = DaemonProcess(write_config(tmp_path, xmpp_server, profiles=["bob"]))
    daemon.start()
    assert daemon.process is not None
    os.kill(daemon.process.pid, signal.SIGINT)
    assert daemon.process.wait(timeout=20) == 0, daemon.log()
    assert "Traceback" not in daemon.log()
    assert not (tmp_path / "daemon.sock").exists()
