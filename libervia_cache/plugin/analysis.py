"""Analysers and node analysis: which nodes are worth caching, and how to parse them.

Other plugins register *analysers*; for an unknown node the cache runs an analysis
that picks the analyser matching the node name (by prefix) or the namespace of the
payload of the node's most recent item, fetches the node configuration when the
service allows it, and lets the analyser's ``match_cb`` amend the result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from libervia_cache.errors import describe
from libervia_cache.hostapi import XEP0060, Client, as_deferred

log = logging.getLogger(__name__)

#: Keys an analyser mapping may hold; anything else is a mistake worth reporting.
ANALYSER_KEYS = frozenset({"name", "type", "node", "namespace", "to_sync", "parser", "match_cb"})


class AnalyserError(ValueError):
    """An analyser mapping is invalid."""


class AnalyserConflict(AnalyserError):
    """An analyser with the same (normalised) name is already registered."""


@dataclass(frozen=True)
class Analyser:
    """A registered analyser (see :meth:`AnalyserRegistry.register`)."""

    name: str
    type: str
    node: str | None = None
    namespace: str | None = None
    to_sync: bool = False
    parser: Callable[..., Any] | None = None
    match_cb: Callable[..., Any] | None = None


@dataclass
class Analysis:
    """What the cache knows about a node after analysing it.

    ``to_sync`` starts as the analyser's and may be changed by its ``match_cb``; when it
    differs from the analyser's, it is also in ``extra["to_sync"]`` (kept with the
    node), which :func:`node_to_sync` reads back.
    """

    service: JID
    node: str
    analyser: Analyser | None = None
    type: str | None = None
    subtype: str | None = None
    namespace: str | None = None
    configuration: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    to_sync: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The mapping handed to ``match_cb``, which may amend it in place (``type``,
        ``subtype``, ``to_sync``, keys of its own). ``name`` is the analyser's name, as
        the reference Libervia cache gives it."""
        name = self.analyser.name if self.analyser else None
        return {
            "service": self.service,
            "node": self.node,
            "analyser": name,
            "name": name,
            "type": self.type,
            "subtype": self.subtype,
            "namespace": self.namespace,
            "conf": self.configuration,
            "to_sync": self.to_sync,
        }


def node_to_sync(analyser: Analyser | None, node_extra: dict[str, Any]) -> bool:
    """Whether a node is synchronised: its analyser's ``to_sync``, unless the analyser's
    ``match_cb`` decided otherwise for this node (``extra["to_sync"]``)."""
    decided = node_extra.get("to_sync")
    if isinstance(decided, bool):
        return decided
    return bool(analyser and analyser.to_sync)


class AnalyserRegistry:
    """The analysers registered by plugins, matched by node prefix or namespace."""

    def __init__(self) -> None:
        self._analysers: dict[str, Analyser] = {}

    def __iter__(self) -> Iterator[Analyser]:
        return iter(self._analysers.values())

    def __len__(self) -> int:
        return len(self._analysers)

    def get(self, name: str | None) -> Analyser | None:
        if name is None:
            return None
        return self._analysers.get(name.strip().lower())

    def register(self, analyser: Mapping[str, Any]) -> Analyser:
        """Register an analyser; see ``PubsubCache.register_analyser`` for the keys."""
        unknown = set(analyser) - ANALYSER_KEYS
        if unknown:
            raise AnalyserError(f"unknown analyser key(s): {', '.join(sorted(unknown))}")
        name = analyser.get("name")
        if not isinstance(name, str) or not name.strip():
            raise AnalyserError("an analyser needs a non-empty 'name'")
        name = name.strip().lower()
        type_ = analyser.get("type")
        if not isinstance(type_, str) or not type_.strip():
            raise AnalyserError(f"analyser {name!r} needs a non-empty 'type'")
        node = analyser.get("node")
        namespace = analyser.get("namespace")
        if not node and not namespace:
            raise AnalyserError(f"analyser {name!r} needs a 'node' prefix or a 'namespace'")
        for key in ("node", "namespace"):
            if analyser.get(key) is not None and not isinstance(analyser[key], str):
                raise AnalyserError(f"analyser {name!r}: {key!r} must be a string")
        for key in ("parser", "match_cb"):
            if analyser.get(key) is not None and not callable(analyser[key]):
                raise AnalyserError(f"analyser {name!r}: {key!r} must be callable")
        if name in self._analysers:
            raise AnalyserConflict(f"an analyser named {name!r} is already registered")
        registered = Analyser(
            name=name,
            type=type_.strip(),
            node=node or None,
            namespace=namespace or None,
            to_sync=bool(analyser.get("to_sync", False)),
            parser=analyser.get("parser"),
            match_cb=analyser.get("match_cb"),
        )
        self._analysers[name] = registered
        return registered

    def match_node(self, node: str) -> Analyser | None:
        """The analyser with the longest node-name prefix matching ``node``."""
        best: Analyser | None = None
        for analyser in self._analysers.values():
            if (
                analyser.node
                and node.startswith(analyser.node)
                and (best is None or len(analyser.node) > len(best.node or ""))
            ):
                best = analyser
        return best

    def match_namespace(self, namespace: str | None) -> Analyser | None:
        if not namespace:
            return None
        for analyser in self._analysers.values():
            if analyser.namespace == namespace:
                return analyser
        return None


def payload_namespace(item: domish.Element) -> str | None:
    """Namespace of the first child element of an ``<item/>``, if any."""
    for child in item.elements():
        return child.uri
    return None


async def analyse_node(
    registry: AnalyserRegistry,
    pubsub: XEP0060,
    client: Client,
    service: JID,
    node: str,
    first_items: list[domish.Element] | None = None,
) -> Analysis:
    """Analyse a node: match an analyser, fetch what helps, call ``match_cb``.

    ``first_items`` are items already at hand (e.g. a page just fetched), which spare
    a request for the most recent item. Failures of the fetches (forbidden,
    item-not-found, timeout) are logged once and the analysis goes on with what it has.
    """
    analysis = Analysis(service=service, node=node)
    analyser = registry.match_node(node)
    if analyser is None and len(registry):
        items = first_items
        if not items:
            try:
                items, __ = await pubsub.get_items_from_network(client, service, node, max_items=1)
            except Exception as error:
                log.info(
                    "analysis of %s on %s: no item to look at (%s)", node, service, describe(error)
                )
                items = []
        if items:
            analysis.namespace = payload_namespace(items[-1])
            analyser = registry.match_namespace(analysis.namespace)
    if analyser is None:
        return analysis
    analysis.analyser = analyser
    analysis.type = analyser.type
    analysis.to_sync = analyser.to_sync
    try:
        analysis.configuration = await pubsub.get_configuration(client, service, node)
    except Exception as error:
        log.debug("analysis of %s on %s: no configuration (%s)", node, service, describe(error))
    if analyser.match_cb is not None:
        data = analysis.as_dict()
        try:
            await as_deferred(analyser.match_cb, client, data)
        except Exception:
            log.exception("match_cb of analyser %r failed on node %s", analyser.name, node)
        else:
            analysis.type = data.get("type") or analysis.type
            analysis.subtype = data.get("subtype")
            analysis.extra = {
                k: v for k, v in data.items() if k not in analysis.as_dict() and _jsonable(v)
            }
            if isinstance(data.get("to_sync"), bool):
                analysis.to_sync = data["to_sync"]
            if analysis.to_sync != analyser.to_sync:
                analysis.extra["to_sync"] = analysis.to_sync
    return analysis


def _jsonable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | list | dict | type(None))
