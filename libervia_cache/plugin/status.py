"""What the cache can say about itself: its nodes, its database, its counters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from libervia_cache.plugin.counters import Counters
from libervia_cache.plugin.holds import Holds
from libervia_cache.plugin.store_access import StoreAccess
from libervia_cache.plugin.syncs import SyncManager
from libervia_cache.storage import NodeInfo


def _shown_url(url: str) -> str:
    """A database URL as the status shows it: without its password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _iso(posix: float | None) -> str | None:
    if posix is None:
        return None
    return datetime.fromtimestamp(posix, UTC).isoformat()


class Status:
    """JSON-ready reports of the cache's state."""

    def __init__(
        self,
        *,
        store_access: StoreAccess,
        syncs: SyncManager,
        holds: Holds,
        counters: Counters,
        last_checked: dict[int, float] | None = None,
    ) -> None:
        #: node id -> when its last check against the server ended (POSIX time)
        self._last_checked = last_checked if last_checked is not None else {}
        self._store_access = store_access
        self._syncs = syncs
        self._holds = holds
        self._counters = counters

    async def nodes(
        self, profile: str | None = None, service: str | None = None, node: str | None = None
    ) -> list[dict[str, Any]]:
        """The cached nodes (optionally of one profile, service, node), one row each."""
        store = self._store_access.require()
        rows = []
        for info in await store.get_nodes(profile=profile, service=service):
            if node is not None and info.name != node:
                continue
            rows.append(await self.node_row(info))
        return rows

    async def node_row(self, info: NodeInfo) -> dict[str, Any]:
        """One node: state (and why it failed or is held), items stored and on the server,
        last completed sync, subscription, progress of a running sync."""
        store = self._store_access.require()
        progress = self._syncs.progress(info.key)
        return {
            "profile": info.profile,
            "service": info.service,
            "node": info.name,
            "analyser": info.analyser,
            "type": info.type,
            "subtype": info.subtype,
            "state": info.sync_state.name if info.sync_state else None,
            "error": info.sync_error,
            "held": self._holds.reason(info.profile, info.id),
            "suspect_because": self._holds.why_suspect(info.id),
            "state_changed": info.sync_state_updated.isoformat()
            if info.sync_state_updated
            else None,
            "last_sync": info.last_synced.isoformat() if info.last_synced else None,
            "last_checked": _iso(self._last_checked.get(info.id)),
            "subscribed": info.subscribed,
            "items": await store.count_items(info.id),
            "server_items": info.server_count,
            "truncated": info.truncated,
            "progress": {
                "stored": progress.stored,
                "total": progress.total,
                "pages": progress.pages,
            }
            if progress
            else None,
        }

    def summary(self) -> dict[str, Any]:
        """The database in use (its URL without password; whether it is open, or why
        not; the profiles another daemon serves on it, and why each is refused), running
        syncs, counters."""
        store = self._store_access.store
        return {
            "database": {
                "url": _shown_url(self._store_access.db_url),
                "open": store is not None,
                "unavailable": self._store_access.unavailable_reason,
                "refused_profiles": store.leases.refused if store is not None else {},
            },
            "syncs_running": len(self._syncs),
            "counters": self._counters.to_json(),
        }
