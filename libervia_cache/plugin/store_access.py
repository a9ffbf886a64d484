"""Access to the store: opening it, reopening it after a failure, and reporting failures.

A store that cannot be opened (locked, unreadable, corrupt, newer than this code) does
not stop the daemon: reads go to the network, the reason is logged and shown by the
status, and opening is retried with a growing delay, so that a transient problem (a
lock) heals by itself. The database file is never touched. Each successful opening is
announced to the listeners (the freshness checks: events that came while the store was
closed were lost).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from twisted.internet import defer

from libervia_cache.errors import CacheUnavailable, describe
from libervia_cache.storage import Store
from libervia_cache.storage.engine import default_db_url

log = logging.getLogger(__name__)

#: Seconds before retrying to open a database that could not be opened (doubling).
FIRST_REOPEN_DELAY = 5
MAX_REOPEN_DELAY = 300

#: What a failing store raises: any of these on the request path means "ask the network".
STORE_ERRORS = (SQLAlchemyError, sqlite3.Error, OSError, CacheUnavailable)


class StoreAccess:
    """The plugin's store, or why there is none."""

    def __init__(self, db_url: str | None, clock: Any = None, store: Store | None = None) -> None:
        """``store``: one already open (then :meth:`open` is not needed)."""
        if clock is None:
            from twisted.internet import reactor as clock
        #: the database in use (the per-user default when not configured)
        self.db_url = db_url or default_db_url()
        self._clock: Any = clock
        self.store: Store | None = store
        #: why the cache cannot be used right now (None when it can)
        self.unavailable_reason: str | None = (
            None if store is not None else "the cache database is not open yet"
        )
        self._reopen_delay = FIRST_REOPEN_DELAY
        self._reopen_call: Any = None
        self._last_error: str | None = None
        self._listeners: list[Callable[[], Any]] = []
        self._stopped = False

    def on_open(self, listener: Callable[[], Any]) -> None:
        """Call ``listener()`` after every successful (re)opening but the first."""
        self._listeners.append(listener)

    async def open(self) -> None:
        """Open (create or upgrade) the store; on failure, schedule another try."""
        first = self._reopen_delay == FIRST_REOPEN_DELAY and self.store is None
        try:
            store = await Store.open(self.db_url)
        except Exception as error:
            self.unavailable_reason = f"the cache database cannot be opened: {describe(error)}"
            log.error(
                "%s; reads go to the network; retrying in %d s",
                self.unavailable_reason,
                self._reopen_delay,
            )
            if not self._stopped:
                self._reopen_call = self._clock.callLater(self._reopen_delay, self._retry)
                self._reopen_delay = min(self._reopen_delay * 2, MAX_REOPEN_DELAY)
            return
        if self._stopped:
            await store.close()
            return
        self.store = store
        self.unavailable_reason = None
        if not first:
            log.info("the cache database is open again")
        self._reopen_delay = FIRST_REOPEN_DELAY
        if not first:
            for listener in self._listeners:
                listener()

    def _retry(self) -> None:
        self._reopen_call = None
        defer.Deferred.fromCoroutine(self.open())

    async def close(self) -> None:
        """Stop retrying and close the store (waits for its work in flight)."""
        self._stopped = True
        if self._reopen_call is not None and self._reopen_call.active():
            self._reopen_call.cancel()
        store, self.store = self.store, None
        if store is not None:
            await store.close()

    def require(self) -> Store:
        """The open store; :class:`CacheUnavailable` saying why there is none."""
        if self.store is None:
            raise CacheUnavailable(self.unavailable_reason or "the cache database is not open")
        return self.store

    def failed(self, error: BaseException, doing: str) -> None:
        """Log a store failure once (not once per request), with what was being done."""
        message = describe(error)
        if message != self._last_error:
            log.error("cache database error while %s: %s", doing, message)
            self._last_error = message
        else:
            log.debug("cache database error while %s: %s", doing, message)

    def worked(self) -> None:
        """A store operation succeeded: the next failure is worth logging again."""
        self._last_error = None
