"""The cache's storage: model, queries, full-text search and migrations."""

from .migrate import DatabaseVersionError
from .models import SyncState
from .records import ItemsPage, NodeInfo, UnknownRSMKey
from .store import CachedItem, Store

__all__ = [
    "CachedItem",
    "DatabaseVersionError",
    "ItemsPage",
    "NodeInfo",
    "Store",
    "SyncState",
    "UnknownRSMKey",
]
