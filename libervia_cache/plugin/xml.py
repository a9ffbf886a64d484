"""Parsing serialised XML back into domish elements."""

from __future__ import annotations

from typing import Any

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


class LazyElement(domish.Element):
    """An element kept as its serialised XML until something looks inside it.

    Cached items are stored serialised; most answers are serialised again (the bridge
    sends XML text), so parsing every item of every page would be wasted work.
    ``toXml()`` returns the stored text as long as the element was not parsed; anything
    else (attributes, children, ``elements()``, item access) parses it once, and from
    then on it behaves, and serialises, as the parsed element, mutations included.
    """

    def __init__(self, xml: str, qname: tuple[str, str]) -> None:
        self.uri, self.name = qname
        self.defaultUri = self.uri
        self.localPrefixes: dict[str, str] = {}
        self.parent = None
        self._xml = xml
        self._parsed: domish.Element | None = None

    def _element(self) -> domish.Element:
        if self._parsed is None:
            self._parsed = parse_element(self._xml)
        return self._parsed

    @property
    def attributes(self) -> dict[Any, str]:
        return self._element().attributes

    @attributes.setter
    def attributes(self, value: dict[Any, str]) -> None:
        self._element().attributes = value

    @property
    def children(self) -> list[Any]:
        return self._element().children

    @children.setter
    def children(self, value: list[Any]) -> None:
        self._element().children = value

    def toXml(
        self,
        prefixes: Any = None,
        closeElement: int = 1,
        defaultUri: str = "",
        prefixesInScope: Any = None,
    ) -> str:
        if (
            self._parsed is None
            and prefixes is None
            and closeElement
            and not defaultUri
            and not prefixesInScope
        ):
            return self._xml
        return super().toXml(prefixes, closeElement, defaultUri, prefixesInScope)
