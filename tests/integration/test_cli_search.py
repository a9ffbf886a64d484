"""Reading commands end to end: search, cache-get and status, through one daemon process.

The module's daemon (profile bob) holds one synchronised microblog node of 12 posts:
``p0``..``p11``, titled ``Post N``; posts with N divisible by 3 talk about twisted; tags
are ``even``/``odd``, plus ``xmpp`` when N is divisible by 4.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.words.protocols.jabber.jid import JID

from tests.conftest import run
from tests.harness.daemon import DaemonProcess, atom_entry, cli_json, running_daemon
from tests.integration.conftest import unique_node_name
from tests.servers.base import XMPPServer
from tests.servers.publisher import connect_publisher

MICROBLOG = "urn:xmpp:microblog:0"
POSTS = 12


def post(n: int) -> tuple[str, str]:
    tags = ["even" if n % 2 == 0 else "odd"] + (["xmpp"] if n % 4 == 0 else [])
    content = "about twisted and asyncio" if n % 3 == 0 else "plain words"
    return f"p{n}", atom_entry(f"p{n}", f"Post {n}", content, tags)


@dataclass
class Blog:
    daemon: DaemonProcess
    service: str
    node: str

    def cli(self, *args: str, check: bool = True) -> object:
        return self.daemon.cli(*args, check=check)


@pytest.fixture(scope="module")
def blog(xmpp_server: XMPPServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Blog]:
    """A daemon whose cache holds one synchronised microblog node (see the docstring)."""
    service = JID(xmpp_server.pubsub_service)
    node = unique_node_name(MICROBLOG)

    async def publish() -> None:
        publisher = await connect_publisher(xmpp_server, "alice", f"pub-{uuid.uuid4().hex[:8]}")
        try:
            await publisher.create_node(service, node, {"pubsub#access_model": "open"})
            await publisher.publish(service, node, [post(n) for n in range(POSTS)], depth=1)
        finally:
            await publisher.close()

    run(publish())
    directory: Path = tmp_path_factory.mktemp("cli-search")
    with running_daemon(directory, xmpp_server) as daemon:
        synced = cli_json(daemon, "sync", service.full(), node, "--wait")
        assert [row["state"] for row in synced["nodes"]] == ["COMPLETED"], synced
        yield Blog(daemon, service.full(), node)


def ids(results: list[dict[str, Any]]) -> list[str]:
    return [str(result["item_id"]) for result in results]


def without_cached(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metadata.items() if key != "cached"}


# --- search ----------------------------------------------------------------------------------


def test_search_prints_a_table_of_full_text_matches_for_people(blog: Blog) -> None:
    result = blog.daemon.cli("search", "--fts", "twisted", "--node", blog.node)
    for n in (0, 3, 6, 9):
        assert f"Post {n}" in result.stdout
    assert "Post 1 " not in result.stdout
    assert "title" in result.stdout and "published" in result.stdout
    assert "2026-01-01T00:00:00Z" in result.stdout
    assert result.stderr.strip() == "4 result(s)"


def test_search_json_is_a_list_of_service_node_item_and_parsed_data(blog: Blog) -> None:
    results = cli_json(
        blog.daemon, "search", "--node", blog.node, "--parsed", "tags", "overlap", '["xmpp"]'
    )
    assert sorted(ids(results)) == ["p0", "p4", "p8"]
    for result in results:
        assert result["service"] == blog.service
        assert result["node"] == blog.node
        assert result["profile"] == "bob"
        assert "xmpp" in result["parsed"]["tags"]
        assert isinstance(result["created"], str)  # ISO 8601
        assert "item_payload" not in result


def test_search_parsed_value_is_a_string_when_not_json(blog: Blog) -> None:
    results = cli_json(
        blog.daemon, "search", "--node", blog.node, "--parsed", "title", "==", "Post 5"
    )
    assert ids(results) == ["p5"]


def test_search_orders_and_pages_results(blog: Blog) -> None:
    results = cli_json(
        blog.daemon,
        "search",
        "--node",
        blog.node,
        "--order-by",
        "item_id:desc",
        "--index",
        "1",
        "--limit",
        "3",
    )
    expected = sorted((f"p{n}" for n in range(POSTS)), reverse=True)[1:4]
    assert ids(results) == expected


def test_search_filters_by_type_item_and_can_include_payloads(blog: Blog) -> None:
    results = cli_json(
        blog.daemon,
        "search",
        "--type",
        "blog",
        "--node",
        blog.node,
        "--item",
        "p1",
        "--item",
        "p2",
        "--with-payload",
    )
    assert sorted(ids(results)) == ["p1", "p2"]
    assert all("<entry" in result["item_payload"] for result in results)
    assert cli_json(blog.daemon, "search", "--type", "no-such-type", "--node", blog.node) == []


def test_search_orders_by_rank_with_full_text_and_by_a_parsed_path(blog: Blog) -> None:
    ranked = cli_json(
        blog.daemon, "search", "--fts", "twisted", "--node", blog.node, "--order-by", "rank"
    )
    assert sorted(ids(ranked)) == ["p0", "p3", "p6", "p9"]
    assert all("rank" in result for result in ranked)
    by_title = cli_json(
        blog.daemon, "search", "--node", blog.node, "--order-by", "title:desc", "--limit", "2"
    )
    assert [r["parsed"]["title"] for r in by_title] == ["Post 9", "Post 8"]


def test_a_bad_search_query_is_one_line_naming_the_bad_part_with_exit_code_1(
    blog: Blog,
) -> None:
    result = blog.daemon.cli("search", "--parsed", "tags", "nope", "x", check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "parsed[0].op" in result.stderr
    result = blog.daemon.cli("search", "--order-by", "rank", "--json", check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert "order-by[0].order" in result.stderr


def test_searching_an_unknown_profile_is_not_found(blog: Blog) -> None:
    result = blog.daemon.cli("search", "--profile", "nobody", check=False)
    assert result.returncode == 1
    assert "unknown profile 'nobody'" in result.stderr


# --- cache-get ----------------------------------------------------------------------------


def test_cache_get_answers_a_synchronised_node_like_the_service(
    blog: Blog, xmpp_server: XMPPServer
) -> None:
    cached = cli_json(blog.daemon, "cache-get", blog.service, blog.node)
    network = cli_json(blog.daemon, "get", blog.service, blog.node, "--no-cache")
    assert cached["metadata"]["cached"] is True
    assert cached["items"] == network["items"]
    last_page = (blog.service, blog.node, "--rsm-max", "5", "--before")
    if xmpp_server.quirks["rsm"] and not xmpp_server.quirks["rsm_keys_are_item_ids"]:
        # the server's own RSM keys of these items are not known until it has answered
        # this page once: cache-get says so in one line, and answers once a get learnt them
        refused = blog.daemon.cli("cache-get", *last_page, "--json", check=False)
        assert refused.returncode == 1 and refused.stdout == ""
        assert "unknown RSM key" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert cli_json(blog.daemon, "get", *last_page)["metadata"]["cached"] is False
    page = cli_json(blog.daemon, "cache-get", *last_page)
    if xmpp_server.quirks["rsm"]:
        assert page["items"] == network["items"][-5:]
        assert page["metadata"]["rsm"]["count"] == POSTS
    else:
        # the service ignores RSM (every item, no RSM data): the cache answers as it does
        server_page = cli_json(blog.daemon, "get", *last_page, "--no-cache")
        assert server_page["metadata"]["cached"] is False
        assert page["items"] == server_page["items"] == network["items"]
        assert without_cached(page["metadata"]) == without_cached(server_page["metadata"])
        assert "rsm" not in page["metadata"]
    human = blog.daemon.cli("cache-get", blog.service, blog.node, "--item", "p3")
    assert "Post 3" in human.stdout
    assert "1 item(s)" in human.stderr and "from the cache" in human.stderr


def test_cache_get_of_a_node_not_cached_is_a_not_cached_error(blog: Blog) -> None:
    result = blog.daemon.cli("cache-get", blog.service, "never-seen", "--json", check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "is not cached" in result.stderr


# --- status ---------------------------------------------------------------------------------


def test_status_shows_a_table_of_cached_nodes_and_the_counters(blog: Blog) -> None:
    blog.daemon.cli("get", blog.service, blog.node)  # a hit
    result = blog.daemon.cli("status")
    for text in ("profiles", "last sync", blog.node, "COMPLETED", "(blog)", f"{POSTS}/{POSTS}"):
        assert text in result.stdout, text
    assert "hit(s)" in result.stdout and "miss(es)" in result.stdout


def test_status_json_of_one_node_holds_its_row_and_the_counters(blog: Blog) -> None:
    status = cli_json(blog.daemon, "status", blog.service, blog.node)
    [row] = status["nodes"]
    assert row["node"] == blog.node
    assert row["service"] == blog.service
    assert row["profile"] == "bob"
    assert row["state"] == "COMPLETED"
    assert row["items"] == POSTS
    assert row["type"] == "blog"
    assert isinstance(row["last_sync"], str)
    assert status["counters"]["hits"] >= 1
    assert cli_json(blog.daemon, "status", blog.service, "never-seen")["nodes"] == []
