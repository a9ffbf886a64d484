"""Profiles on a database shared by several daemons: one daemon serves a profile at a time.

On PostgreSQL several daemons may share one database, each with its own profiles. A
store serves a profile once it holds its *lease*: a session-level advisory lock
(``pg_advisory_lock``) on a connection the store keeps open for that purpose. The
first store to ask for a profile gets it; another one asking while the first holds it
waits :data:`CLAIM_WAIT` seconds (a daemon restarting while its predecessor's session
ends), then is refused, and keeps refusing it for its own life (its daemon must be
restarted to try again: taking a profile over in the middle of a run would serve nodes
whose events it never received). When the holder stops (it gives its leases back), or
dies (PostgreSQL ends a session whose client went away, and its locks with it: at once
when the process dies, within about a minute when its machine does, through TCP
keepalives), the next store that asks gets the profile, finds the syncs the holder left
IN_PROGRESS and redoes them.

Leases are asked for on first use: every store method naming a profile (node lookups,
node creation, node listings) claims it, and every write checks, in its transaction,
that the node's profile is one the store holds. Search, purge and reset keep to the
profiles held. If the lease connection is lost (a server restart), every lease is
suspended until the store has taken them again on a new connection; one taken by
another daemon meanwhile is refused from then on.

The leases are the process's: stores of one process on one database share them (a
daemon is a process), through :func:`shared_leases`.

SQLite has no such thing (one daemon per database file): :class:`NoLeases` lets every
profile through.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Any

from .engine import PG_SERVER_SETTINGS, asyncpg_dsn
from .records import ProfileServedElsewhere

log = logging.getLogger(__name__)

#: ``application_name`` of the lease connection (seen in ``pg_stat_activity``)
LEASE_APPLICATION_NAME = "libervia-cache leases"

#: seconds between two attempts to reconnect a lost lease connection, and between two
#: looks at whether it is still open
RECONNECT_DELAY = 1.0
WATCH_INTERVAL = 1.0

#: seconds a claim waits for a lease another session holds before it is refused
CLAIM_WAIT = 5.0

#: settings of the lease connection: how long a claim waits; the server notices a
#: holder whose machine went away within about a minute (TCP keepalives)
LEASE_SETTINGS = {
    "application_name": LEASE_APPLICATION_NAME,
    "lock_timeout": str(int(CLAIM_WAIT * 1000)),
    "tcp_keepalives_idle": "30",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "3",
}


def lease_key(profile: str) -> int:
    """The advisory lock key of a profile (64 bits of a hash of its name)."""
    digest = hashlib.blake2b(f"libervia-cache profile {profile}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


class NoLeases:
    """Every profile is served (SQLite: one daemon per database file)."""

    #: the profiles the store keeps to (None: all)
    scope: frozenset[str] | None = None

    @property
    def refused(self) -> dict[str, str]:
        """The profiles refused, and why (none)."""
        return {}

    async def claim(self, profile: str) -> None:
        """Serve ``profile`` (always granted)."""

    def serves(self, profile: str) -> bool:
        """Whether ``profile`` is served already (always)."""
        return True

    def check(self, profile: str) -> None:
        """Raise unless ``profile`` is served (never)."""

    async def close(self) -> None:
        pass


class ProfileLeases:
    """The profiles a store serves on a shared PostgreSQL database, and their leases."""

    def __init__(self, url: str, database: str) -> None:
        self._dsn = asyncpg_dsn(url)
        self._database = database
        self._connection: Any = None
        self._held: set[str] = set()
        #: profile -> why it is not served
        self._refused: dict[str, str] = {}
        self._suspended = False
        self._lock = asyncio.Lock()
        self._closed = False
        self._reconnecting: asyncio.Task[None] | None = None
        self._watching: asyncio.Task[None] | None = None

    @property
    def scope(self) -> frozenset[str]:
        """The profiles held (what search, purge and reset keep to)."""
        self._look()
        return frozenset(() if self._suspended else self._held)

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    @property
    def refused(self) -> dict[str, str]:
        """The profiles another daemon serves, and why each is not served here (what
        the status shows)."""
        return dict(self._refused)

    @property
    def suspended(self) -> bool:
        """Whether the lease connection was lost and the leases are being taken again."""
        return self._suspended

    async def _connect(self) -> Any:
        import asyncpg

        settings = {**PG_SERVER_SETTINGS, **LEASE_SETTINGS}
        connection = await asyncpg.connect(self._dsn, server_settings=settings)
        connection.add_termination_listener(self._lost)
        return connection

    async def open(self) -> None:
        self._connection = await self._connect()
        self._watching = asyncio.ensure_future(self._watch())

    def _look(self) -> None:
        """Notice a lease connection the server closed (asyncpg tells nobody of an idle
        connection's end: it only knows it is closed)."""
        connection = self._connection
        if connection is not None and connection.is_closed():
            self._lost(connection)

    async def _watch(self) -> None:
        while not self._closed:
            await asyncio.sleep(WATCH_INTERVAL)
            self._look()

    def serves(self, profile: str) -> bool:
        """Whether ``profile``'s lease is held (then :meth:`claim` has nothing to do)."""
        self._look()
        return profile in self._held and not self._suspended

    async def claim(self, profile: str) -> None:
        """Serve ``profile``: take its lease if no other daemon holds it; raise
        :class:`ProfileServedElsewhere` if one does (or did when first asked)."""
        self._look()
        if profile in self._held and not self._suspended:
            return
        async with self._lock:
            self.check_refused(profile)
            if profile in self._held:
                self.check(profile)
                return
            if self._connection is None:
                self.check(profile)  # suspended: says so
            if not await self._lock_profile(self._connection, profile):
                self._refused[profile] = (
                    f"profile {profile} is served by another daemon on the database "
                    f"{self._database}: this daemon leaves its cache alone (its reads go "
                    "to the network) until it is restarted after the other one stopped"
                )
                log.error("%s", self._refused[profile])
                self.check_refused(profile)
            self._held.add(profile)

    @staticmethod
    async def _lock_profile(connection: Any, profile: str) -> bool:
        """Take the profile's lock, waiting up to :data:`CLAIM_WAIT`; whether it was."""
        import asyncpg

        try:
            await connection.execute("SELECT pg_advisory_lock($1::bigint)", lease_key(profile))
        except asyncpg.LockNotAvailableError:
            return False
        return True

    def check_refused(self, profile: str) -> None:
        message = self._refused.get(profile)
        if message is not None:
            raise ProfileServedElsewhere(message)

    def check(self, profile: str) -> None:
        """Raise :class:`ProfileServedElsewhere` unless the store serves ``profile``
        now (called in write transactions: the lease holds while it commits)."""
        self._look()
        if profile in self._held and not self._suspended:
            return
        self.check_refused(profile)
        if self._suspended and profile in self._held:
            raise ProfileServedElsewhere(
                f"the lease of profile {profile} on the database {self._database} was "
                "lost with its connection; taking it again"
            )
        raise ProfileServedElsewhere(f"profile {profile} is not served by this daemon")

    def _lost(self, connection: Any) -> None:
        if self._closed or connection is not self._connection:
            return
        self._connection = None
        self._suspended = True
        log.error(
            "the connection holding the profile leases on %s was lost: taking them again",
            self._database,
        )
        self._reconnecting = asyncio.ensure_future(self._take_again())

    async def _take_again(self) -> None:
        """Reconnect and take every held lease again; refuse those taken meanwhile."""
        while not self._closed:
            try:
                connection = await self._connect()
            except Exception as error:
                log.debug("lease connection: %s", error)
                await asyncio.sleep(RECONNECT_DELAY)
                continue
            async with self._lock:
                if self._closed:
                    await connection.close()
                    return
                self._connection = connection
                for profile in sorted(self._held):
                    if not await self._lock_profile(connection, profile):
                        self._held.discard(profile)
                        self._refused[profile] = (
                            f"profile {profile} was taken by another daemon on the database "
                            f"{self._database} while this one's lease connection was lost"
                        )
                        log.error("%s", self._refused[profile])
                self._suspended = False
            log.info("profile leases on %s taken again", self._database)
            return

    async def close(self) -> None:
        """Give every lease back (closing the connection releases them)."""
        self._closed = True
        for task in (self._reconnecting, self._watching):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                # given back before the connection goes: its session may end later
                await connection.execute("SELECT pg_advisory_unlock_all()")
            with contextlib.suppress(Exception):
                await connection.close()


#: the leases of this process, per database: (leases, stores using them)
_SHARED: dict[str, tuple[ProfileLeases, int]] = {}


async def shared_leases(url: str, label: str) -> ProfileLeases:
    """The leases of this process on the database at ``url`` (opened on first use);
    give them back with :func:`release_leases`."""
    found = _SHARED.get(url)
    if found is not None and not found[0]._closed:
        _SHARED[url] = (found[0], found[1] + 1)
        return found[0]
    leases = ProfileLeases(url, label)
    await leases.open()
    _SHARED[url] = (leases, 1)
    return leases


async def release_leases(url: str, leases: ProfileLeases) -> None:
    """One store stopped using ``leases``: closed once no store of the process does."""
    found = _SHARED.get(url)
    if found is None or found[0] is not leases:
        await leases.close()
        return
    if found[1] > 1:
        _SHARED[url] = (leases, found[1] - 1)
        return
    del _SHARED[url]
    await leases.close()
