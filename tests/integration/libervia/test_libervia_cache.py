"""libervia-cache inside the real Libervia backend, in place of its own cache.

Libervia's XEP-0277 plugin registers its analyser on libervia-cache, unchanged; a node
read through Libervia's bridge is synchronised and then answered from the cache (no
pubsub request leaves the backend; the metadata says ``cached``), equal to the server's
answer; events keep it fresh; the ``ps_cache_*`` methods answer Libervia's frontends as
the stock cache does. Every test runs on every server kind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tests.integration.libervia.conftest import NS_MICROBLOG, PROFILE, Libervia, entry
from tests.servers.libervia_backend import sleep
from tests.servers.publisher import Publisher


def without_origin(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "cached"}


async def blog_node(
    publisher: Publisher, libervia: Libervia, fresh_node: Callable[..., str], count: int
) -> str:
    """A new microblog node holding ``count`` items ``e01``..., oldest first."""
    node = fresh_node(NS_MICROBLOG)
    await publisher.create_node(libervia.service, node)
    items = [entry(f"e{n:02d}", f"Title {n}") for n in range(1, count + 1)]
    await publisher.publish(libervia.service, node, items, depth=1)
    return node


async def test_xep_0277_registers_its_analyser_unchanged_and_the_stock_cache_is_not_loaded(
    libervia: Libervia,
) -> None:
    plugin = await libervia.probe("cache_plugin")
    assert plugin["module"] == "libervia_cache.hosts.libervia.adapter"
    assert plugin["analysers"] == ["xep-0277"]
    # Libervia's name for it (the stock cache's docstring says exceptions.Conflict, which
    # Libervia does not define) and the plugin's own kind of error
    assert {"ConflictError", "ValueError"} <= set(plugin["duplicate_error"])
    log = libervia.backend.log_text()
    assert "libervia-cache: pubsub cache initialisation" in log
    assert "PubSub Cache initialization" not in log  # the stock cache's first words
    assert libervia.backend.database.exists()  # in Libervia's local directory


async def test_a_node_read_through_the_bridge_is_synchronised_then_served_from_the_cache(
    libervia: Libervia, publisher: Publisher, fresh_node: Callable[..., str]
) -> None:
    node = await blog_node(publisher, libervia, fresh_node, 30)

    first = await libervia.items_get(node, 10)
    assert first["cached"] is False
    row = await libervia.wait_synchronised(node)
    # synchronised by Libervia's own analyser, every item (the stock cache keeps 20
    # where RSM is not advertised)
    assert (row["analyser"], row["type"], row["subtype"]) == ("xep-0277", "blog", None)
    assert row["items"] == 30

    # nothing asked to the server
    cached = await libervia.read_sending_nothing(lambda: libervia.items_get(node, 10))
    assert cached["cached"] is True
    network = await libervia.network(node, 10)
    assert without_origin(cached) == without_origin(network)
    every = await libervia.items_get(node)
    assert every["cached"] is True and len(every["items"]) == 30
    assert every["items"] == (await libervia.network(node))["items"]

    # in-process, as another Libervia plugin reads it
    inside = await libervia.probe(
        "get_items", profile=PROFILE, service=libervia.service, node=node, max_items=10
    )
    assert inside["metadata"]["cached"] is True
    assert inside["ids"] == [f"e{n}" for n in range(21, 31)]


async def test_rsm_pages_through_the_bridge_equal_the_server_s(
    libervia: Libervia, publisher: Publisher, fresh_node: Callable[..., str]
) -> None:
    node = await blog_node(publisher, libervia, fresh_node, 12)
    await libervia.call("ps_cache_sync", libervia.service, node, PROFILE)
    for extra in ({"rsm_max": "5"}, {"rsm_max": "5", "rsm_before": ""}, {"rsm_max": "100"}):
        for __ in range(2):  # a miss teaches the cache the server's RSM keys (ejabberd)
            cached = await libervia.items_get(node, -1, extra)
            network = await libervia.network(node, -1, extra)
            assert without_origin(cached) == without_origin(network), extra


async def test_events_keep_the_cached_node_fresh(
    libervia: Libervia, publisher: Publisher, fresh_node: Callable[..., str]
) -> None:
    node = await blog_node(publisher, libervia, fresh_node, 5)
    await libervia.call("ps_cache_sync", libervia.service, node, PROFILE)
    await libervia.wait_synchronised(node)

    async def cached_until(condition: Callable[[list[str]], bool]) -> dict[str, Any]:
        # events are applied in the background (ejabberd also replays its last item to
        # the new subscriber): read until the cache shows the change
        deadline = time.monotonic() + 15
        while True:
            answer = await libervia.items_get(node)
            if answer["cached"] and condition(answer["items"]):
                return answer
            assert time.monotonic() < deadline, f"the cache did not show the change: {answer}"
            await sleep(0.05)

    synchronised = (await libervia.status(node) or {})["last_sync"]
    await publisher.publish(libervia.service, node, [entry("new", "A new post")])
    answer = await cached_until(lambda items: any("A new post" in item for item in items))
    assert answer["items"] == (await libervia.network(node))["items"]

    await publisher.retract(libervia.service, node, ["e01"])
    answer = await cached_until(lambda items: not any("e01" in item for item in items))
    assert answer["items"] == (await libervia.network(node))["items"]
    # the events did it: the node was not synchronised again
    assert (await libervia.status(node) or {})["last_sync"] == synchronised


async def test_comments_nodes_get_their_subtype_from_xep_0277_s_match_cb(
    libervia: Libervia, publisher: Publisher, fresh_node: Callable[..., str]
) -> None:
    node = f"{NS_MICROBLOG}:comments/{fresh_node('post')}"
    await publisher.create_node(libervia.service, node)
    await publisher.publish(libervia.service, node, [entry("c1", "A comment")])
    await libervia.items_get(node)
    row = await libervia.wait_synchronised(node)
    assert (row["type"], row["subtype"]) == ("blog", "comment")


async def test_search_answers_queries_as_libervia_s_cli_sends_them(
    libervia: Libervia, publisher: Publisher, fresh_node: Callable[..., str]
) -> None:
    node = await blog_node(publisher, libervia, fresh_node, 6)
    await libervia.call("ps_cache_sync", libervia.service, node, PROFILE)
    query: dict[str, Any] = {
        "fts": "",  # the CLI without -f
        "limit": 0,  # Libervia: no limit
        "index": 0,
        "nodes": [node],
        "types": ["blog"],
        "parsed": [{"path": ["title"], "op": "eq", "value": "Title 3"}],
        "order-by": [{"order": "creation", "direction": "DESC"}],
        "an_unknown_key": True,
    }
    results = await libervia.search(query)
    assert len(results) == 1
    result = results[0]
    # Libervia's XEP-0277 parsed data, and where it comes from
    assert result["title"] == "Title 3"
    assert result["id"] == "e03"
    assert result["pubsub_service"] == libervia.service
    assert result["pubsub_node"] == node
    assert result["node_profile"] == PROFILE
    assert "item_payload" not in result

    query["parsed"] = [{"path": ["title"], "op": "gt", "value": "Title 4"}]
    assert [r["id"] for r in await libervia.search(query)] == ["e06", "e05"]
    query["parsed"] = [{"path": ["title"], "op": "le", "value": "Title 2"}]
    assert [r["id"] for r in await libervia.search(query)] == ["e02", "e01"]
    # < is strictly less (Libervia's own cache reads it as <=)
    query["parsed"] = [{"path": ["title"], "op": "<", "value": "Title 2"}]
    assert [r["id"] for r in await libervia.search(query)] == ["e01"]
    with_payload = await libervia.search({"nodes": [node], "fts": "body", "with_payload": True})
    assert len(with_payload) == 6 and all("<entry" in r["item_payload"] for r in with_payload)


async def test_cache_methods_answer_with_libervia_s_signatures_and_errors(
    libervia: Libervia, publisher: Publisher, fresh_node: Callable[..., str]
) -> None:
    node = await blog_node(publisher, libervia, fresh_node, 4)
    service = libervia.service
    # not cached: NotFound, as the stock cache answers (the CLI says "not in cache")
    assert await libervia.error_of("ps_cache_get", service, node, 10, [], "", "{}", PROFILE) == (
        "NotFound"
    )
    assert await libervia.call("ps_cache_sync", service, node, PROFILE) == ""
    got = json.loads(await libervia.call("ps_cache_get", service, node, 2, [], "", "{}", PROFILE))
    assert got["cached"] is True and len(got["items"]) == 2
    assert got["uri"].startswith(f"xmpp:{service}?;node=")

    # purge filters as the CLI sends them: dates as epoch numbers
    filters = {"nodes": [node], "updated_before": time.time() + 60, "types": ["blog"]}
    assert await libervia.call("ps_cache_purge", json.dumps(filters)) == ""
    assert await libervia.error_of("ps_cache_get", service, node, 10, [], "", "{}", PROFILE) == (
        "NotFound"
    )
    assert await libervia.search({"nodes": [node]}) == []

    assert await libervia.call("ps_cache_reset") == ""
    assert await libervia.status(node) is None
    # a bad query is Libervia's DataError, naming what is wrong
    assert await libervia.error_of("ps_cache_search", '{"parsed": [{"op": "~"}]}') == "DataError"
