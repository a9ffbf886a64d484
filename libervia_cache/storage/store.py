"""The store: every question the cache asks its database, one method each.

Public coroutine methods are wrapped with :func:`libervia_cache.storage.aio.deferred_method`:
they return Deferreds that Twisted code awaits; cancelling one never interrupts its
transaction. :meth:`Store.get_items`, the hot path, returns an already-fired Deferred
when the page can be read at once (see :mod:`.pages`; on PostgreSQL, one prepared
statement on a plain asyncpg connection, :mod:`.pgread`). All writes go through one
asyncio lock and ``BEGIN IMMEDIATE`` transactions: SQLite has one writer, and waiting
for the lock up front avoids failed read-to-write upgrades. On PostgreSQL, a write
locks its node's row (an ``UPDATE`` that sets nothing new) before it reads or changes
anything of the node, so that writes of one node never interleave, whichever process
makes them, and the row's version tells readers that the node changed
(:mod:`.pagecache`).

Who may write into a node is checked in the write's own transaction:

- every write names the node by id, and ids are never reused: a write for a node that
  is gone (reset, deleted) raises :class:`NodeGone` and writes nothing;
- a synchronisation owns its node through a token (:meth:`Store.begin_sync`); each of
  its writes names the token and raises :class:`SyncSuperseded` once a newer sync, a
  purge or a reset took the node from it. A node is COMPLETED only by the write of its
  last page, under the token of the sync that paged it.

On a PostgreSQL database shared by several daemons, a store serves only the profiles
whose lease it holds (:mod:`.leases`): methods naming another profile, and writes to
its nodes, raise :class:`ProfileServedElsewhere`; search, purge and reset keep to the
profiles it serves.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from sqlalchemy import (
    Connection,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from twisted.internet import defer

from . import itemwrites, noderows, pages, pgpages, positions, searching
from .aio import aio, deferred_method
from .engine import connect_reader, create_engine, sqlite_file
from .fts import extract_text, tsvector
from .leases import NoLeases, ProfileLeases, release_leases, shared_leases
from .migrate import prepare_database, run_in_transaction
from .models import SyncState, items_table, nodes_table, utcnow
from .pagecache import PageCache
from .pgread import PostgresReader
from .query import SearchQueryError, parse_purge_filters, parse_search_query
from .records import ItemsPage, NodeChanged, NodeGone, NodeInfo, UnknownRSMKey

T = TypeVar("T")

items = items_table
nodes = nodes_table

#: an item to cache: (item id, raw XML of the <item/> element, parsed JSON or None)
CachedItem = tuple[str, str, dict[str, Any] | None]

#: update_node() keyword -> pubsub_nodes column
NODE_FIELDS: dict[str, str] = {
    "analyser": "analyser",
    "type_": "type",
    "type": "type",
    "subtype": "subtype",
    "sync_state": "sync_state",
    "subscribed": "subscribed",
    "extra": "extra",
    "sync_error": "sync_error",
    "server_count": "server_count",
}

#: delete_nodes() filter -> pubsub_nodes column
NODE_FILTERS: dict[str, str] = {
    "profiles": "profile",
    "services": "service",
    "names": "name",
    "types": "type",
    "subtypes": "subtype",
}


class Store:
    """The pubsub cache's database (SQLAlchemy asyncio engine, SQLite by default;
    PostgreSQL through asyncpg)."""

    def __init__(
        self,
        engine: AsyncEngine,
        reader: sqlite3.Connection | None,
        pg_reader: PostgresReader | None = None,
        leases: ProfileLeases | None = None,
        read_engine: AsyncEngine | None = None,
    ) -> None:
        self.engine = engine
        # reads are single statements (each its own snapshot): on PostgreSQL they run
        # in autocommit, without the BEGIN and ROLLBACK round trips of a transaction,
        # on an engine of their own (create_engine(autocommit=True): its pool checks a
        # connection in one round trip, not three)
        if read_engine is None and engine.dialect.name == "postgresql":
            read_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._read_engine = read_engine if read_engine is not None else engine
        self._reader = reader
        self._pg_reader = pg_reader
        self.postgresql = engine.dialect.name == "postgresql"
        #: whether node rows have a version, so that :meth:`get_items_unless_changed`
        #: may save :meth:`get_node`'s round trip (PostgreSQL; SQLite's reads are local
        #: calls, and it has none)
        self.versions_rows = pg_reader is not None
        #: pages read on PostgreSQL, given again while their node's row is unchanged
        self.pages = PageCache()
        #: the profiles this store serves (PostgreSQL: those whose lease it holds)
        self.leases: NoLeases | ProfileLeases = leases if leases is not None else NoLeases()
        self._write_lock = asyncio.Lock()
        #: database work in flight (shielded from cancellation): close() waits for it
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, db_url: str | None = None) -> defer.Deferred[Store]:
        """Open the database at ``db_url`` (default: the per-user XDG path).

        A new database is created from the model and stamped at the newest revision;
        an older one is upgraded in-process; one written by a newer version is refused
        (:class:`~libervia_cache.storage.migrate.DatabaseVersionError`).
        """
        return aio(cls._open(db_url))

    @classmethod
    async def _open(cls, db_url: str | None) -> Store:
        engine = create_engine(db_url)
        leases: ProfileLeases | None = None
        try:
            await prepare_database(engine)
            if engine.dialect.name == "postgresql":
                url = engine.url.render_as_string(hide_password=False)
                label = engine.url.render_as_string(hide_password=True)
                leases = await shared_leases(url, label)
                read_engine = create_engine(url, autocommit=True)
                return cls(engine, None, PostgresReader(url), leases, read_engine)
        except BaseException:
            if leases is not None:
                await release_leases(engine.url.render_as_string(hide_password=False), leases)
            await engine.dispose()
            raise
        path = sqlite_file(make_url(str(engine.url)))
        reader = connect_reader(path) if path is not None else None
        return cls(engine, reader)

    def close(self) -> defer.Deferred[None]:
        """Close every connection, once the work in flight is over."""
        return aio(self._close())

    async def _close(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._pg_reader is not None:
            await self._pg_reader.close()
        if isinstance(self.leases, ProfileLeases):
            await release_leases(self.engine.url.render_as_string(hide_password=False), self.leases)
        if self._read_engine.sync_engine.pool is not self.engine.sync_engine.pool:
            await self._read_engine.dispose()
        await self.engine.dispose()

    def _scope_conditions(self) -> list[Any]:
        """Conditions keeping a statement to the profiles this store serves."""
        scope = self.leases.scope
        return [] if scope is None else [nodes.c.profile.in_(sorted(scope))]

    @property
    def _scope(self) -> list[str] | None:
        scope = self.leases.scope
        return None if scope is None else sorted(scope)

    @deferred_method
    async def claim_profile(self, profile: str) -> None:
        """Serve ``profile`` (on PostgreSQL, take its lease; raise
        :class:`ProfileServedElsewhere` if another daemon holds it). Every method
        naming a profile does it first: calling it is only a way to know early."""
        await self.leases.claim(profile)

    async def _write(self, fn: Callable[[Connection], T]) -> T:
        async with self._write_lock:
            return await run_in_transaction(self.engine, fn)

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn``, which reads with one statement, on a pooled connection."""
        async with self._read_engine.connect() as connection:
            return await connection.run_sync(fn)

    # ---------------------------------------------------------------------- nodes

    def get_node(self, profile: str, service: str, name: str) -> defer.Deferred[NodeInfo | None]:
        """The node ``name`` of ``service`` as seen by ``profile``, if the cache knows it.

        On the hot path of every read: answered on the lean ``sqlite3`` read connection
        (an already fired Deferred, no pool, no thread hop), as page reads are; the
        engine answers when that connection is busy or absent. On PostgreSQL, one
        prepared statement on a plain asyncpg connection. Raises
        :class:`ProfileServedElsewhere` for a profile another daemon serves.
        """
        if self._pg_reader is not None:
            return aio(self._pg_get_node(profile, service, name), self._tasks)
        if self._reader is not None:
            try:
                row = self._reader.execute(
                    noderows.NODE_SQL, {"profile": profile, "service": service, "name": name}
                ).fetchone()
            except sqlite3.OperationalError:
                pass  # busy: the asyncio path
            except Exception:
                return defer.fail()
            else:
                if row is None:
                    return defer.succeed(None)
                return defer.succeed(noderows.sqlite_node_info(row))
        return aio(self._get_node(profile, service, name))

    async def _pg_get_node(self, profile: str, service: str, name: str) -> NodeInfo | None:
        assert self._pg_reader is not None
        if not self.leases.serves(profile):
            await self.leases.claim(profile)
        rows = await self._pg_reader.fetch(noderows.PG_NODE_SQL, profile, service, name)
        if not rows:
            return None
        *row, version = rows[0]  # (an asyncpg record takes no negative index)
        return noderows.pg_node_info(row, version)

    async def _get_node(self, profile: str, service: str, name: str) -> NodeInfo | None:
        def run(connection: Connection) -> NodeInfo | None:
            row = connection.execute(
                select(*noderows.NODE_COLUMNS).where(
                    nodes.c.profile == profile, nodes.c.service == service, nodes.c.name == name
                )
            ).one_or_none()
            return None if row is None else noderows.node_info(row)

        return await self._read(run)

    @deferred_method
    async def get_or_create_node(
        self,
        profile: str,
        service: str,
        name: str,
        *,
        analyser: str | None = None,
        type_: str | None = None,
        subtype: str | None = None,
        sync_state: SyncState | None = None,
        extra: dict[str, Any] | None = None,
    ) -> NodeInfo:
        """The node, created with the given fields if unknown (an existing one is kept)."""

        await self.leases.claim(profile)

        def run(connection: Connection) -> NodeInfo:
            self.leases.check(profile)
            itemwrites.insert_ignoring_conflicts(
                connection,
                nodes,
                {
                    "profile": profile,
                    "service": service,
                    "name": name,
                    "analyser": analyser,
                    "type": type_,
                    "subtype": subtype,
                    "sync_state": sync_state,
                    "sync_state_updated": utcnow() if sync_state is not None else None,
                    "subscribed": False,
                    "extra": extra or {},
                },
            )
            row = connection.execute(
                select(*noderows.NODE_COLUMNS).where(
                    nodes.c.profile == profile, nodes.c.service == service, nodes.c.name == name
                )
            ).one()
            return noderows.node_info(row)

        return await self._write(run)

    @deferred_method
    async def update_node(self, node_id: int, *, token: str | None = None, **fields: Any) -> None:
        """Update ``analyser``, ``type_``, ``subtype``, ``sync_state`` (which also sets
        ``sync_state_updated``), ``subscribed``, ``extra``, ``sync_error`` or
        ``server_count`` of a node. With ``token``, only if that sync still owns it.
        Raises :class:`NodeGone` / :class:`SyncSuperseded`."""
        unknown = set(fields) - set(NODE_FIELDS)
        if unknown:
            raise TypeError(f"unknown node field(s): {', '.join(sorted(unknown))}")
        values = {NODE_FIELDS[name]: value for name, value in fields.items()}
        if "sync_state" in values:
            values["sync_state_updated"] = utcnow()

        def run(connection: Connection) -> None:
            itemwrites.check_owner(connection, node_id, token, self.leases)
            if values:
                connection.execute(update(nodes).where(nodes.c.id == node_id).values(values))

        await self._write(run)

    @deferred_method
    async def begin_sync(self, node_id: int, extra: dict[str, Any]) -> str:
        """Start a synchronisation of a node: in one transaction, empty it, set it
        IN_PROGRESS with ``extra`` and a new sync token, which is returned. Any older
        sync of the node is superseded from then on. Raises :class:`NodeGone`."""
        token = uuid.uuid4().hex

        def run(connection: Connection) -> None:
            itemwrites.check_owner(connection, node_id, None, self.leases)
            connection.execute(delete(items).where(items.c.node_id == node_id))
            connection.execute(
                update(nodes)
                .where(nodes.c.id == node_id)
                .values(
                    sync_state=SyncState.IN_PROGRESS,
                    sync_state_updated=utcnow(),
                    sync_token=token,
                    sync_error=None,
                    extra=extra,
                    position_gap_from=None,
                    creation_gap_from=None,
                )
            )

        await self._write(run)
        return token

    @deferred_method
    async def end_sync(
        self, node_id: int, token: str, sync_state: SyncState | None, error: str | None = None
    ) -> bool:
        """End a failed synchronisation: if ``token`` still owns the node, empty it and
        set ``sync_state`` (``None``: never synchronised, ``ERROR``) and ``error``.
        Returns whether it did (False: superseded or gone, nothing written)."""

        def run(connection: Connection) -> bool:
            try:
                itemwrites.check_owner(connection, node_id, token, self.leases)
            except NodeGone:
                return False
            connection.execute(delete(items).where(items.c.node_id == node_id))
            connection.execute(
                update(nodes)
                .where(nodes.c.id == node_id)
                .values(
                    sync_state=sync_state,
                    sync_state_updated=utcnow(),
                    sync_token=None,
                    sync_error=error,
                    position_gap_from=None,
                    creation_gap_from=None,
                )
            )
            return True

        return await self._write(run)

    @deferred_method
    async def delete_node(self, node_id: int) -> None:
        """Forget a node and its items (XEP-0060 node deletion event). A node already
        gone is not an error."""

        def run(connection: Connection) -> None:
            try:
                itemwrites.check_owner(connection, node_id, None, self.leases)
            except NodeGone:
                return
            connection.execute(delete(nodes).where(nodes.c.id == node_id))

        await self._write(run)

    @deferred_method
    async def delete_nodes(
        self,
        *,
        profiles: Collection[str] | None = None,
        services: Collection[str] | None = None,
        names: Collection[str] | None = None,
        types: Collection[str | None] | None = None,
        subtypes: Collection[str | None] | None = None,
    ) -> int:
        """Delete the nodes matching every given filter (all nodes if none); their items
        go with them. ``None`` in ``types``/``subtypes`` selects nodes without one.
        Returns the number of nodes deleted."""
        filters = {
            "profiles": profiles,
            "services": services,
            "names": names,
            "types": types,
            "subtypes": subtypes,
        }
        conditions = self._scope_conditions()
        for key, values in filters.items():
            if values is not None:
                column = nodes.c[NODE_FILTERS[key]]
                conditions.append(searching._in_nullable(column, list(values)))

        def run(connection: Connection) -> int:
            return connection.execute(delete(nodes).where(*conditions)).rowcount

        return await self._write(run)

    @deferred_method
    async def get_nodes(
        self,
        *,
        profile: str | None = None,
        service: str | None = None,
        sync_state: SyncState | Collection[SyncState] | None = None,
    ) -> list[NodeInfo]:
        """Nodes matching every given filter (``None``: any), e.g. the syncs a crash
        left ``IN_PROGRESS``."""
        if profile is not None:
            # first: the scope then holds the profile just claimed
            await self.leases.claim(profile)
        conditions = self._scope_conditions()
        if profile is not None:
            conditions.append(nodes.c.profile == profile)
        if service is not None:
            conditions.append(nodes.c.service == service)
        if isinstance(sync_state, SyncState):
            conditions.append(nodes.c.sync_state == sync_state)
        elif sync_state is not None:
            conditions.append(nodes.c.sync_state.in_(list(sync_state)))

        def run(connection: Connection) -> list[NodeInfo]:
            rows = connection.execute(
                select(*noderows.NODE_COLUMNS).where(*conditions).order_by(nodes.c.id)
            )
            return [noderows.node_info(row) for row in rows]

        return await self._read(run)

    @deferred_method
    async def count_items(self, node_id: int) -> int:
        """Number of cached items of a node."""

        def run(connection: Connection) -> int:
            return connection.execute(
                select(func.count()).select_from(items).where(items.c.node_id == node_id)
            ).scalar_one()

        return await self._read(run)

    # ---------------------------------------------------------------------- items

    @deferred_method
    async def cache_items(
        self,
        node_id: int,
        items: Iterable[CachedItem],
        *,
        where: Literal["newest", "oldest"] = "newest",
        complete: bool = False,
        token: str | None = None,
        limit: int | None = None,
        server_count: int | None = None,
        extra: dict[str, Any] | None = None,
        keys: Mapping[str, str] | None = None,
        keep_place: bool = False,
        server_max: int | None = None,
    ) -> None:
        """Store a batch of items of one node, in one transaction.

        ``items`` come in server order (oldest first). ``where="newest"`` places them
        after every item the node holds (publish events, forward paging): an item
        republished with a known id replaces the old one and takes the newest position,
        as ejabberd, Prosody and libervia-pubsub do, while keeping its creation time
        and creation order. ``where="oldest"`` places them before every item (a sync
        paging backwards from the newest page). Within a batch the last occurrence of an
        id wins. ``complete=True`` marks the node ``COMPLETED`` in the same transaction,
        so a node is never complete without its last page; it needs the ``token`` of the
        sync that paged the node, and records ``server_count`` and ``extra`` (what the
        sync learnt of the node) with it.

        ``token``: the write belongs to that sync (:class:`SyncSuperseded` when it no
        longer owns the node). Without it, the node must exist (:class:`NodeGone`).
        ``limit``: after the write, the node keeps only its ``limit`` newest items (an
        event publishing into a node at the cache limit); the node is then marked
        ``truncated``. ``keys``: the server's RSM keys of some of these items (item id ->
        key). ``keep_place``: an item the node already holds is updated where it is (a
        server that keeps a republished item in its first place), not moved.
        ``server_max``: the node's own ``max_items`` on its server, which drops its
        oldest items beyond it (without telling): the store drops them too.
        """
        if where not in ("newest", "oldest"):
            raise ValueError(f"where must be 'newest' or 'oldest', not {where!r}")
        if complete and token is None:
            raise ValueError("only a synchronisation (with its token) completes a node")
        batch: dict[str, tuple[str, dict[str, Any] | None]] = {}
        for item_id, raw_xml, parsed in items:
            batch.pop(item_id, None)  # last occurrence wins, at its own place
            batch[item_id] = (raw_xml, parsed)
        texts = {item_id: extract_text(raw) for item_id, (raw, _) in batch.items()}
        vectors = (
            {item_id: tsvector(text) for item_id, text in texts.items()}
            if self.postgresql
            else None
        )

        def run(connection: Connection) -> None:
            itemwrites.check_owner(connection, node_id, token, self.leases)
            if batch:
                itemwrites.write_items(
                    connection, node_id, batch, texts, where, keep_place, vectors
                )
            if keys:
                itemwrites.learn_keys(connection, node_id, keys)
            if server_max is not None:
                itemwrites.keep_newest(connection, node_id, server_max, truncated=False)
            if limit is not None:
                itemwrites.keep_newest(connection, node_id, limit)
            if complete:
                now = utcnow()
                values: dict[str, Any] = {
                    "sync_state": SyncState.COMPLETED,
                    "sync_state_updated": now,
                    "last_synced": now,
                    "server_count": server_count,
                    "sync_error": None,
                }
                if extra is not None:
                    values["extra"] = extra
                connection.execute(update(nodes).where(nodes.c.id == node_id).values(values))

        await self._write(run)

    @deferred_method
    async def learn_keys(self, node_id: int, keys: Mapping[str, str]) -> None:
        """Record the server's RSM keys of items the node holds (item id -> key), as a
        server's answer showed them; unknown ids are ignored."""
        if not keys:
            return

        def run(connection: Connection) -> None:
            itemwrites.check_owner(connection, node_id, None, self.leases)
            itemwrites.learn_keys(connection, node_id, keys)

        await self._write(run)

    @deferred_method
    async def stored_items(self, node_id: int, item_ids: Iterable[str]) -> list[CachedItem]:
        """``(item id, raw XML, parsed)`` of those of ``item_ids`` the node holds."""
        wanted = list(item_ids)
        if not wanted:
            return []

        def run(connection: Connection) -> list[CachedItem]:
            rows = connection.execute(
                select(items.c.item_id, items.c.data, items.c.parsed).where(
                    items.c.node_id == node_id,
                    itemwrites.in_json(connection, items.c.item_id, wanted),
                )
            )
            return [(row.item_id, row.data, row.parsed) for row in rows]

        return await self._read(run)

    @deferred_method
    async def held_item_ids(self, node_id: int, item_ids: Iterable[str]) -> set[str]:
        """Which of ``item_ids`` the node holds (a sync's duplicate check, in constant
        memory whatever the node's size)."""
        wanted = list(item_ids)
        if not wanted:
            return set()

        def run(connection: Connection) -> set[str]:
            return set(
                connection.execute(
                    select(items.c.item_id).where(
                        items.c.node_id == node_id,
                        itemwrites.in_json(connection, items.c.item_id, wanted),
                    )
                ).scalars()
            )

        return await self._read(run)

    @deferred_method
    async def delete_items(
        self, node_id: int, item_ids: Iterable[str], *, token: str | None = None
    ) -> int:
        """Delete items by id (XEP-0060 retract); unknown ids are ignored. Returns the
        number deleted. Raises :class:`NodeGone` / :class:`SyncSuperseded`."""
        wanted = list(item_ids)

        def run(connection: Connection) -> int:
            itemwrites.check_owner(connection, node_id, token, self.leases)
            deleted = itemwrites.delete_items_where(
                connection,
                (items.c.node_id == node_id)
                & itemwrites.in_json(connection, items.c.item_id, wanted),
            )
            if deleted:
                positions.close_shallow_gaps(connection, node_id)
            return deleted

        return await self._write(run)

    @deferred_method
    async def purge_node_items(self, node_id: int) -> int:
        """Delete every item of a node (XEP-0060 purge). Returns the number deleted.
        Raises :class:`NodeGone`."""

        def run(connection: Connection) -> int:
            itemwrites.check_owner(connection, node_id, None, self.leases)
            deleted = connection.execute(delete(items).where(items.c.node_id == node_id)).rowcount
            connection.execute(
                update(nodes)
                .where(nodes.c.id == node_id)
                .values(position_gap_from=None, creation_gap_from=None)
            )
            return deleted

        return await self._write(run)

    def get_items(
        self,
        node_id: int,
        *,
        max_items: int | None = None,
        item_ids: Iterable[str] | None = None,
        rsm_max: int | None = None,
        after: str | None = None,
        before: str | None = None,
        index: int | None = None,
        order_by: str = "modification",
        descending: bool = False,
        synced_by: str | None = None,
        keys: str = "item_id",
        ids_order: str = "node",
    ) -> defer.Deferred[ItemsPage]:
        """Items of a node as a server answers a XEP-0060 items request.

        - ``max_items=N``: the N newest items, oldest first (XEP-0060 6.5.7);
        - ``item_ids``: those items, in node order; unknown ids are dropped (servers
          disagree on this order: XEP-0060 does not say); RSM and ``max_items`` are then
          ignored, except that ``count`` is the number of items found;
        - RSM (XEP-0059): ``rsm_max`` with ``after``, ``before`` (``""``: the last page)
          or ``index``; ``count`` (the whole node) is always filled when RSM is used, and
          ``rsm_max=0`` returns the count only. An ``after``/``before`` id the node does
          not hold raises :class:`UnknownRSMKey` (the plugin makes it a cache miss);
        - neither: every item (no hidden default page size).

        ``order_by`` is ``"modification"`` (the servers' order: a republished item is
        the newest) or ``"creation"`` (first publication); ``descending`` reverses it.

        ``synced_by``: the sync token of the node as the caller found it; the page is
        read in the same read transaction that checks the node still has it, else
        :class:`NodeChanged` (a sync, a purge or a reset took it in between).

        ``keys="rsm_key"``: RSM keys are the server's own (learnt, see :meth:`learn_keys`),
        not item ids: ``after``/``before`` are looked up among them, and ``first``/``last``
        are None where the key of a page's end is not known. ``ids_order="asked"``: items
        asked by id come in the order asked.
        """
        try:
            request = pages.PageRequest(
                max_items=max_items,
                item_ids=None if item_ids is None else tuple(item_ids),
                rsm_max=rsm_max,
                after=after,
                before=before,
                index=index,
                order_by=order_by,
                descending=descending,
                keys=keys,
                ids_order=ids_order,
            )
        except ValueError:
            return defer.fail()
        return self._get_page(node_id, request, synced_by)

    def _get_page(
        self, node_id: int, request: pages.PageRequest, synced_by: str | None
    ) -> defer.Deferred[ItemsPage]:
        if self._pg_reader is not None:
            return aio(self._pg_get_items(node_id, request, synced_by), self._tasks)
        if self._reader is not None:
            reader = self._reader
            try:
                # one read transaction: the node's check and its page see one state
                reader.execute("BEGIN")
                try:
                    page = pages.read_page(self._fetch_now, node_id, request, synced_by)
                finally:
                    reader.execute("COMMIT")
            except (pages.NeedsRenumbering, sqlite3.OperationalError):
                pass  # a write first, or the database is busy: the asyncio path
            except Exception:
                return defer.fail()
            else:
                return defer.succeed(page)
        return aio(self._get_items(node_id, request, synced_by))

    def _fetch_now(self, sql: str, params: dict[str, Any]) -> list[Any]:
        assert self._reader is not None
        return self._reader.execute(sql, params).fetchall()

    async def _pg_get_items(
        self, node_id: int, request: pages.PageRequest, synced_by: str | None
    ) -> ItemsPage:
        assert self._pg_reader is not None
        sql, params = pgpages.page_request(node_id, request, synced_by)
        rows = await self._pg_reader.fetch(sql, *params)
        try:
            page = pgpages.read_page_at_once(rows, node_id, request, synced_by)
        except pages.NeedsRenumbering:
            return await self._get_items(node_id, request, synced_by)
        version = pgpages.row_version(rows)
        if version is not None:
            self.pages.put(node_id, request, version, page)
        return page

    def get_items_unless_changed(
        self,
        assumed: NodeInfo,
        *,
        item_ids: Iterable[str] | None = None,
        **page: Any,
    ) -> defer.Deferred[ItemsPage | None]:
        """The page that :meth:`get_items` reads with ``page`` and
        ``synced_by=assumed.sync_token`` for node ``assumed``, if the node's row is
        still ``assumed`` (the row read earlier, by :meth:`get_node` or here); else None.

        A row at the same version (:attr:`NodeInfo.version`) is that very row, so the
        page is the one :meth:`get_node` then :meth:`get_items` would give, in one round
        trip instead of two (PostgreSQL). A page already read at that version is given
        again after a lookup of the row's version alone (:mod:`.pagecache`), a cheaper
        statement than the page's. None also when :meth:`get_items` would raise
        (an unknown RSM key, the node changed) or write first (gaps to close), and
        always where rows have no version (:attr:`versions_rows` is false): the caller
        then asks :meth:`get_node` and :meth:`get_items`.
        """
        try:
            request = pages.PageRequest(
                item_ids=None if item_ids is None else tuple(item_ids), **page
            )
        except (TypeError, ValueError):
            return defer.fail()
        if (
            self._pg_reader is None
            or assumed.version is None
            or not self.leases.serves(assumed.profile)
        ):
            return defer.succeed(None)
        return aio(self._pg_get_items_unless_changed(assumed, request), self._tasks)

    async def _pg_get_items_unless_changed(
        self, assumed: NodeInfo, request: pages.PageRequest
    ) -> ItemsPage | None:
        assert self._pg_reader is not None and assumed.version is not None
        node_id, version = assumed.id, assumed.version
        kept = self.pages.get(node_id, request, version)
        if kept is not None:
            # read at this version: still right if the row is still at it
            rows = await self._pg_reader.fetch(noderows.PG_VERSION_SQL, node_id)
            if rows and rows[0][0] == version:
                return kept
            self.pages.discard(node_id, request)
            return None
        token = assumed.sync_token
        sql, params = pgpages.page_request(node_id, request, token)
        rows = await self._pg_reader.fetch(sql, *params)
        if pgpages.row_version(rows) != version:
            return None
        try:
            page = pgpages.read_page_at_once(rows, node_id, request, token)
        except (pages.NeedsRenumbering, NodeChanged, UnknownRSMKey):
            return None
        self.pages.put(node_id, request, version, page)
        return page

    async def _get_items(
        self, node_id: int, request: pages.PageRequest, synced_by: str | None
    ) -> ItemsPage:
        def read(connection: Connection) -> ItemsPage:
            if itemwrites.is_postgresql(connection):
                sql, params = pgpages.page_request(node_id, request, synced_by)
                rows = connection.exec_driver_sql(sql, params).all()
                return pgpages.read_page_at_once(rows, node_id, request, synced_by)

            def fetch(sql: str, params: dict[str, Any]) -> Sequence[Any]:
                return connection.exec_driver_sql(sql, params).all()

            return pages.read_page(fetch, node_id, request, synced_by)

        try:
            return await self._read(read)
        except pages.NeedsRenumbering:
            pass

        def renumber_and_read(connection: Connection) -> ItemsPage:
            try:
                itemwrites.check_owner(connection, node_id, None, self.leases)
            except NodeGone:
                return read(connection)  # gone meanwhile: read says so
            positions.renumber(connection, [node_id])
            return read(connection)

        return await self._write(renumber_and_read)

    # ------------------------------------------------------------ search, purge

    @deferred_method
    async def search(self, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Search cached items across nodes (the reference ``ps_cache_search``).

        See :mod:`libervia_cache.storage.query` for the query. Each result holds ``profile``,
        ``service``, ``node``, ``item_id``, ``parsed``, ``created``, ``updated``,
        ``item_payload`` (raw XML) with ``with_payload``, and ``rank`` (FTS5 bm25: lower
        is better) with a full-text query. Raises :class:`SearchQueryError`.
        """
        parsed_query = parse_search_query(query)
        statement = searching.search_statement(parsed_query, self.postgresql, self._scope)

        try:
            async with self._read_engine.connect() as connection:
                result = await connection.execute(statement)
                return [dict(row._mapping) for row in result]
        except OperationalError as e:
            if "fts5" in str(e.orig):
                raise SearchQueryError("fts", str(e.orig)) from None
            raise

    @deferred_method
    async def nodes_to_purge(self, filters: Mapping[str, Any] | None = None) -> list[NodeInfo]:
        """The nodes holding items that :meth:`purge` would delete with ``filters``."""
        condition = searching.purge_condition(parse_purge_filters(filters), self._scope)

        def run(connection: Connection) -> list[NodeInfo]:
            touched = select(items.c.node_id).where(condition).distinct()
            rows = connection.execute(
                select(*noderows.NODE_COLUMNS).where(nodes.c.id.in_(touched)).order_by(nodes.c.id)
            )
            return [noderows.node_info(row) for row in rows]

        return await self._read(run)

    @deferred_method
    async def purge(self, filters: Mapping[str, Any] | None = None) -> int:
        """Delete the items matching ``filters`` (see :func:`parse_purge_filters`): all
        items if empty. Nodes that lose items no longer mirror the server: a COMPLETED
        one goes back to "never synchronised", and the sync running on an IN_PROGRESS one
        is superseded (its next write is refused), in the same transaction. Returns the
        number of items deleted."""
        condition = searching.purge_condition(parse_purge_filters(filters), self._scope)

        def run(connection: Connection) -> int:
            touched = [
                row.node_id
                for row in connection.execute(
                    select(items.c.node_id).where(condition).group_by(items.c.node_id)
                )
            ]
            itemwrites.take_nodes(connection, touched)
            deleted = itemwrites.delete_items_where(connection, condition)
            if touched:
                connection.execute(
                    update(nodes)
                    .where(
                        nodes.c.id.in_(touched),
                        nodes.c.sync_state.in_([SyncState.COMPLETED, SyncState.IN_PROGRESS]),
                    )
                    .values(sync_state=None, sync_state_updated=utcnow(), sync_token=None)
                )
            return deleted

        return await self._write(run)

    @deferred_method
    async def count_purge(self, filters: Mapping[str, Any] | None = None) -> int:
        """How many items :meth:`purge` would delete with ``filters``."""
        condition = searching.purge_condition(parse_purge_filters(filters), self._scope)

        def run(connection: Connection) -> int:
            return connection.execute(
                select(func.count()).select_from(items).where(condition)
            ).scalar_one()

        return await self._read(run)

    @deferred_method
    async def reset(self) -> tuple[int, int]:
        """Forget everything: every node and item (of the profiles this store serves, on
        a shared database). Returns how many nodes and items there were. Work still
        holding a node's id finds it gone (ids are not reused)."""
        conditions = self._scope_conditions()

        def run(connection: Connection) -> tuple[int, int]:
            if conditions:
                scoped = select(nodes.c.id).where(*conditions)
                deleted_items = connection.execute(
                    delete(items).where(items.c.node_id.in_(scoped))
                ).rowcount
            else:
                deleted_items = connection.execute(delete(items)).rowcount
            deleted_nodes = connection.execute(delete(nodes).where(*conditions)).rowcount
            return deleted_nodes, deleted_items

        return await self._write(run)


__all__ = ["CachedItem", "Store"]
