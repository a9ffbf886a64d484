"""full-text index: the human text of escaped HTML, not its markup

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

Atom ``type="html"`` text (``title``, ``subtitle``, ``summary``, ``content``,
``rights``) is escaped markup: its text nodes hold ``<a href=... rel="nofollow">``, so
the index matched ``href`` and ``nofollow`` on every bridged or federated post with a
link. The text extraction now unescapes such text and strips its tags (likewise an
``xhtml`` element holding text and no elements, as feed gateways write it). This
revision recomputes the ``text`` column of every item with that extraction, in batches,
and rebuilds the FTS index; the downgrade recomputes it with the extraction of 0002.

The FTS update trigger is dropped while the column is rewritten (the rebuild reindexes
every row at once) and created again, identical, afterwards.
"""

from __future__ import annotations

import html.parser
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from html import unescape

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen: this revision's DDL and text extractions, as they were when it was written
# (libervia_cache.storage.fts evolves; a revision must keep doing what it did).
DROP_UPDATE_TRIGGER = "DROP TRIGGER IF EXISTS pubsub_items_fts_au"
CREATE_UPDATE_TRIGGER = (
    "CREATE TRIGGER pubsub_items_fts_au AFTER UPDATE OF text ON pubsub_items BEGIN "
    "INSERT INTO pubsub_items_fts(pubsub_items_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); "
    "INSERT INTO pubsub_items_fts(rowid, text) VALUES (new.id, new.text); END"
)
REBUILD = "INSERT INTO pubsub_items_fts(pubsub_items_fts) VALUES ('rebuild')"
BATCH = 1000

_TAG_RE = re.compile(r"<[^>]*>")
_SPACE_RE = re.compile(r"\s+")


def extract_text_0002(raw_xml: str) -> str:
    """The extraction of 0002: text nodes only, whitespace-normalised."""
    try:
        text = " ".join(ET.fromstring(raw_xml).itertext())
    except ET.ParseError:
        text = unescape(_TAG_RE.sub(" ", raw_xml))
    return _SPACE_RE.sub(" ", text).strip()


NS_ATOM = "http://www.w3.org/2005/Atom"
_ATOM_TEXT_ELEMENTS = frozenset(
    f"{{{NS_ATOM}}}{name}" for name in ("title", "subtitle", "summary", "content", "rights")
)
_HTML_TYPES = frozenset({"html", "text/html"})
_XHTML_TYPES = frozenset({"xhtml", "application/xhtml+xml"})
_HTML_HIDDEN = frozenset({"script", "style", "template"})


class _HTMLText(html.parser.HTMLParser):
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


def _html_text(markup: str) -> str:
    collector = _HTMLText()
    try:
        collector.feed(markup)
        collector.close()
    except Exception:
        return unescape(_TAG_RE.sub(" ", markup))
    return "".join(collector.parts)


def _holds_escaped_markup(element: ET.Element) -> bool:
    if element.tag not in _ATOM_TEXT_ELEMENTS:
        return False
    kind = (element.get("type") or "text").strip().lower()
    return kind in _HTML_TYPES or (kind in _XHTML_TYPES and len(element) == 0)


def _texts(root: ET.Element) -> Iterator[str]:
    stack: list[ET.Element | str] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            yield node
        elif _holds_escaped_markup(node):
            yield _html_text("".join(node.itertext()))
        else:
            if node.text:
                yield node.text
            for child in reversed(node):
                if child.tail:
                    stack.append(child.tail)
                stack.append(child)


def extract_text_0004(raw_xml: str) -> str:
    """The extraction of 0004: human text, escaped HTML unescaped and stripped of tags."""
    try:
        text = " ".join(_texts(ET.fromstring(raw_xml)))
    except ET.ParseError:
        text = unescape(_TAG_RE.sub(" ", raw_xml))
    return _SPACE_RE.sub(" ", text).strip()


def _recompute_text(extract_text: Callable[[str], str]) -> None:
    """Rewrite ``pubsub_items.text`` with ``extract_text``, in batches, and reindex."""
    connection = op.get_bind()
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        op.execute(DROP_UPDATE_TRIGGER)
    items = sa.table("pubsub_items", sa.column("id"), sa.column("data"), sa.column("text"))
    last_id = -1
    while True:
        rows = connection.execute(
            sa.select(items.c.id, items.c.data, items.c.text)
            .where(items.c.id > last_id)
            .order_by(items.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        changed = [
            {"row_id": row_id, "text": new_text}
            for row_id, data, old_text in rows
            if (new_text := extract_text(data)) != old_text
        ]
        if changed:
            connection.execute(items.update().where(items.c.id == sa.bindparam("row_id")), changed)
        last_id = rows[-1][0]
    if sqlite:
        op.execute(CREATE_UPDATE_TRIGGER)
        op.execute(REBUILD)


def upgrade() -> None:
    _recompute_text(extract_text_0004)


def downgrade() -> None:
    _recompute_text(extract_text_0002)
