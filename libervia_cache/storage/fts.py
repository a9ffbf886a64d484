"""Full-text search: the FTS5 table over item text, and the text extraction feeding it.

The FTS5 table is an *external-content* table over ``pubsub_items.text`` (the item's
human text: its text nodes joined by spaces, with no tag names, no attribute names or
values, and escaped HTML turned into its text, :func:`extract_text`), kept in sync by
triggers. SQLAlchemy cannot model virtual tables, so this is the one place with
dialect-specific DDL; migrations create and drop the same objects (frozen copies in the
revision files), and autogenerate ignores them (:func:`is_fts_object`).
"""

from __future__ import annotations

import html.parser
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from html import unescape

FTS_TABLE = "pubsub_items_fts"

#: DDL creating the FTS table and its triggers, in order.
CREATE_FTS: tuple[str, ...] = (
    f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5("
    "text, content='pubsub_items', content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    f"CREATE TRIGGER {FTS_TABLE}_ai AFTER INSERT ON pubsub_items BEGIN "
    f"INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.id, new.text); END",
    f"CREATE TRIGGER {FTS_TABLE}_ad AFTER DELETE ON pubsub_items BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.id, old.text); "
    "END",
    # only when the text changes: renumbering positions must not touch the index
    f"CREATE TRIGGER {FTS_TABLE}_au AFTER UPDATE OF text ON pubsub_items BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.id, old.text); "
    f"INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.id, new.text); END",
)

#: DDL dropping them (reverse order).
DROP_FTS: tuple[str, ...] = (
    f"DROP TRIGGER IF EXISTS {FTS_TABLE}_au",
    f"DROP TRIGGER IF EXISTS {FTS_TABLE}_ad",
    f"DROP TRIGGER IF EXISTS {FTS_TABLE}_ai",
    f"DROP TABLE IF EXISTS {FTS_TABLE}",
)

#: Rebuild the index from the content table (after a bulk backfill).
REBUILD_FTS = f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')"

_TAG_RE = re.compile(r"<[^>]*>")
_SPACE_RE = re.compile(r"\s+")

NS_ATOM = "http://www.w3.org/2005/Atom"

#: Atom text constructs (RFC 4287 §3.1) and ``content`` (§4.1.3), whose ``type`` says
#: how their text is to be read
_ATOM_TEXT_ELEMENTS = frozenset(
    f"{{{NS_ATOM}}}{name}" for name in ("title", "subtitle", "summary", "content", "rights")
)
#: ``type`` values whose text is escaped HTML markup
_HTML_TYPES = frozenset({"html", "text/html"})
#: ``type`` values that call for XHTML child elements: when such an element holds text
#: only, the text is escaped markup (feedparser-based gateways write it so)
_XHTML_TYPES = frozenset({"xhtml", "application/xhtml+xml"})

#: HTML elements whose text is no human text
_HTML_HIDDEN = frozenset({"script", "style", "template"})


class _HTMLText(html.parser.HTMLParser):
    """The text of an HTML fragment: data only, a space at every tag boundary."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HTML_HIDDEN:
            self._hidden += 1
        self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HTML_HIDDEN and self._hidden:
            self._hidden -= 1
        self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def html_text(markup: str) -> str:
    """The human text of escaped HTML: unescaped, tags and comments removed."""
    collector = _HTMLText()
    try:
        collector.feed(markup)
        collector.close()
    except Exception:  # html.parser is lenient; a fragment it cannot read loses its tags
        return unescape(_TAG_RE.sub(" ", markup))
    return "".join(collector.parts)


def _holds_escaped_markup(element: ET.Element) -> bool:
    """True for an Atom text element whose text is HTML markup, not human text."""
    if element.tag not in _ATOM_TEXT_ELEMENTS:
        return False
    kind = (element.get("type") or "text").strip().lower()
    return kind in _HTML_TYPES or (kind in _XHTML_TYPES and len(element) == 0)


def _texts(root: ET.Element) -> Iterator[str]:
    """The text nodes of ``root`` in document order, escaped markup turned into text.

    Iterative, so that a deeply nested payload cannot exhaust the stack.
    """
    stack: list[ET.Element | str] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            yield node
        elif _holds_escaped_markup(node):
            yield html_text("".join(node.itertext()))
        else:
            if node.text:
                yield node.text
            for child in reversed(node):
                if child.tail:
                    stack.append(child.tail)
                stack.append(child)


def extract_text(raw_xml: str) -> str:
    """The human text of an item's XML, whitespace-normalised, as full-text search indexes it.

    Text nodes only: no tag names, attribute names or values. The text of an Atom text
    element (``title``, ``subtitle``, ``summary``, ``content``, ``rights``) of
    ``type="html"`` (or ``text/html``) is escaped HTML: it is unescaped and stripped of
    its tags, like an ``xhtml`` one holding text and no elements (as feed gateways
    write it); ``type="xhtml"`` keeps the text nodes of its XHTML; ``type="text"`` is
    kept as written.
    """
    try:
        text = " ".join(_texts(ET.fromstring(raw_xml)))
    except ET.ParseError:
        # not well-formed (should not happen with serialised stanzas): strip tags
        text = unescape(_TAG_RE.sub(" ", raw_xml))
    return _SPACE_RE.sub(" ", text).strip()


def is_fts_object(name: str | None) -> bool:
    """True for the FTS table, its shadow tables and its triggers."""
    return name is not None and name.startswith(FTS_TABLE)
