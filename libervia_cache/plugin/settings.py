"""The plugin's configuration: the ``[pubsub_cache]`` keys it declares, and their values.

The keys are declared here (name, parser, default, help) and listed in
``PLUGIN_INFO["config"]``: a host merges them into the configuration it validates, so
no host needs to know them. :meth:`Settings.from_config` reads the validated values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from libervia_cache.hostapi import Config, ConfigKey, choice, integer

SECTION = "pubsub_cache"

#: items asked per RSM page while synchronising
DEFAULT_PAGE_SIZE = 100


class CacheStrategy(enum.StrEnum):
    """``[pubsub_cache] strategy``: whether synced nodes are answered from the cache."""

    CACHE = "cache"
    NO_CACHE = "no_cache"


#: (backend, asyncio driver) of the databases the store can open
DATABASE_SCHEMES = {("sqlite", "aiosqlite"), ("postgresql", "asyncpg")}


def database_url(raw: str, base: Path) -> str:
    """A database URL the store can open: SQLite through aiosqlite (a relative file path
    is taken from the configuration file's directory), or PostgreSQL through asyncpg."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(raw)
    except ArgumentError:
        raise ValueError(
            f"{raw!r} is not a database URL (expected sqlite+aiosqlite:///PATH or "
            "postgresql+asyncpg://USER@HOST/DATABASE)"
        ) from None
    if (url.get_backend_name(), url.get_driver_name()) not in DATABASE_SCHEMES:
        raise ValueError(
            f"{raw!r}: the cache needs an asyncio driver; use sqlite+aiosqlite:///PATH or "
            "postgresql+asyncpg://USER@HOST/DATABASE"
        )
    if url.get_backend_name() == "postgresql":
        return url.render_as_string(hide_password=False)
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database).expanduser()
        if not path.is_absolute():
            path = base / path
        url = url.set(database=str(path))
    return url.render_as_string(hide_password=False)


#: ``[pubsub_cache]`` keys
CONFIG_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "strategy",
        choice(CacheStrategy),
        CacheStrategy.CACHE,
        "cache (default) or no_cache: never answer from the cache",
    ),
    ConfigKey(
        "db_url",
        database_url,
        None,
        "database URL (default: cache.db in the per-user data directory)",
    ),
    ConfigKey("cache_limit", integer(1), 5000, "items kept per node"),
    ConfigKey(
        "progress_deadline",
        integer(1),
        21600,
        "seconds before a running synchronisation is cancelled and redone",
    ),
    ConfigKey(
        "check_interval",
        integer(0),
        600,
        "seconds between two checks of a synced node against its server (0: never)",
    ),
    ConfigKey(
        "sync_page_size",
        integer(1, 1000),
        DEFAULT_PAGE_SIZE,
        "items asked per RSM page while synchronising",
    ),
)


@dataclass(frozen=True)
class Settings:
    """The plugin's settings, read once at start."""

    serving: bool = True
    db_url: str | None = None
    cache_limit: int = 5000
    progress_deadline: int = 21600
    #: items asked per RSM page while synchronising
    page_size: int = DEFAULT_PAGE_SIZE
    #: seconds between two periodic checks of a synced node (0: never)
    check_interval: int = 600

    @classmethod
    def from_config(cls, config: Config) -> Settings:
        return cls(
            serving=config.get(SECTION, "strategy") != CacheStrategy.NO_CACHE,
            db_url=config.get(SECTION, "db_url"),
            cache_limit=config.get(SECTION, "cache_limit"),
            progress_deadline=config.get(SECTION, "progress_deadline"),
            page_size=config.get(SECTION, "sync_page_size"),
            check_interval=config.get(SECTION, "check_interval"),
        )
