"""Serialised XML back into elements: whole, and lazily."""

from __future__ import annotations

import pytest
from twisted.words.xish import domish

from libervia_cache.plugin.xml import LazyElement, XMLParseError, parse_element

PUBSUB = "http://jabber.org/protocol/pubsub"
RAW = (
    f"<item xmlns='{PUBSUB}' id='a&amp;b' publisher='x@y'>"
    "<entry xmlns='http://www.w3.org/2005/Atom'><title>t &lt; u</title>text</entry></item>"
)


def test_root_text_and_tails_are_kept() -> None:
    element = parse_element("<x xmlns='urn:t'>hello <b>w</b> tail</x>")
    assert element.toXml() == "<x xmlns='urn:t'>hello <b>w</b> tail</x>"


@pytest.mark.parametrize("bad", ["", "<a>", "<a/><b/>", "text", "<a></b>"])
def test_anything_but_one_element_is_refused(bad: str) -> None:
    with pytest.raises(XMLParseError):
        parse_element(bad)


def test_a_lazy_element_serialises_to_its_text_without_parsing() -> None:
    lazy = LazyElement(RAW, (PUBSUB, "item"))
    assert lazy.toXml() == RAW
    assert lazy._parsed is None


def test_a_lazy_element_behaves_as_the_parsed_one() -> None:
    lazy = LazyElement(RAW, (PUBSUB, "item"))
    parsed = parse_element(RAW)
    assert (lazy.uri, lazy.name) == (parsed.uri, parsed.name)
    assert lazy["id"] == "a&b" and lazy.getAttribute("publisher") == "x@y"
    assert [c.toXml() for c in lazy.elements()] == [c.toXml() for c in parsed.elements()]
    assert str(lazy.entry.title) == "t < u"
    assert lazy.toXml() == parsed.toXml()


def test_a_changed_lazy_element_serialises_its_changes() -> None:
    lazy = LazyElement(RAW, (PUBSUB, "item"))
    lazy["id"] = "new"
    lazy.addElement(("urn:extra", "extra"))
    xml = lazy.toXml()
    assert "id='new'" in xml and "<extra xmlns='urn:extra'/>" in xml


def test_a_lazy_child_serialises_inside_its_parent() -> None:
    parent = domish.Element((PUBSUB, "items"))
    parent.addChild(LazyElement(RAW, (PUBSUB, "item")))
    inherited = RAW.replace(f" xmlns='{PUBSUB}'", "")  # the parent declares it
    assert parent.toXml() == f"<items xmlns='{PUBSUB}'>{inherited}</items>"
