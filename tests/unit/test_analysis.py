"""The analyser registry and node analysis, with a fake pubsub plugin (unit level)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from libervia_cache.plugin.analysis import (
    AnalyserConflict,
    AnalyserError,
    AnalyserRegistry,
    analyse_node,
    node_to_sync,
)

SERVICE = JID("pubsub.example.org")


def item(namespace: str | None, item_id: str = "1") -> domish.Element:
    element = domish.Element(("http://jabber.org/protocol/pubsub", "item"))
    element["id"] = item_id
    if namespace:
        element.addElement((namespace, "payload"))
    return element


class FakePubsub:
    """Answers the two requests analysis makes; counts them."""

    def __init__(self, items: list[domish.Element] | Exception, conf: dict | Exception) -> None:
        self.items = items
        self.conf = conf
        self.item_requests = 0
        self.conf_requests = 0

    def get_items_from_network(self, client: Any, service: JID, node: str, **kw: Any):  # type: ignore[no-untyped-def]
        self.item_requests += 1
        if isinstance(self.items, Exception):
            return defer.fail(self.items)
        return defer.succeed((self.items, {}))

    def get_configuration(self, client: Any, service: JID, node: str):  # type: ignore[no-untyped-def]
        self.conf_requests += 1
        if isinstance(self.conf, Exception):
            return defer.fail(self.conf)
        return defer.succeed(self.conf)


def test_names_are_normalised_and_unique() -> None:
    registry = AnalyserRegistry()
    registry.register({"name": "  Blog ", "type": "blog", "node": "urn:blog"})
    assert registry.get("blog") is not None
    with pytest.raises(AnalyserConflict):
        registry.register({"name": "BLOG", "type": "other", "node": "x"})


@pytest.mark.parametrize(
    ("analyser", "message"),
    [
        ({"type": "t", "node": "n"}, "name"),
        ({"name": "a", "node": "n"}, "type"),
        ({"name": "a", "type": "t"}, "'node' prefix or a 'namespace'"),
        ({"name": "a", "type": "t", "node": "n", "parser": 3}, "'parser' must be callable"),
        ({"name": "a", "type": "t", "node": "n", "colour": "red"}, "colour"),
    ],
)
def test_invalid_analysers_are_refused_with_the_reason(analyser: dict, message: str) -> None:
    with pytest.raises(AnalyserError, match=message):
        AnalyserRegistry().register(analyser)


def test_the_longest_node_prefix_wins() -> None:
    registry = AnalyserRegistry()
    registry.register({"name": "blog", "type": "blog", "node": "urn:xmpp:microblog:0"})
    registry.register({"name": "comments", "type": "c", "node": "urn:xmpp:microblog:0:comments"})
    assert registry.match_node("urn:xmpp:microblog:0:comments/x").name == "comments"  # type: ignore[union-attr]
    assert registry.match_node("urn:xmpp:microblog:0").name == "blog"  # type: ignore[union-attr]
    assert registry.match_node("other") is None


async def test_a_node_prefix_match_needs_no_item_request() -> None:
    registry = AnalyserRegistry()
    registry.register({"name": "blog", "type": "blog", "node": "urn:blog", "to_sync": True})
    pubsub = FakePubsub([], {"max_items": "10"})
    analysis = await analyse_node(registry, pubsub, None, SERVICE, "urn:blog:x")  # type: ignore[arg-type]
    assert analysis.analyser is not None and analysis.analyser.name == "blog"
    assert analysis.to_sync
    assert analysis.configuration == {"max_items": "10"}
    assert pubsub.item_requests == 0


async def test_the_payload_namespace_of_the_newest_item_is_matched() -> None:
    registry = AnalyserRegistry()
    registry.register({"name": "events", "type": "event", "namespace": "urn:events"})
    pubsub = FakePubsub([item("urn:events")], StanzaError("forbidden"))
    analysis = await analyse_node(registry, pubsub, None, SERVICE, "some-node")  # type: ignore[arg-type]
    assert analysis.type == "event"
    assert analysis.namespace == "urn:events"
    assert analysis.configuration is None  # forbidden: analysis goes on without it


async def test_items_at_hand_spare_the_item_request() -> None:
    registry = AnalyserRegistry()
    registry.register({"name": "events", "type": "event", "namespace": "urn:events"})
    pubsub = FakePubsub([], {})
    analysis = await analyse_node(
        registry,
        pubsub,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        SERVICE,
        "n",
        first_items=[item("urn:other", "1"), item("urn:events", "2")],
    )
    assert analysis.type == "event"
    assert pubsub.item_requests == 0


async def test_fetch_failures_leave_the_node_unmatched_without_raising() -> None:
    registry = AnalyserRegistry()
    registry.register({"name": "events", "type": "event", "namespace": "urn:events"})
    pubsub = FakePubsub(StanzaError("item-not-found"), {})
    analysis = await analyse_node(registry, pubsub, None, SERVICE, "n")  # type: ignore[arg-type]
    assert analysis.analyser is None
    assert not analysis.to_sync


async def test_match_cb_amends_the_analysis_in_place_even_asynchronously() -> None:
    async def match_cb(client: Any, analysis: dict[str, Any]) -> None:
        assert analysis["conf"] == {"title": "x"}
        analysis["subtype"] = "comment"

    registry = AnalyserRegistry()
    registry.register({"name": "blog", "type": "blog", "node": "urn:blog", "match_cb": match_cb})
    analysis = await analyse_node(
        registry,
        FakePubsub([], {"title": "x"}),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        SERVICE,
        "urn:blog",
    )
    assert analysis.subtype == "comment"


async def test_a_failing_match_cb_keeps_the_analyser_match() -> None:
    def match_cb(client: Any, analysis: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    registry = AnalyserRegistry()
    registry.register({"name": "blog", "type": "blog", "node": "urn:blog", "match_cb": match_cb})
    analysis = await analyse_node(
        registry,
        FakePubsub([], {}),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        SERVICE,
        "urn:blog",
    )
    assert analysis.type == "blog"
    assert analysis.subtype is None


async def _analyse_with(match_cb: Any, to_sync: bool) -> Any:
    registry = AnalyserRegistry()
    registry.register(
        {
            "name": "blog",
            "type": "blog",
            "node": "urn:blog",
            "to_sync": to_sync,
            "match_cb": match_cb,
        }
    )
    return await analyse_node(
        registry,
        FakePubsub([], {}),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        SERVICE,
        "urn:blog:private",
    )


async def test_match_cb_may_turn_off_the_sync_of_one_node_and_it_is_kept_with_the_node() -> None:
    def match_cb(client: Any, analysis: dict[str, Any]) -> None:
        assert analysis["to_sync"] is True and analysis["name"] == "blog"
        if analysis["node"].endswith(":private"):
            analysis["to_sync"] = False

    analysis = await _analyse_with(match_cb, to_sync=True)
    assert analysis.to_sync is False
    assert analysis.extra == {"to_sync": False}
    assert node_to_sync(analysis.analyser, analysis.extra) is False


async def test_match_cb_may_turn_on_the_sync_of_one_node() -> None:
    def match_cb(client: Any, analysis: dict[str, Any]) -> None:
        analysis["to_sync"] = True

    analysis = await _analyse_with(match_cb, to_sync=False)
    assert analysis.to_sync is True
    assert node_to_sync(analysis.analyser, analysis.extra) is True


async def test_a_node_keeps_its_analyser_s_to_sync_unless_match_cb_changed_it() -> None:
    def match_cb(client: Any, analysis: dict[str, Any]) -> None:
        analysis["subtype"] = "x"

    analysis = await _analyse_with(match_cb, to_sync=True)
    assert analysis.to_sync is True
    assert "to_sync" not in analysis.extra
    assert node_to_sync(analysis.analyser, analysis.extra) is True
    assert node_to_sync(analysis.analyser, {"to_sync": "no"}) is True  # not a decision


async def test_a_to_sync_that_is_not_a_boolean_is_ignored() -> None:
    def match_cb(client: Any, analysis: dict[str, Any]) -> None:
        analysis["to_sync"] = "yes"

    analysis = await _analyse_with(match_cb, to_sync=False)
    assert analysis.to_sync is False
    assert "to_sync" not in analysis.extra
