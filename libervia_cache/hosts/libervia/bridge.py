"""The cache's bridge methods on Libervia's bridge, as Libervia's frontends call them.

The plugin registers its methods with keyword arguments, JSON in and out
(:meth:`LiberviaBridge.register_method`); Libervia's bridge methods take typed
positional arguments and answer serialised strings. :data:`METHODS` is the table of
the translation, one entry per method, with the stock cache's signatures:

=================  =========  =======  =================================================
method             in         out      arguments
=================  =========  =======  =================================================
ps_cache_get       ssiassss   s        service, node, max_items (-1: no limit),
                                       item_ids, sub_id, extra (RSM as ``rsm_*``),
                                       profile key; answer: ``{"items": [xml], ...}``
                                       with the metadata
ps_cache_sync      sss                 service, node, profile key; returns once the
                                       node is synchronised
ps_cache_purge     s                   purge filters (JSON)
ps_cache_reset                         forget everything
ps_cache_search    s          s        query (JSON); answer: list of results (JSON)
ps_cache_status    sss        s        service, node, profile key (not in the stock
                                       cache); answer: the status (JSON)
=================  =========  =======  =================================================

Errors reach frontends as Libervia's exceptions (:data:`ERRORS`): a node the cache
cannot answer is ``NotFound``, as with the stock cache.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from libervia.backend.core import exceptions
from twisted.internet import defer

from libervia_cache.errors import BridgeError, describe, to_bridge_error
from libervia_cache.hostapi import parse_jid
from libervia_cache.hosts.libervia import queries
from libervia_cache.hosts.libervia.host import node_uri, to_tx_rsm

log = logging.getLogger(__name__)

#: Libervia's "no limit" for integers on the bridge
NO_LIMIT = -1

#: bridge error kind -> the Libervia exception frontends receive
ERRORS: dict[str, type[Exception]] = {
    "bad_request": exceptions.DataError,
    "not_found": exceptions.NotFound,
    "not_cached": exceptions.NotFound,
    "conflict": exceptions.ConflictError,
    "unavailable": exceptions.NotReady,
    "timeout": exceptions.TimeOutError,
    "server": exceptions.ExternalRequestError,
    "too_large": exceptions.DataError,
    "unknown_method": exceptions.NotFound,
    "internal": exceptions.InternalError,
}

Call = Callable[..., Awaitable[Any]]


def _json(text: Any, what: str) -> Any:
    if text in ("", None):
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        raise BridgeError("bad_request", f"{what}: not JSON: {text!r}") from None


def _serialise(data: Any) -> str:
    """As Libervia's ``data_format.serialise``."""
    return json.dumps(data, ensure_ascii=False, default=str)


class LiberviaBridge:
    """The host API's bridge on Libervia's (``host.bridge.add_method``)."""

    def __init__(
        self,
        libervia_bridge: Any,
        *,
        parse_extra: Callable[[dict[str, Any]], Any],
        profile_name: Callable[[str], str],
    ) -> None:
        """``parse_extra``: Libervia's ``XEP_0060.parse_extra`` (RSM keys of ``extra``);
        ``profile_name``: a profile key (``@DEFAULT@``) to the profile's name."""
        self._bridge = libervia_bridge
        self._parse_extra = parse_extra
        self._profile_name = profile_name
        #: the plugin's methods, by name
        self._methods: dict[str, Call] = {}
        self._exposed: set[str] = set()

    def register_method(self, name: str, method: Callable[..., Any]) -> None:
        if name in self._methods:
            raise ValueError(f"bridge method {name!r} is already registered")
        self._methods[name] = method
        spec = METHODS.get(name)
        if spec is None:
            log.warning("bridge method %s has no Libervia signature: not exposed", name)
            return
        if name not in self._exposed:
            # Libervia's bridges cannot remove a method: it stays, and answers NotFound
            # once unregistered
            self._bridge.add_method(
                name,
                ".plugin",
                in_sign=spec.in_sign,
                out_sign=spec.out_sign,
                method=self._exposed_method(name, spec),
                async_=True,
            )
            self._exposed.add(name)

    def unregister_method(self, name: str) -> None:
        try:
            del self._methods[name]
        except KeyError:
            raise KeyError(f"bridge method {name!r} is not registered") from None

    def _exposed_method(self, name: str, spec: MethodSpec) -> Callable[..., defer.Deferred[Any]]:
        async def call(*args: Any) -> Any:
            method = self._methods.get(name)
            if method is None:
                raise exceptions.NotFound(f"{name}: the pubsub cache is stopped")
            try:
                return await spec.translate(self, method, *args)
            except Exception as error:
                raise libervia_error(error) from None

        def exposed(*args: Any) -> defer.Deferred[Any]:
            return defer.Deferred.fromCoroutine(call(*args))

        exposed.__name__ = name
        return exposed

    # --- translations: (bridge, plugin method, *Libervia's arguments) ------------------

    async def get(
        self,
        method: Call,
        service: str,
        node: str,
        max_items: int,
        item_ids: list[str],
        sub_id: str,
        extra: str,
        profile_key: str,
    ) -> str:
        if sub_id:
            raise BridgeError("bad_request", "sub_id: the cache does not filter by subscription")
        parsed_extra = self._parse_extra(_json(extra, "extra") or {})
        for key in ("mam", "order_by"):
            if parsed_extra.extra.get(key):
                raise BridgeError("bad_request", f"extra: the cache cannot answer a {key} query")
        rsm = to_tx_rsm(parsed_extra.rsm_request)
        answer = await method(
            service=service or None,
            node=node,
            profile=profile_key,
            max_items=None if max_items == NO_LIMIT else max_items,
            item_ids=list(item_ids) or None,
            rsm=None
            if rsm is None
            else {"max": rsm.max, "after": rsm.after, "before": rsm.before, "index": rsm.index},
        )
        metadata = dict(answer["metadata"])
        service_jid = parse_jid(metadata["service"])
        assert service_jid is not None
        metadata["uri"] = node_uri(service_jid, node)
        if rsm is None:
            metadata.pop("rsm", None)
            metadata.pop("complete", None)
        return _serialise({**metadata, "items": answer["items"]})

    async def sync(self, method: Call, service: str, node: str, profile_key: str) -> str:
        await method(
            service=service or None,
            node=node,
            progress=lambda __: None,
            profile=profile_key,
            wait=True,
        )
        return ""

    async def purge(self, method: Call, filters: str) -> str:
        try:
            translated = queries.purge_filters(_json(filters, "filters"))
        except queries.QueryError as error:
            raise BridgeError("bad_request", str(error)) from None
        await method(filters=translated or None)
        return ""

    async def reset(self, method: Call) -> str:
        await method()
        return ""

    async def search(self, method: Call, query: str) -> str:
        try:
            translated = queries.search_query(_json(query, "query"))
        except queries.QueryError as error:
            raise BridgeError("bad_request", str(error)) from None
        results = await method(query=translated)
        return _serialise([queries.search_result(result) for result in results])

    async def status(self, method: Call, service: str, node: str, profile_key: str) -> str:
        profile = self._profile_name(profile_key) or profile_key if profile_key else None
        status = await method(service=service or None, node=node or None, profile=profile)
        return _serialise(status)


@dataclass(frozen=True)
class MethodSpec:
    """How one method appears on Libervia's bridge."""

    in_sign: str
    out_sign: str
    translate: Callable[..., Awaitable[Any]]


#: method name -> its Libervia signature and translation (see the module docstring)
METHODS: dict[str, MethodSpec] = {
    "ps_cache_get": MethodSpec("ssiassss", "s", LiberviaBridge.get),
    "ps_cache_sync": MethodSpec("sss", "", LiberviaBridge.sync),
    "ps_cache_purge": MethodSpec("s", "", LiberviaBridge.purge),
    "ps_cache_reset": MethodSpec("", "", LiberviaBridge.reset),
    "ps_cache_search": MethodSpec("s", "s", LiberviaBridge.search),
    "ps_cache_status": MethodSpec("sss", "s", LiberviaBridge.status),
}


def libervia_error(error: BaseException) -> Exception:
    """The Libervia exception a frontend receives for ``error`` (one line, the kind's
    exception of :data:`ERRORS`); Libervia's own exceptions pass unchanged."""
    if type(error).__module__.startswith("libervia."):
        return error if isinstance(error, Exception) else exceptions.InternalError(str(error))
    converted = error if isinstance(error, BridgeError) else to_bridge_error(error)
    if converted.kind == "internal":
        log.error("bridge method failed: %s", describe(error), exc_info=error)
    return ERRORS.get(converted.kind, exceptions.InternalError)(converted.message)
