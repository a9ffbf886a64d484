"""Parsing serialised XML back into domish elements."""

from __future__ import annotations

from twisted.words.xish import domish


class XMLParseError(ValueError):
    """The text is not one well-formed XML element."""


def parse_element(xml: str | bytes) -> domish.Element:
    """Parse one serialised element, text included.

    ``tx_xmpp.generic.parseXml`` treats its input as a stream root and drops the root's
    own character data (``<x>hello</x>`` comes back as ``<x/>``); wrapping the element
    in a throwaway root keeps it whole.
    """
    if isinstance(xml, str):
        xml = xml.encode()
    elements: list[domish.Element] = []
    stream = domish.elementStream()
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = elements.append
    stream.DocumentEndEvent = lambda: None
    try:
        stream.parse(b"<wrapper>" + xml + b"</wrapper>")
    except Exception as error:
        raise XMLParseError(f"invalid XML: {error}") from None
    if len(elements) != 1:
        raise XMLParseError(f"expected one XML element, got {len(elements)}")
    return elements[0]
