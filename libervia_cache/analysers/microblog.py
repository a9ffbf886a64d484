"""XEP-0277 microblog analyser, shipped as its own daemon plugin.

This module is loaded by the daemon through the ``libervia.backend.plugins`` entry point
group, exactly like a third-party plugin: it depends on the ``PUBSUB_CACHE`` plugin only
through ``host.plugins["PUBSUB_CACHE"].register_analyser`` and imports nothing from the
cache plugin or the reference daemon.

It registers the ``microblog`` analyser: nodes whose name starts with
``urn:xmpp:microblog:0`` (comments nodes ``urn:xmpp:microblog:0:comments/...`` included,
with subtype ``comment``), or whose items carry an Atom payload, are synchronised, and
their items are parsed by :func:`parse_item` into JSON that search can filter on.
"""

from __future__ import annotations

import email.utils
import html.parser
import logging
import math
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish

log = logging.getLogger(__name__)

NS_MICROBLOG = "urn:xmpp:microblog:0"
NS_MICROBLOG_COMMENTS_PREFIX = f"{NS_MICROBLOG}:comments/"
NS_ATOM = "http://www.w3.org/2005/Atom"
NS_ATOM_THREADING = "http://purl.org/syndication/thread/1.0"
NS_XHTML = "http://www.w3.org/1999/xhtml"
XML_LANG = ("http://www.w3.org/XML/1998/namespace", "lang")

PLUGIN_INFO = {
    "name": "Microblog cache analyser",
    "import_name": "MICROBLOG_ANALYSER",
    "dependencies": ["PUBSUB_CACHE"],
    "recommendations": [],
    "main": "MicroblogAnalyser",
    "description": (
        "Registers the XEP-0277 microblog analyser with the pubsub cache: microblog "
        "and comments nodes are synchronised and their Atom entries parsed for search."
    ),
}

#: XHTML elements after which a line break separates the text of what follows.
_XHTML_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt",
        "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header",
        "hr", "li", "ol", "p", "pre", "section", "table", "tr", "ul",
    }
)  # fmt: skip


#: ``type`` values of an Atom text element holding XHTML elements
_XHTML_TYPES = frozenset({"xhtml", "application/xhtml+xml"})
#: ``type`` values of an Atom text element holding escaped HTML
_HTML_TYPES = frozenset({"html", "text/html"})
#: HTML elements whose text is no human text
_HTML_HIDDEN = frozenset({"script", "style", "template"})


class _CachePlugin(Protocol):
    """The part of the ``PUBSUB_CACHE`` plugin this analyser uses."""

    def register_analyser(self, analyser: dict[str, Any]) -> Any: ...


class _Host(Protocol):
    """The part of the daemon host this plugin uses."""

    @property
    def plugins(self) -> Any: ...


# ---------------------------------------------------------------------------------------
# text helpers


def _iter_text(element: domish.Element) -> Iterator[str]:
    """Yield the text of ``element`` and its descendants in document order.

    Iterative (not recursive), so that absurdly nested payloads cannot exhaust the
    stack. A line break is yielded after each XHTML block element, so that the text of
    two paragraphs does not run together.
    """
    stack: list[Any] = [element]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            yield node
            continue
        if node is not element and node.name in _XHTML_BLOCKS:
            stack.append("\n")
        stack.extend(reversed(node.children))


def _text(element: domish.Element) -> str:
    """All the text of ``element``, stripped, with runs of blank lines collapsed."""
    raw = "".join(_iter_text(element))
    lines = [line.strip() for line in raw.splitlines()]
    return "\n".join(line for line in lines if line)


class _HTMLText(html.parser.HTMLParser):
    """Collects the text of an (escaped) HTML fragment, as Atom ``type="html"`` holds."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HTML_HIDDEN:
            self._hidden += 1
        if tag in _XHTML_BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HTML_HIDDEN and self._hidden:
            self._hidden -= 1
        if tag in _XHTML_BLOCKS:
            self.parts.append("\n")


def _html_to_text(markup: str) -> str:
    collector = _HTMLText()
    try:
        collector.feed(markup)
        collector.close()
    except Exception:  # html.parser is lenient; never let a malformed fragment escape
        return markup.strip()
    lines = [line.strip() for line in "".join(collector.parts).splitlines()]
    return "\n".join(line for line in lines if line)


def _serialise(element: domish.Element) -> str | None:
    """The XML of ``element``, or None if it is too deeply nested to serialise."""
    try:
        return element.toXml()
    except RecursionError:
        return None


def _children(element: domish.Element, name: str, uri: str = NS_ATOM) -> list[domish.Element]:
    return [child for child in element.elements() if child.name == name and child.uri == uri]


def _attribute(element: domish.Element, name: str | tuple[str, str]) -> str | None:
    """A non-empty, stripped attribute value, or None."""
    value = element.attributes.get(name)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


# ---------------------------------------------------------------------------------------
# parts of an entry


def _parse_text_constructs(entry: domish.Element, name: str, data: dict[str, Any]) -> None:
    """Fill ``data[name]`` (plain text) and ``data[name + "_xhtml"]`` from Atom text.

    XEP-0277 allows one element per type (e.g. a ``text`` and an ``xhtml`` content); the
    plain text comes from the ``text`` one when present (kept as written), otherwise from
    the text of the ``xhtml`` (tags removed) or ``html`` one. ``html`` (escaped markup)
    is kept as ``name + "_html"``; an ``xhtml`` element holding text and no elements is
    escaped markup too.
    """
    plain: str | None = None
    derived: str | None = None
    for element in _children(entry, name):
        kind = (_attribute(element, "type") or "text").lower()
        if kind in _XHTML_TYPES and not any(True for _ in element.elements()):
            # no XHTML elements, only text: escaped markup, as feedparser-based
            # gateways write Atom xhtml content (invalid Atom, but real)
            kind = "html"
        if kind in _XHTML_TYPES:
            div = next(
                (c for c in element.elements() if c.name == "div" and c.uri == NS_XHTML),
                None,
            )
            root = div if div is not None else element
            if f"{name}_xhtml" not in data:
                xml = _serialise(root) if div is not None else None
                if xml is not None:
                    data[f"{name}_xhtml"] = xml
            if derived is None:
                derived = _text(root) or None
        elif kind in _HTML_TYPES:
            markup = "".join(_iter_text(element)).strip()
            if markup and f"{name}_html" not in data:
                data[f"{name}_html"] = markup
            if derived is None and markup:
                derived = _html_to_text(markup) or None
        elif plain is None:
            plain = "".join(_iter_text(element)).strip() or None
    text = plain if plain is not None else derived
    if text is not None:
        data[name] = text


def _read_iso_8601(text: str) -> datetime:
    # RFC 3339 allows lower-case "t" and "z"; fromisoformat does not
    return datetime.fromisoformat(text.upper())


#: How a date may be written, tried in order: RFC 3339 and the ISO 8601 forms Python
#: reads (offsets with or without colon, fractions, ``Z``, a space for ``T``), as Atom
#: and XEP-0082 ask and Movim's PHP ``DATE_ISO8601`` writes (``+0100``); then RFC 2822
#: (``Mon, 06 Sep 2021 16:45:00 +0000``), the RSS date that feed-to-pubsub gateways
#: (atomtopubsub, Slixfeed) pass through unchanged.
_DATE_READERS: tuple[Callable[[str], datetime], ...] = (
    _read_iso_8601,
    email.utils.parsedate_to_datetime,
)

#: a leap second (``23:59:60``, RFC 3339 §5.7), which :class:`datetime` cannot hold
_LEAP_SECOND_RE = re.compile(r"(?<=\d\d:\d\d):60(?!\d)")


def parse_date(raw: str) -> datetime | None:
    """The instant a date names, in UTC, or None if it cannot be read.

    Accepts RFC 3339 / ISO 8601 (see :data:`_DATE_READERS`) and RFC 2822 dates. A date
    without offset (or RFC 2822's ``-0000``) is taken as UTC. A leap second
    (``1990-12-31T23:59:60Z``) is read as the next second (``1991-01-01T00:00:00Z``),
    since POSIX time has no room for it.
    """
    text, leap_seconds = _LEAP_SECOND_RE.subn(":59", raw.strip(), count=1)
    for read in _DATE_READERS:
        try:
            moment = read(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            moment = moment.astimezone(UTC) + timedelta(seconds=leap_seconds)
            if math.isfinite(moment.timestamp()):
                return moment
        except (ValueError, TypeError, IndexError, OverflowError, OSError):
            continue
    return None


def _parse_date(entry: domish.Element, name: str, data: dict[str, Any]) -> None:
    """Fill ``data[name]`` (UTC) and ``data[name + "_ts"]`` (POSIX timestamp).

    Dates are read by :func:`parse_date`. The string is normalised to
    ``YYYY-MM-DDTHH:MM:SSZ`` (fixed width, so that it also sorts as text; sub-second
    precision is kept in the timestamp only). An unreadable date is kept as
    ``name + "_raw"`` and has no timestamp.
    """
    element = next(iter(_children(entry, name)), None)
    if element is None:
        return
    raw = "".join(_iter_text(element)).strip()
    if not raw:
        return
    moment = parse_date(raw)
    if moment is None:
        data[f"{name}_raw"] = raw
        return
    # not strftime: "%Y" does not pad years before 1000 on every platform
    data[name] = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}Z"
    )
    data[f"{name}_ts"] = moment.timestamp()


def _jid_from_uri(uri: str) -> str | None:
    """The bare-or-full JID of an ``xmpp:`` URI (RFC 5122), or None."""
    if not uri.lower().startswith("xmpp:"):
        return None
    address = uri[5:]
    if address.startswith("//"):  # authority form: xmpp://auth@host/target
        address = address[2:].partition("/")[2]
    address = address.partition("?")[0].partition("#")[0]
    if not address:
        return None
    try:
        return JID(address).full()
    except (InvalidFormat, ValueError, UnicodeError):
        return None


def _parse_author(entry: domish.Element, data: dict[str, Any]) -> None:
    """Fill ``data["author"]`` from the first ``<author>``: name, uri, email, jid."""
    author_elt = next(iter(_children(entry, "author")), None)
    if author_elt is None:
        return
    author: dict[str, str] = {}
    for field in ("name", "uri", "email"):
        element = next(iter(_children(author_elt, field)), None)
        if element is not None:
            value = "".join(_iter_text(element)).strip()
            if value:
                author[field] = value
    if "uri" in author:
        jid = _jid_from_uri(author["uri"])
        if jid is not None:
            author["jid"] = jid
    if author:
        data["author"] = author


def _parse_categories(entry: domish.Element, data: dict[str, Any]) -> None:
    """Fill ``data["tags"]``: category terms in document order, without duplicates."""
    tags: dict[str, None] = {}
    for element in _children(entry, "category"):
        term = _attribute(element, "term")
        if term is not None:
            tags.setdefault(term)
    if tags:
        data["tags"] = list(tags)


def _parse_links(entry: domish.Element, data: dict[str, Any]) -> None:
    """Fill ``data["links"]`` and ``data["comments"]`` (XEP-0277 comments nodes)."""
    links: list[dict[str, str]] = []
    comments: list[str] = []
    for element in _children(entry, "link"):
        link = {
            key: value
            for key in ("rel", "href", "type", "title")
            if (value := _attribute(element, key)) is not None
        }
        if not link:
            continue
        links.append(link)
        if link.get("rel") == "replies" and link.get("title") == "comments" and "href" in link:
            comments.append(link["href"])
    if links:
        data["links"] = links
    if comments:
        data["comments"] = comments


def _parse_in_reply_to(entry: domish.Element, data: dict[str, Any]) -> None:
    """Fill ``data["in_reply_to"]`` (and ``in_reply_to_href``) from ``thr:in-reply-to``."""
    element = next(iter(_children(entry, "in-reply-to", NS_ATOM_THREADING)), None)
    if element is None:
        return
    ref = _attribute(element, "ref")
    if ref is not None:
        data["in_reply_to"] = ref
    href = _attribute(element, "href")
    if href is not None:
        data["in_reply_to_href"] = href


# ---------------------------------------------------------------------------------------
# public API


def parse_item(
    client: Any, item_elt: domish.Element, service: JID | None, node: str
) -> dict[str, Any]:
    """Parse a pubsub ``<item>`` holding a XEP-0277 Atom entry into JSON data for search.

    :param client: the profile's client (unused; part of the parser contract).
    :param item_elt: the ``<item id=...>`` element, its first child element being an
        Atom ``<entry>``.
    :param service: the pubsub service of the node (unused).
    :param node: the node name (unused).
    :return: a JSON-serialisable dict; every key is absent when the entry lacks it:

        - ``id``: the pubsub item id; ``publisher``: the item's ``publisher`` attribute
        - ``atom_id``: the Atom ``<id>``
        - ``title``, ``content``, ``summary``: plain text (the text of the ``xhtml``
          or ``html`` form when there is no ``text`` form); ``title_xhtml``,
          ``content_xhtml``, ``summary_xhtml``: the serialised XHTML ``<div>``;
          ``title_html``, ``content_html``, ``summary_html``: escaped HTML as given
        - ``author``: ``{"name", "uri", "email", "jid"}`` with what exists (``jid`` from
          an ``xmpp:`` uri)
        - ``published``, ``updated``: ``YYYY-MM-DDTHH:MM:SSZ`` in UTC, with
          ``published_ts``, ``updated_ts`` as POSIX timestamps (float seconds); dates
          are read in RFC 3339 / ISO 8601 and RFC 2822 forms (:func:`parse_date`); an
          unreadable date is kept as ``published_raw``/``updated_raw`` without
          timestamp
        - ``tags``: category terms, in order, deduplicated
        - ``links``: ``[{"rel", "href", "type", "title"}]`` with what exists
        - ``comments``: hrefs of ``rel="replies"`` links titled ``comments``
        - ``in_reply_to``: the ``ref`` of ``thr:in-reply-to`` (``in_reply_to_href``
          its ``href``)
        - ``language``: ``xml:lang`` of the entry (else of the item)

    Unknown children are ignored.
    :raises ValueError: the item has no payload, or its payload is not an Atom entry.
    """
    payload = next(iter(item_elt.elements()), None)
    item_id = _attribute(item_elt, "id")
    if payload is None:
        raise ValueError(f"item {item_id!r} has no payload, expected an Atom entry")
    if payload.name != "entry" or payload.uri != NS_ATOM:
        raise ValueError(
            f"item {item_id!r} payload is {{{payload.uri}}}{payload.name}, "
            f"expected an Atom entry {{{NS_ATOM}}}entry"
        )
    data: dict[str, Any] = {}
    if item_id is not None:
        data["id"] = item_id
    publisher = _attribute(item_elt, "publisher")
    if publisher is not None:
        data["publisher"] = publisher
    atom_id = next(iter(_children(payload, "id")), None)
    if atom_id is not None and (atom_id_text := "".join(_iter_text(atom_id)).strip()):
        data["atom_id"] = atom_id_text
    _parse_text_constructs(payload, "title", data)
    _parse_text_constructs(payload, "content", data)
    _parse_text_constructs(payload, "summary", data)
    _parse_author(payload, data)
    _parse_date(payload, "published", data)
    _parse_date(payload, "updated", data)
    _parse_categories(payload, data)
    _parse_links(payload, data)
    _parse_in_reply_to(payload, data)
    language = _attribute(payload, XML_LANG) or _attribute(item_elt, XML_LANG)
    if language is not None:
        data["language"] = language
    return data


def match_cb(client: Any, analysis: dict[str, Any]) -> None:
    """Amend the node analysis in place: comments nodes get the subtype ``comment``.

    The prefix ``urn:xmpp:microblog:0`` matches both a microblog and its comments nodes
    (``urn:xmpp:microblog:0:comments/<id>``, XEP-0277 §"Comments"); only the latter are
    told apart here.
    """
    node = analysis.get("node")
    if isinstance(node, str) and node.startswith(NS_MICROBLOG_COMMENTS_PREFIX):
        analysis["subtype"] = "comment"


class MicroblogAnalyser:
    """Plugin main class: registers the ``microblog`` analyser with the pubsub cache."""

    def __init__(self, host: _Host) -> None:
        log.info("Microblog cache analyser initialisation")
        self.host = host
        cache: _CachePlugin = host.plugins["PUBSUB_CACHE"]
        cache.register_analyser(
            {
                "name": "microblog",
                "type": "blog",
                "node": NS_MICROBLOG,
                "namespace": NS_ATOM,
                "to_sync": True,
                "parser": parse_item,
                "match_cb": match_cb,
            }
        )
