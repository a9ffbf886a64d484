"""Every error a user can cause, through the CLI against a real daemon: one line on stderr,
no result on stdout, the documented exit code (1 bad input or not found, 3 server), never
a Python exception name or ``None``; the daemon's log holds no traceback for any of them.
Also ``search``: how many results beyond the limit, and a bad JID refused."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from twisted.words.protocols.jabber.jid import JID

from tests.conftest import run
from tests.harness.daemon import DaemonProcess, atom_entry
from tests.servers.base import XMPPServer
from tests.servers.publisher import connect_publisher

MICROBLOG = "urn:xmpp:microblog:0"
#: what a message for a person never holds
LEAKS = re.compile(r"\bNone\b|Traceback|\b[A-Z]\w*(Error|Exception)\b|internal error")

SERVICE = "{service}"


class Nodes:
    """The module's nodes: a synchronised blog of 6 posts, and a node bob may not read."""

    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.blog = f"{MICROBLOG}-errors-{suffix}"
        self.refused = f"refused-{suffix}"


@pytest.fixture(scope="module")
def nodes(daemon_process: DaemonProcess, xmpp_server: XMPPServer) -> Iterator[Nodes]:
    created = Nodes()
    service = JID(xmpp_server.pubsub_service)

    async def publish() -> None:
        publisher = await connect_publisher(xmpp_server, "alice", f"pub-{uuid.uuid4().hex[:8]}")
        try:
            await publisher.create_node(service, created.blog, {"pubsub#access_model": "open"})
            posts = [(f"p{n}", atom_entry(f"p{n}", f"Duck {n}")) for n in range(6)]
            await publisher.publish(service, created.blog, posts, depth=1)
            access = {"pubsub#access_model": "whitelist"}
            await publisher.create_node(service, created.refused, access)
            await publisher.publish(service, created.refused, [("x", atom_entry("x", "no"))])
        finally:
            await publisher.close()

    run(publish())
    daemon_process.cli("sync", service.full(), created.blog, "--wait")
    yield created


#: (command line, exit code, what the message says); SERVICE is the server's service
USER_ERRORS: list[tuple[list[str], int, str]] = [
    # bad input: exit 1
    (["get", SERVICE, ""], 1, "a node name cannot be empty"),
    (["get", "bad@@jid", "node"], 1, "service: 'bad@@jid' is not a valid JID"),
    (["get", SERVICE, "node", "--rsm-max", "many"], 1, "'many' is not a valid integer range"),
    (["get", SERVICE, "node", "--after", "a", "--before", "b"], 1, "use only one of"),
    (["sync", SERVICE, ""], 1, "a node name cannot be empty"),
    (["get", "a..b", "node"], 1, "service: 'a..b' is not a valid JID"),
    (["status", "bad@@jid"], 1, "service: 'bad@@jid' is not a valid JID"),
    (["status", "a..b"], 1, "service: 'a..b' is not a valid JID"),
    (["search", "--service", "a..b"], 1, "services: 'a..b' is not a valid JID"),
    (["search", "--service", "bad@@jid"], 1, "services: 'bad@@jid' is not a valid JID"),
    (["search", "--order-by", "published:up"], 1, "unknown direction 'up' (asc or desc)"),
    (["search", "--fts", '"unclosed'], 1, "invalid full-text query"),
    (["search", "--parsed", "tags", "sort-of", "x"], 1, "sort-of"),
    (["purge", "--service", "bad@@jid", "--yes"], 1, "services: 'bad@@jid' is not a valid JID"),
    (["purge", "--updated-before", "yesterday"], 1, "neither an ISO 8601 date"),
    (["no-such-command"], 1, "No such command 'no-such-command'"),
    # unknown things: exit 1
    (["get", SERVICE, "no-such-node-here"], 1, "item-not-found"),
    (["sync", SERVICE, "no-such-node-here", "--wait"], 1, "has no node 'no-such-node-here'"),
    (["cache-get", SERVICE, "no-such-node-here"], 1, "is not cached"),
    (["--profile", "nobody", "get", SERVICE, "node"], 1, "unknown profile 'nobody' (known: bob)"),
    (["--profile", "nobody", "status"], 1, "unknown profile 'nobody'"),
    (["search", "--profile", "nobody"], 1, "unknown profile 'nobody'"),
    # the server refuses: exit 3
    (["get", SERVICE, "{refused}"], 3, "the pubsub service answered"),
    (["sync", SERVICE, "{refused}", "--wait"], 3, "the pubsub service answered"),
]


@pytest.mark.parametrize(
    ("args", "code", "says"), USER_ERRORS, ids=[" ".join(e[0]) or "''" for e in USER_ERRORS]
)
def test_a_user_error_is_one_line_with_its_exit_code(
    daemon_process: DaemonProcess,
    xmpp_server: XMPPServer,
    nodes: Nodes,
    args: list[str],
    code: int,
    says: str,
) -> None:
    argv = [a.format(service=xmpp_server.pubsub_service, refused=nodes.refused) for a in args]
    result = daemon_process.cli(*argv, check=False)
    assert result.returncode == code, result.stderr
    # nothing on stdout but the progress lines of sync --wait
    assert all(line.startswith(f"sync {argv[2]}: ") for line in result.stdout.splitlines())
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("libervia-cache")
    assert says in result.stderr, result.stderr
    assert not LEAKS.search(result.stderr), result.stderr


def test_no_user_error_leaves_a_traceback_in_the_daemons_log(
    daemon_process: DaemonProcess, nodes: Nodes
) -> None:
    # after the errors above (same module, same daemon)
    assert "Traceback" not in daemon_process.log()
    assert " ERROR libervia_cache.backend.bridge" not in daemon_process.log()


def test_a_missing_node_synchronised_explicitly_leaves_no_row(
    daemon_process: DaemonProcess, xmpp_server: XMPPServer, nodes: Nodes
) -> None:
    daemon_process.cli("sync", xmpp_server.pubsub_service, "gone-node-x", "--wait", check=False)
    status = daemon_process.cli("status", xmpp_server.pubsub_service, "gone-node-x", "--json")
    assert '"nodes": []' in status.stdout


# --- search ---------------------------------------------------------------------------------


def test_search_says_when_more_results_match_than_it_shows(
    daemon_process: DaemonProcess, nodes: Nodes
) -> None:
    result = daemon_process.cli("search", "--node", nodes.blog, "--limit", "4")
    assert result.stderr.splitlines() == [
        "4 result(s) shown, more match: the next ones with --index 4, or a higher --limit"
    ]
    rest = daemon_process.cli("search", "--node", nodes.blog, "--limit", "4", "--index", "4")
    assert rest.stderr.splitlines() == ["2 result(s)"]


def test_search_normalises_the_service_jids_it_is_given(
    daemon_process: DaemonProcess, xmpp_server: XMPPServer, nodes: Nodes
) -> None:
    shouting = xmpp_server.pubsub_service.upper()
    result = daemon_process.cli("search", "--service", shouting, "--node", nodes.blog)
    assert result.stderr.splitlines() == ["6 result(s)"]
