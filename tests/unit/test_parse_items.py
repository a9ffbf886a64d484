"""Parsing items with an analyser's parser: failures leave the item stored raw."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from libervia_cache.plugin.analysis import Analyser
from libervia_cache.plugin.items import normalise_item, parse_items
from libervia_cache.plugin.xml import parse_element

SERVICE = JID("pubsub.example.org")
PUBSUB = "http://jabber.org/protocol/pubsub"


def item(item_id: str | None) -> domish.Element:
    attribute = f" id='{item_id}'" if item_id is not None else ""
    return parse_element(f"<item xmlns='{PUBSUB}'{attribute}><p xmlns='urn:t'>text</p></item>")


def analyser(parser: Any) -> Analyser:
    return Analyser(name="test", type="t", node="n", parser=parser)


@pytest.mark.parametrize(
    ("result", "why"),
    [
        (RuntimeError("boom"), "failed"),
        ({"set": {1, 2}}, "not JSON"),
        ({"nan": float("nan")}, "not JSON"),
        (["a", "list"], "returned list"),
    ],
)
async def test_a_failing_parser_leaves_the_item_raw_and_names_it(
    result: Any, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    def parser(client: Any, element: domish.Element, service: JID, node: str) -> Any:
        if element["id"] == "bad":
            if isinstance(result, Exception):
                raise result
            return result
        return {"ok": True}

    with caplog.at_level(logging.WARNING):
        parsed = await parse_items(
            analyser(parser), None, SERVICE, "node-x", [item("good"), item("bad")]
        )  # type: ignore[arg-type]
    assert [(i, p) for i, __, p in parsed] == [("good", {"ok": True}), ("bad", None)]
    assert any(
        "'bad'" in r.getMessage() and "node-x" in r.getMessage() and why in r.getMessage()
        for r in caplog.records
    )


async def test_parsers_may_be_coroutines_or_return_deferreds() -> None:
    async def coroutine_parser(
        client: Any, element: domish.Element, service: JID, node: str
    ) -> Any:
        return {"id": element["id"]}

    def deferred_parser(client: Any, element: domish.Element, service: JID, node: str) -> Any:
        return defer.succeed({"id": element["id"]})

    for parser in (coroutine_parser, deferred_parser):
        parsed = await parse_items(analyser(parser), None, SERVICE, "n", [item("a")])  # type: ignore[arg-type]
        assert parsed[0][2] == {"id": "a"}


async def test_items_without_id_are_left_out_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        parsed = await parse_items(None, None, SERVICE, "n", [item(None), item("a")])  # type: ignore[arg-type]
    assert [i for i, __, __ in parsed] == ["a"]
    assert any("without id" in r.getMessage() for r in caplog.records)


def test_event_items_are_stored_in_the_pubsub_namespace() -> None:
    event_item = parse_element(
        "<item xmlns='http://jabber.org/protocol/pubsub#event' id='e' publisher='a@b'>"
        "<p xmlns='urn:t'>x</p></item>"
    )
    normalised = normalise_item(event_item)
    assert normalised.toXml() == (
        f"<item xmlns='{PUBSUB}' id='e' publisher='a@b'><p xmlns='urn:t'>x</p></item>"
    )


async def test_an_item_nested_too_deeply_is_refused_with_its_id_not_a_recursion_error() -> None:
    from libervia_cache.plugin.items import MAX_ITEM_DEPTH, UnstorableItem

    depth = 1500  # as Prosody relays it
    payload = "<a xmlns='urn:deep'>" * depth + "</a>" * depth
    deep = parse_element(
        f"<item xmlns='http://jabber.org/protocol/pubsub' id='deep'>{payload}</item>"
    )
    shallow = parse_element(
        "<item xmlns='http://jabber.org/protocol/pubsub' id='ok'><x xmlns='urn:x'/></item>"
    )
    with pytest.raises(UnstorableItem, match=f"'deep' is nested more than {MAX_ITEM_DEPTH}"):
        await parse_items(None, None, SERVICE, "node", [shallow, deep])  # type: ignore[arg-type]


async def test_an_item_as_deep_as_the_limit_is_stored() -> None:
    from libervia_cache.plugin.items import MAX_ITEM_DEPTH

    payload = "<a xmlns='urn:deep'>" * MAX_ITEM_DEPTH + "</a>" * MAX_ITEM_DEPTH
    item = parse_element(f"<item xmlns='http://jabber.org/protocol/pubsub' id='d'>{payload}</item>")
    [(item_id, raw, __)] = await parse_items(None, None, SERVICE, "node", [item])  # type: ignore[arg-type]
    assert item_id == "d" and raw.count("<a") == MAX_ITEM_DEPTH
