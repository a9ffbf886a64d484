"""Pages read on PostgreSQL, kept in memory and checked against the node's row version.

On PostgreSQL a read is a round trip to the server, and the page statement
(:mod:`.pgpages`) is the costly part of it. A page read earlier is kept here with the
version of its node's row (``xmin``) that the same statement read. It is given again
only after the caller checked, in the database, that the row is still at that version
(:meth:`libervia_cache.storage.Store.get_items_unless_changed`): a one-row lookup by
primary key, much cheaper than the page.

That check is enough because every write that changes a node's items, or anything a
page shows, also writes the node's row in the same transaction (on PostgreSQL, the
store's writers take the node's row with an ``UPDATE``, not a ``SELECT … FOR UPDATE``:
see :mod:`.itemwrites`), so a row at the same version is a node whose items are those
the page was read from. Ids are never reused, and a deleted node has no row. A write
not yet committed is seen by neither the check nor a page statement.

The cache is bounded by its entries and by the characters of raw XML it holds (about
as many bytes for ASCII text); the least recently used pages go first.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass

from .pages import PageRequest
from .records import ItemsPage

#: at most this many pages are kept
MAX_PAGES = 2048
#: and at most this many characters of raw XML in all
MAX_CHARACTERS = 8 * 1024 * 1024


@dataclass(frozen=True)
class _Kept:
    version: int
    page: ItemsPage
    size: int


class PageCache:
    """Pages by (node id, request), each with the version of the node's row it was
    read at (least recently used first out)."""

    def __init__(self, max_pages: int = MAX_PAGES, max_characters: int = MAX_CHARACTERS) -> None:
        self._max_pages = max_pages
        self._max_characters = max_characters
        self._pages: OrderedDict[tuple[int, PageRequest], _Kept] = OrderedDict()
        self._characters = 0

    def __len__(self) -> int:
        return len(self._pages)

    @property
    def characters(self) -> int:
        """Characters of raw XML held."""
        return self._characters

    def get(self, node_id: int, request: PageRequest, version: int) -> ItemsPage | None:
        """A copy of the page kept for ``request`` on node ``node_id`` at row version
        ``version``, if any (the caller has yet to check that the row is still at it)."""
        key = (node_id, request)
        kept = self._pages.get(key)
        if kept is None or kept.version != version:
            return None
        self._pages.move_to_end(key)
        return _copy(kept.page)

    def put(self, node_id: int, request: PageRequest, version: int, page: ItemsPage) -> None:
        """Keep ``page``, read for ``request`` on node ``node_id`` whose row was at
        ``version`` (in the same statement)."""
        size = sum(map(len, page.items)) + sum(map(len, page.item_ids))
        self.discard(node_id, request)
        if size > self._max_characters:
            return
        self._pages[(node_id, request)] = _Kept(version, _copy(page), size)
        self._characters += size
        while len(self._pages) > self._max_pages or self._characters > self._max_characters:
            _, oldest = self._pages.popitem(last=False)
            self._characters -= oldest.size

    def discard(self, node_id: int, request: PageRequest) -> None:
        """Forget the page kept for ``request`` on node ``node_id``, if any."""
        kept = self._pages.pop((node_id, request), None)
        if kept is not None:
            self._characters -= kept.size

    def clear(self) -> None:
        self._pages.clear()
        self._characters = 0


def _copy(page: ItemsPage) -> ItemsPage:
    """A page of its own (a caller may change its lists)."""
    return dataclasses.replace(page, items=list(page.items), item_ids=list(page.item_ids))
