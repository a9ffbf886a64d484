"""Full-text search: the index over item text, and the text extraction feeding it.

SQLite: an FTS5 *external-content* table over ``pubsub_items.text`` (the item's human
text: its text nodes joined by spaces, with no tag names, no attribute names or values,
and escaped HTML turned into its text, :func:`extract_text`), kept in sync by triggers,
tokenised by ``unicode61 remove_diacritics 2``.

PostgreSQL: a ``tsvector`` column, ``pubsub_items.search``, with a GIN index. The store
fills it when it writes an item's text (:func:`tsvector`), with the tokens SQLite's
tokenizer gives: :func:`tokenize` is ``unicode61 remove_diacritics 2`` itself, each
character's fate (separator, dropped diacritic, folded letter) asked once of SQLite's
own tokenizer, so that both databases fold case and diacritics alike and find the same
items. The first token carries weight ``A`` (FTS5's ``^``, initial token, becomes a
weight in the query: see :mod:`.ftsquery`).

SQLAlchemy cannot model either, so this is the one place with this DDL; migrations
create and drop the same objects (frozen copies in the revision files), and
autogenerate ignores them (:func:`is_fts_object`).
"""

from __future__ import annotations

import html.parser
import re
import sqlite3
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
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


# --- PostgreSQL -------------------------------------------------------------------------

#: the ``tsvector`` column of ``pubsub_items`` (PostgreSQL only, not in the model)
SEARCH_COLUMN = "search"
SEARCH_INDEX = "ix_pubsub_items_search"
#: GIN index over the parsed JSON (``jsonb_ops``: ``@>``, and ``@?`` JSON paths with ``.*``)
PARSED_INDEX = "ix_pubsub_items_parsed"

#: DDL creating the PostgreSQL search objects, in order.
CREATE_SEARCH_PG: tuple[str, ...] = (
    f"ALTER TABLE pubsub_items ADD COLUMN {SEARCH_COLUMN} tsvector",
    f"CREATE INDEX {SEARCH_INDEX} ON pubsub_items USING gin ({SEARCH_COLUMN})",
    f"CREATE INDEX {PARSED_INDEX} ON pubsub_items USING gin (parsed)",
)

#: DDL dropping them (reverse order).
DROP_SEARCH_PG: tuple[str, ...] = (
    f"DROP INDEX IF EXISTS {PARSED_INDEX}",
    f"DROP INDEX IF EXISTS {SEARCH_INDEX}",
    f"ALTER TABLE pubsub_items DROP COLUMN IF EXISTS {SEARCH_COLUMN}",
)

#: PostgreSQL's limits on a ``tsvector``: a lexeme's bytes, a position, the whole value
MAX_LEXEME_BYTES = 2046
MAX_POSITION = 16383
MAX_TSVECTOR_BYTES = 1_000_000

_TOKENIZER = "unicode61 remove_diacritics 2"
_tokenizer_lock = threading.Lock()
_tokenizer: sqlite3.Connection | None = None
#: character -> what unicode61 makes of it: " " (separator), "" (dropped), or its
#: folded form; filled as characters are met (ASCII at once)
_FOLD: dict[int, str] = {}


def _sqlite_fold(characters: Iterable[str]) -> dict[int, str]:
    """Ask SQLite's tokenizer what each character becomes inside a token."""
    global _tokenizer
    with _tokenizer_lock:
        if _tokenizer is None:
            _tokenizer = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            _tokenizer.execute(
                f"CREATE VIRTUAL TABLE t USING fts5(text, content='', tokenize='{_TOKENIZER}')"
            )
            _tokenizer.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
        probe = _tokenizer
        chars = list(characters)
        probe.execute("BEGIN")
        try:
            probe.executemany(
                "INSERT INTO t(rowid, text) VALUES (?, ?)",
                [(n, f"q{c}q") for n, c in enumerate(chars)],
            )
            terms: dict[int, list[str]] = {}
            for term, doc in probe.execute("SELECT term, doc FROM v"):
                terms.setdefault(doc, []).append(term)
            probe.execute("INSERT INTO t(t) VALUES ('delete-all')")
        finally:
            probe.execute("COMMIT")
    # "q" is a token character that folds to itself: one term "q...q" or two "q"
    return {
        ord(c): (" " if len(terms.get(n, [])) != 1 else terms[n][0][1:-1])
        for n, c in enumerate(chars)
    }


def tokenize(text: str) -> list[str]:
    """The tokens of ``text`` as SQLite's ``unicode61 remove_diacritics 2`` makes them
    (case and diacritics folded, separators dropped), in order."""
    if not _FOLD:
        _FOLD.update(_sqlite_fold(chr(c) for c in range(1, 128)))
    missing = {c for c in text if ord(c) not in _FOLD}
    if missing:
        # NUL and lone surrogates cannot be handed to SQLite: separators
        for c in [c for c in missing if c == "\0" or "\ud800" <= c <= "\udfff"]:
            _FOLD[ord(c)] = " "
            missing.discard(c)
        if missing:
            _FOLD.update(_sqlite_fold(missing))
    return [token for token in text.translate(_FOLD).split(" ") if token]


def _lexeme(token: str) -> str:
    """``token`` as a quoted ``tsvector``/``tsquery`` lexeme, cut to PostgreSQL's limit."""
    raw = token.encode("utf-8")
    if len(raw) > MAX_LEXEME_BYTES:
        token = raw[:MAX_LEXEME_BYTES].decode("utf-8", "ignore")
    return "'" + token.replace("\\", "\\\\").replace("'", "''") + "'"


def tsvector(text: str) -> str:
    """The ``tsvector`` literal of an item's text: every token with its positions (from
    1), the first one weighted ``A`` (FTS5's initial token, ``^``).

    PostgreSQL caps positions at 16383 and a value at 1 MB: tokens past the cap share
    its position, and lexemes past the size budget are not indexed (SQLite has neither
    limit; see doc/storage.md).
    """
    positions: dict[str, list[str]] = {}
    size = 0
    for number, token in enumerate(tokenize(text), start=1):
        lexeme = _lexeme(token)
        found = positions.get(lexeme)
        if found is None:
            size += len(lexeme.encode("utf-8")) + 8
            if size > MAX_TSVECTOR_BYTES:
                break
            positions[lexeme] = found = []
        if number == 1:
            found.append("1A")
        elif len(found) < 256:  # PostgreSQL keeps 256 positions of a lexeme
            found.append(str(min(number, MAX_POSITION)))
            size += 2
    return " ".join(f"{lexeme}:{','.join(places)}" for lexeme, places in positions.items())


def tsquery_lexeme(token: str) -> str:
    """``token`` as a ``tsquery`` lexeme (quoted, cut as :func:`tsvector` cuts it)."""
    return _lexeme(token)


def is_fts_object(name: str | None) -> bool:
    """True for the FTS table, its shadow tables and its triggers, and the PostgreSQL
    search column and indexes."""
    return name is not None and (
        name.startswith(FTS_TABLE) or name in (SEARCH_COLUMN, SEARCH_INDEX, PARSED_INDEX)
    )
