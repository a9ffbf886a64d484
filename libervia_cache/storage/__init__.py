"""The cache's storage: model, queries, full-text search and migrations."""

from .migrate import DatabaseVersionError
from .models import SyncState
from .query import SearchQueryError
from .records import (
    ItemsPage,
    NodeChanged,
    NodeGone,
    NodeInfo,
    ProfileServedElsewhere,
    SyncSuperseded,
    UnknownRSMKey,
)
from .store import CachedItem, Store

__all__ = [
    "CachedItem",
    "DatabaseVersionError",
    "ItemsPage",
    "NodeChanged",
    "NodeGone",
    "NodeInfo",
    "ProfileServedElsewhere",
    "SearchQueryError",
    "Store",
    "SyncState",
    "SyncSuperseded",
    "UnknownRSMKey",
]
