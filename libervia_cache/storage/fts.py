"""Full-text search: the FTS5 table over item text, and the text extraction feeding it.

The FTS5 table is an *external-content* table over ``pubsub_items.text`` (the item's
text nodes, joined by spaces: no tag names, no attribute names or values), kept in sync
by triggers. SQLAlchemy cannot model virtual tables, so this is the one place with
dialect-specific DDL; migrations create and drop the same objects (frozen copies in the
revision files), and autogenerate ignores them (:func:`is_fts_object`).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
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


def extract_text(raw_xml: str) -> str:
    """The text content of an XML fragment: text nodes only, whitespace-normalised."""
    try:
        parts = ET.fromstring(raw_xml).itertext()
        text = " ".join(parts)
    except ET.ParseError:
        # not well-formed (should not happen with serialised stanzas): strip tags
        text = unescape(_TAG_RE.sub(" ", raw_xml))
    return _SPACE_RE.sub(" ", text).strip()


def is_fts_object(name: str | None) -> bool:
    """True for the FTS table, its shadow tables and its triggers."""
    return name is not None and name.startswith(FTS_TABLE)
