"""The cache's methods on the host's bridge (``ps_cache_*``), JSON in and out.

Thin: each method checks its arguments (``bad_request`` naming the bad one), calls the
part that does the work, and turns failures into typed bridge errors through the one
error table (:mod:`libervia_cache.errors`). The names mirror the reference Libervia
methods; ``ps_items_get``, the transparent read, belongs to the host.

=================  ======================================================================
method             result
=================  ======================================================================
ps_cache_get       ``{"items": [xml, ...], "metadata": {...}}``; ``not_cached`` error when
                   the cache cannot answer (node not synchronised, held for a check, an
                   RSM key it lacks...)
ps_cache_sync      ``{"started": bool, "nodes": [node status]}``; with ``wait``, progress
                   messages ``{"stored", "total", "pages"}`` until the sync ends; a sync
                   already running is followed
ps_cache_purge     ``{"purged": n}``, or ``{"count": n}`` with ``dry_run``
ps_cache_reset     ``{"nodes": n, "items": n}``: what was forgotten
ps_cache_search    list of results: profile, service, node, item_id, parsed, created,
                   updated (ISO 8601), ``rank`` with ``fts``, ``item_payload`` on demand;
                   ``services`` must be JIDs (a bad one is a ``bad_request``)
ps_cache_status    ``{"nodes": [node status], "counters": {...}, "database": {...},
                   "syncs_running": n}``; no node (and the database's ``unavailable``
                   reason) when the database is not open
=================  ======================================================================
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, ParamSpec, TypeVar

from twisted.internet import task
from twisted.words.protocols.jabber.jid import JID

from libervia_cache.errors import BridgeError, CacheUnavailable, to_bridge_error
from libervia_cache.hostapi import Client, Host, items_arguments, parse_jid
from libervia_cache.plugin.manage import Management
from libervia_cache.plugin.reader import CachedReader, ItemsRequest, Miss, Missed
from libervia_cache.plugin.status import Status
from libervia_cache.plugin.sync import NodeSync, Outcome

#: Seconds between two looks at a running sync's progress (``ps_cache_sync`` with wait).
PROGRESS_INTERVAL = 0.2

ProgressSink = Callable[[dict[str, Any]], None]

P = ParamSpec("P")
T = TypeVar("T")


def to_json(value: Any) -> Any:
    """``value`` with datetimes as ISO 8601 strings, tuples as lists, JIDs as strings."""
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, JID):
        return value.full()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def typed_errors(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Known failures become typed bridge errors (the table of :mod:`..errors`);
    anything else goes on, to be reported as ``internal`` with its traceback."""

    @functools.wraps(method)  # keeps the signature: the bridge checks arguments with it
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except BridgeError:
            raise
        except Exception as error:
            converted = to_bridge_error(error)
            if converted.kind == "internal":
                raise
            raise converted from None

    return wrapper


def _node_name(node: str) -> None:
    if not node:
        raise BridgeError("bad_request", "node: must not be empty")


def _service_jid(service: Any, part: str) -> JID | None:
    """:func:`parse_jid`, and ``bad_request`` for what Twisted's JID parser fails on with
    another exception (``a..b``: IndexError)."""
    try:
        return parse_jid(service, part)
    except (IndexError, UnicodeError):
        raise BridgeError("bad_request", f"{part}: {service!r} is not a valid JID") from None


def _services(value: Any, part: str) -> list[str] | None:
    """``services`` of a search query or purge filters: JIDs, normalised as the cache
    stores them; ``bad_request`` naming a bad one (it would silently match nothing)."""
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(s, str) for s in value):
        raise BridgeError("bad_request", f"{part}: expected a list of service JIDs")
    services = []
    for service in value:
        jid = _service_jid(service, part)
        if jid is None:
            raise BridgeError("bad_request", f"{part}: a service JID cannot be empty")
        services.append(jid.full())
    return services


def _profiles(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(p, str) for p in value):
        raise BridgeError("bad_request", "profiles: expected a list of profile names")
    return list(value)


class CacheBridgeMethods:
    """The ``ps_cache_*`` methods, with the parts they use injected."""

    def __init__(
        self,
        *,
        host: Host,
        reader: CachedReader,
        management: Management,
        status: Status,
    ) -> None:
        self._host = host
        self._reader = reader
        self._management = management
        self._status = status

    def methods(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        """Bridge name -> method (the plugin registers and unregisters them)."""
        return {
            "ps_cache_get": typed_errors(self.ps_cache_get),
            "ps_cache_sync": typed_errors(self.ps_cache_sync),
            "ps_cache_purge": typed_errors(self.ps_cache_purge),
            "ps_cache_reset": typed_errors(self.ps_cache_reset),
            "ps_cache_search": typed_errors(self.ps_cache_search),
            "ps_cache_status": typed_errors(self.ps_cache_status),
        }

    # --- helpers ------------------------------------------------------------------------

    def _client(self, profile: Any) -> Client:
        """The profile's client; ``not_found`` for a profile the host does not know."""
        if profile is not None and not isinstance(profile, str):
            raise BridgeError("bad_request", f"profile: must be a string, not {profile!r}")
        name = profile or self._host.default_profile
        try:
            return self._host.get_client(name)
        except KeyError:
            raise BridgeError("not_found", f"unknown profile {name!r}") from None

    def _check_profiles(self, profiles: Any) -> None:
        """``not_found`` for a profile filter naming a profile the host does not know;
        ``bad_request`` for one that is not a list of names (before anything else)."""
        for name in _profiles(profiles) or []:
            try:
                self._host.get_client(name)
            except KeyError:
                raise BridgeError("not_found", f"unknown profile {name!r}") from None
            except BridgeError as error:
                if error.kind == "not_found":
                    raise
                # known but offline: its cached data can still be searched or purged

    # --- methods --------------------------------------------------------------------------

    async def ps_cache_get(
        self,
        service: str,
        node: str,
        profile: str | None = None,
        max_items: int | None = None,
        item_ids: Sequence[str] | None = None,
        rsm: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Items from the cache only: never asks the service."""
        arguments = items_arguments(service, node, max_items, item_ids, rsm)
        _node_name(arguments.node)
        client = self._client(profile)
        service_jid = arguments.service or client.jid.userhostJID()
        answer = await self._reader.read(
            client,
            ItemsRequest(
                service_jid,
                arguments.node,
                arguments.max_items,
                arguments.item_ids,
                arguments.rsm_request,
            ),
            cache_only=True,
        )
        if isinstance(answer, Missed):
            raise _not_cached(answer, f"node {node!r} on {service_jid.full()}")
        items, metadata = answer
        return {"items": [item.toXml() for item in items], "metadata": to_json(metadata)}

    async def ps_cache_sync(
        self,
        service: str,
        node: str,
        progress: ProgressSink,
        profile: str | None = None,
        wait: bool = False,
    ) -> dict[str, Any]:
        """(Re)synchronise a node; with ``wait``, report progress until it is over."""
        arguments = items_arguments(service, node)
        _node_name(arguments.node)
        if not isinstance(wait, bool):
            raise BridgeError("bad_request", f"wait: must be true or false, not {wait!r}")
        client = self._client(profile)
        service_jid = arguments.service or client.jid.userhostJID()
        where = f"node {node!r} on {service_jid.full()}"
        sync = await self._management.synchronise(client, service_jid, node)
        if wait:
            await self._follow(sync, progress, where)
        nodes = await self._status.nodes(client.profile, service_jid.full(), node)
        if wait:
            stored = sum(row["items"] for row in nodes)
            progress({"stored": stored, "total": stored, "pages": None, "done": True})
        return {"started": True, "nodes": nodes}

    async def _follow(self, sync: NodeSync, progress: ProgressSink, where: str) -> None:
        last: list[tuple[int, int | None] | None] = [None]

        def report() -> None:
            state = (sync.progress.stored, sync.progress.total)
            if state != last[0] and not sync.ended:
                last[0] = state
                progress(
                    {
                        "stored": sync.progress.stored,
                        "total": sync.progress.total,
                        "pages": sync.progress.pages,
                    }
                )

        reporter = task.LoopingCall(report)
        reporter.start(PROGRESS_INTERVAL, now=True)
        try:
            await sync.wait()
        finally:
            reporter.stop()
        if sync.outcome is Outcome.COMPLETED:
            return
        if sync.error is not None:
            raise to_bridge_error(sync.error, f"synchronisation of {where}")
        raise BridgeError(
            "conflict",
            f"synchronisation of {where} was {sync.outcome.value if sync.outcome else 'stopped'} "
            "(a purge, a reset, a deletion of the node or a newer sync took it over)",
        )

    async def ps_cache_purge(
        self, filters: Mapping[str, Any] | None = None, dry_run: bool = False
    ) -> dict[str, int]:
        """Delete cached items matching ``filters`` (all items without); see
        :mod:`libervia_cache.storage.query`."""
        if filters is not None and not isinstance(filters, Mapping):
            raise BridgeError("bad_request", f"filters: must be an object, not {filters!r}")
        if not isinstance(dry_run, bool):
            raise BridgeError("bad_request", f"dry_run: must be true or false, not {dry_run!r}")
        if filters:
            self._check_profiles(filters.get("profiles"))
            if filters.get("services") is not None:
                filters = {**filters, "services": _services(filters["services"], "services")}
        if dry_run:
            return {"count": await self._management.count_purge(filters)}
        return {"purged": await self._management.purge(filters)}

    async def ps_cache_reset(self) -> dict[str, int]:
        """Forget every cached node and item; says how many there were."""
        nodes, items = await self._management.reset()
        return {"nodes": nodes, "items": items}

    async def ps_cache_search(self, query: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Search cached items (query: see :mod:`libervia_cache.storage.query`)."""
        query = query or {}
        if not isinstance(query, Mapping):
            raise BridgeError("bad_request", f"query: must be an object, not {query!r}")
        self._check_profiles(query.get("profiles"))
        if query.get("services") is not None:
            query = {**query, "services": _services(query["services"], "services")}
        results: list[dict[str, Any]] = to_json(await self._management.search(query))
        return results

    async def ps_cache_status(
        self, service: str | None = None, node: str | None = None, profile: str | None = None
    ) -> dict[str, Any]:
        """Cached nodes (optionally of one profile, service, node), the database and the
        counters."""
        if profile:
            self._check_profiles([profile])
        if node is not None and not isinstance(node, str):
            raise BridgeError("bad_request", f"node: must be a string, not {node!r}")
        service_jid = _service_jid(service, "service")
        try:
            nodes = await self._status.nodes(
                profile or None, service_jid.full() if service_jid else None, node
            )
        except CacheUnavailable:
            nodes = []  # the summary's database says why
        return to_json({"nodes": nodes, **self._status.summary()})


def _not_cached(missed: Missed, where: str) -> BridgeError:
    """The ``not_cached`` error of a cache-only read that missed."""
    info = missed.node_info
    if missed.reason is Miss.NOT_SYNCHRONISED:
        if info is None:
            return BridgeError("not_cached", f"{where} is not cached")
        state = info.sync_state.name if info.sync_state else "never synchronised"
        return BridgeError("not_cached", f"{where} is not synchronised ({state}); run sync first")
    if missed.reason is Miss.UNAVAILABLE:
        return BridgeError("unavailable", f"the cache is unavailable: {missed.detail}")
    detail = f": {missed.detail}" if missed.detail else ""
    return BridgeError(
        "not_cached",
        f"the cache of {where} cannot answer this request ({missed.reason.value}{detail})",
    )
