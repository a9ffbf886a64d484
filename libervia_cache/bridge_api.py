"""The cache's methods on the daemon's bridge (``ps_cache_*``), JSON in and out.

Thin: each method validates its arguments, calls the plugin's public API and turns
errors into typed bridge errors (``kind`` + one-line message, see
``libervia_cache.backend.bridge.ERROR_KINDS``). The names mirror the reference Libervia
methods (``psCacheGet``, ``psCacheSync``, ...); ``ps_items_get``, the transparent read,
belongs to the daemon.

=================  ======================================================================
method             result
=================  ======================================================================
ps_cache_get       ``{"items": [xml, ...], "metadata": {...}}``; ``not_cached`` error when
                   the cache cannot answer (node not synchronised, RSM key it lacks)
ps_cache_sync      ``{"started": bool, "nodes": [node status]}``; with ``wait``, progress
                   messages ``{"stored", "total", "pages"}`` until the sync ends
ps_cache_purge     ``{"purged": n}``, or ``{"count": n}`` with ``dry_run``
ps_cache_reset     ``{"nodes": n, "items": n}``: what was forgotten
ps_cache_search    list of results: profile, service, node, item_id, parsed, created,
                   updated (ISO 8601), ``rank`` with ``fts``, ``item_payload`` on demand
ps_cache_status    ``{"nodes": [node status], "counters": {...}}``
=================  ======================================================================
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from twisted.internet import defer, task
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID

# The bridge's typed error: the one import of the reference daemon on the plugin side
# (hostapi has no error type yet; the Libervia backend has ``core.exceptions``).
from libervia_cache.hostapi import (
    BridgeError,
    Client,
    Host,
    NotConnected,
    parse_jid,
    rsm_request,
)
from libervia_cache.search import SearchQueryError
from libervia_cache.storage import SyncState
from libervia_cache.sync import SyncError

if TYPE_CHECKING:
    from libervia_cache.plugin import PubsubCache

#: Seconds between two looks at a running sync's progress (``ps_cache_sync`` with wait).
PROGRESS_INTERVAL = 0.2

#: RSM request keys of the JSON form, in the order RSMRequest takes them.

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


def server_error(error: StanzaError, what: str) -> BridgeError:
    """The bridge error of a pubsub service's error answer."""
    text = f" ({error.text})" if getattr(error, "text", None) else ""
    return BridgeError("server", f"{what}: the pubsub service answered {error.condition}{text}")


def _error_table() -> list[tuple[Any, str, Callable[[Any], str]]]:
    """Exceptions of the plugin's API -> (bridge error kind, one-line message)."""
    from libervia_cache.plugin import STORE_ERRORS, CacheUnavailable

    return [
        (SearchQueryError, "bad_request", str),
        (SyncError, "server", str),
        (StanzaError, "server", lambda e: f"the pubsub service answered {e.condition}"),
        (defer.TimeoutError, "timeout", lambda e: "the pubsub service did not answer in time"),
        (CacheUnavailable, "unavailable", lambda e: f"the cache is unavailable: {e}"),
        (NotConnected, "unavailable", str),
        (STORE_ERRORS, "unavailable", lambda e: f"the cache database failed: {_one_line(e)}"),
    ]


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


def typed_errors(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Turn the plugin's known exceptions into typed bridge errors (see the table)."""

    @functools.wraps(method)  # keeps the signature: the bridge checks arguments with it
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except BridgeError:
            raise
        except Exception as error:
            for kind_of_error, kind, message in _error_table():
                if isinstance(error, kind_of_error):
                    raise BridgeError(kind, message(error)) from None
            raise

    return wrapper


def register_bridge_methods(host: Host, cache: PubsubCache) -> None:
    """Expose the cache on ``host.bridge`` (see the module docstring for each method)."""

    def client_of(profile: str | None) -> Client:
        """The profile's client; ``not_found`` for a profile the daemon does not know."""
        name = profile or host.default_profile
        try:
            return host.get_client(name)
        except KeyError:
            raise BridgeError("not_found", f"unknown profile {name!r}") from None

    def check_profiles(profiles: Sequence[str] | None) -> None:
        """``not_found`` for a profile filter naming a profile the daemon does not know;
        ``bad_request`` for one that is not a list of names (before anything else)."""
        if profiles is None:
            return
        if not isinstance(profiles, list | tuple) or not all(isinstance(p, str) for p in profiles):
            raise BridgeError("bad_request", "profiles: expected a list of profile names")
        for name in profiles:
            try:
                host.get_client(name)
            except KeyError:
                raise BridgeError("not_found", f"unknown profile {name!r}") from None
            except BridgeError as error:
                if error.kind == "not_found":
                    raise
                # known but offline: its cached data can still be searched or purged

    async def ps_cache_get(
        service: str,
        node: str,
        profile: str | None = None,
        max_items: int | None = None,
        item_ids: Sequence[str] | None = None,
        rsm: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Items from the cache only: never asks the service."""
        client = client_of(profile)
        service_jid = parse_jid(service) or client.jid.userhostJID()
        request = rsm_request(rsm)
        if cache.store is None:
            raise BridgeError("unavailable", "the cache is unavailable: its database is not open")
        node_info = await cache.store.get_node(client.profile, service_jid.full(), node)
        where = f"node {node!r} on {service_jid.full()}"
        if node_info is None:
            raise BridgeError("not_cached", f"{where} is not cached")
        if node_info.sync_state is not SyncState.COMPLETED:
            state = node_info.sync_state.name if node_info.sync_state else "never synchronised"
            raise BridgeError(
                "not_cached", f"{where} is not synchronised ({state}); run sync first"
            )
        answer = await cache.get_items_from_cache(
            client, service_jid, node, max_items, item_ids, request
        )
        if answer is None:
            raise BridgeError("not_cached", f"the cache of {where} cannot answer this request")
        items, metadata = answer
        return {"items": [item.toXml() for item in items], "metadata": to_json(metadata)}

    async def ps_cache_sync(
        service: str,
        node: str,
        progress: ProgressSink,
        profile: str | None = None,
        wait: bool = False,
    ) -> dict[str, Any]:
        """(Re)synchronise a node; with ``wait``, report progress until it is over."""
        client = client_of(profile)
        service_jid = parse_jid(service) or client.jid.userhostJID()
        where = f"node {node!r} on {service_jid.full()}"
        d = defer.Deferred.fromCoroutine(cache.synchronise(client, service_jid, node))
        if not wait:
            d.addErrback(lambda failure: None)  # logged by the plugin
            return {
                "started": True,
                "nodes": await cache.node_status(client.profile, service_jid.full(), node),
            }
        last: list[tuple[int, int | None] | None] = [None]

        def report() -> None:
            current = cache.sync_progress(client.profile, service_jid.full(), node)
            if current is None:
                return
            state = (current.stored, current.total)
            if state != last[0]:
                last[0] = state
                progress({"stored": current.stored, "total": current.total, "pages": current.pages})

        reporter = task.LoopingCall(report)
        reporter.start(PROGRESS_INTERVAL, now=False)
        try:
            await d
        except StanzaError as error:
            raise server_error(error, f"synchronisation of {where}") from None
        finally:
            reporter.stop()
        nodes = await cache.node_status(client.profile, service_jid.full(), node)
        stored = sum(row["items"] for row in nodes)
        progress({"stored": stored, "total": stored, "pages": None, "done": True})
        return {"started": True, "nodes": nodes}

    async def ps_cache_purge(
        filters: Mapping[str, Any] | None = None, dry_run: bool = False
    ) -> dict[str, int]:
        """Delete cached items matching ``filters`` (all items without); see search.py."""
        if filters is not None and not isinstance(filters, Mapping):
            raise BridgeError("bad_request", f"filters: must be an object, not {filters!r}")
        if filters:
            check_profiles(filters.get("profiles"))
        if dry_run:
            return {"count": await cache.count_purge(filters)}
        return {"purged": await cache.purge(filters)}

    async def ps_cache_reset() -> dict[str, int]:
        """Forget every cached node and item; says how many there were."""
        nodes = await cache.node_status()
        items = sum(row["items"] for row in nodes)
        await cache.reset()
        return {"nodes": len(nodes), "items": items}

    async def ps_cache_search(query: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Search cached items (query: see :mod:`libervia_cache.search`)."""
        query = query or {}
        if not isinstance(query, Mapping):
            raise BridgeError("bad_request", f"query: must be an object, not {query!r}")
        check_profiles(query.get("profiles"))
        results = await cache.search(query)
        json_results: list[dict[str, Any]] = to_json(results)
        return json_results

    async def ps_cache_status(
        service: str | None = None, node: str | None = None, profile: str | None = None
    ) -> dict[str, Any]:
        """Cached nodes (optionally of one profile, service, node) and the counters."""
        if profile:
            check_profiles([profile])
        service_jid = parse_jid(service)
        return to_json(
            {
                "nodes": await cache.node_status(
                    profile, service_jid.full() if service_jid else None, node
                ),
                "counters": cache.counters_status(),
            }
        )

    for name, method in (
        ("ps_cache_get", ps_cache_get),
        ("ps_cache_sync", ps_cache_sync),
        ("ps_cache_purge", ps_cache_purge),
        ("ps_cache_reset", ps_cache_reset),
        ("ps_cache_search", ps_cache_search),
        ("ps_cache_status", ps_cache_status),
    ):
        host.bridge.register_method(name, typed_errors(method))
