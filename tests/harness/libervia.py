"""The test probe: a plugin inside the real Libervia backend that measures from there.

It runs in Libervia's process (``tests.servers.libervia_backend`` has every backend it
starts call :func:`install_probe`), never in the tests' own: it imports only the
standard library, Twisted and, once Libervia runs, Libervia. It adds one bridge method,
``cache_test_probe(action, arguments) -> result`` (JSON strings), with the actions of
:data:`Probe.ACTIONS`:

``get_items``       ``XEP_0060.get_items`` called in-process ``repeat`` times (the
                    trigger chain, the cache if any, else the network); durations in
                    seconds, the ids and metadata of the last answer
``sent``            pubsub requests (IQs) this profile's stream has sent so far
``events_applied``  events libervia-cache has taken into account
                    (``PUBSUB_CACHE_eventApplied``), by node
``stock_node``      the stock cache's state of a node (sync state, items held)
``profile_get_items`` ``get_items`` under cProfile: the top functions by own time
``cache_plugin``    which ``PUBSUB_CACHE`` Libervia loaded, the analysers registered on
                    it, and what registering one of their names again raises
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

PROBE_NAME = "CACHE_TEST_PROBE"
EVENT_APPLIED_POINT = "PUBSUB_CACHE_eventApplied"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"


def install_probe() -> None:
    """Have Libervia build the probe right after its own plugins.

    Called before Libervia starts: wraps the Twisted plugin's ``makeService`` (where
    Libervia installs its reactor, then imports its backend class) so that the backend
    class's plugin import also builds :class:`Probe`.
    """
    from twisted.plugins import libervia_backend_plugin  # type: ignore[attr-defined]

    maker = libervia_backend_plugin.serviceMaker
    make_service = maker.makeService

    def makeService(options: Any) -> Any:
        backend = make_service(options)
        backend_class = type(backend)
        import_plugins = backend_class._import_plugins

        def _import_plugins(self: Any) -> None:
            import_plugins(self)
            probe = Probe(self)
            probe.has_handlers = False
            probe._info = {
                "name": "libervia-cache test probe",
                "import_name": PROBE_NAME,
                "modes": {"client"},
            }
            self.plugins[PROBE_NAME] = probe

        backend_class._import_plugins = _import_plugins
        return backend

    maker.makeService = makeService


class Probe:
    """See the module docstring."""

    def __init__(self, host: Any) -> None:
        self.host = host
        self.sent: dict[str, int] = {}
        self.events: dict[str, int] = {}
        self.ACTIONS: dict[str, Callable[[dict[str, Any]], Any]] = {
            "get_items": self.get_items,
            "sent": self.pubsub_sent,
            "events_applied": self.events_applied,
            "stock_node": self.stock_node,
            "cache_plugin": self.cache_plugin,
            "profile_get_items": self.profile_get_items,
        }
        host.trigger.add(EVENT_APPLIED_POINT, self._event_applied)
        host.bridge.add_method(
            "cache_test_probe", ".plugin", "ss", "s", method=self._call, async_=True
        )

    def _call(self, action: str, arguments: str) -> Any:
        from twisted.internet import defer

        async def run() -> str:
            result = await defer.maybeDeferred(self.ACTIONS[action], json.loads(arguments or "{}"))
            return json.dumps(result, default=str)

        return defer.ensureDeferred(run())

    def _event_applied(self, client: Any, event: Any) -> bool:
        self.events[event.nodeIdentifier] = self.events.get(event.nodeIdentifier, 0) + 1
        return True

    def events_applied(self, arguments: dict[str, Any]) -> dict[str, int]:
        return dict(self.events)

    def pubsub_sent(self, arguments: dict[str, Any]) -> int:
        """Pubsub IQs sent by the profile's stream since the probe first looked."""
        client = self.host.get_client(arguments["profile"])
        stream = client.xmlstream
        if not getattr(stream, "_probe_counting", False):
            send = stream.send
            profile = client.profile

            def counting_send(obj: Any) -> Any:
                if getattr(obj, "name", None) == "iq" and any(
                    getattr(child, "uri", None) == NS_PUBSUB for child in obj.elements()
                ):
                    self.sent[profile] = self.sent.get(profile, 0) + 1
                return send(obj)

            stream.send = counting_send
            stream._probe_counting = True
            self.sent.setdefault(profile, 0)
        return self.sent[client.profile]

    async def get_items(self, arguments: dict[str, Any]) -> dict[str, Any]:
        from twisted.words.protocols.jabber.jid import JID
        from wokkel import rsm

        client = self.host.get_client(arguments["profile"])
        service = JID(arguments["service"]) if arguments.get("service") else None
        rsm_args = arguments.get("rsm")
        extra = dict(arguments.get("extra") or {})
        durations = []
        items: list[Any] = []
        metadata: dict[str, Any] = {}
        for __ in range(int(arguments.get("repeat", 1))):
            rsm_request = rsm.RSMRequest(**rsm_args) if rsm_args is not None else None
            began = time.perf_counter()
            items, metadata = await self.host.plugins["XEP-0060"].get_items(
                client,
                service,
                arguments["node"],
                arguments.get("max_items"),
                arguments.get("item_ids"),
                None,
                rsm_request,
                dict(extra),
            )
            durations.append(time.perf_counter() - began)
        return {
            "durations": durations,
            "ids": [item.getAttribute("id") for item in items],
            "xml": [item.toXml() for item in items] if arguments.get("with_xml") else None,
            "metadata": {k: v for k, v in metadata.items()},
        }

    async def stock_node(self, arguments: dict[str, Any]) -> dict[str, Any] | None:
        from twisted.words.protocols.jabber.jid import JID

        client = self.host.get_client(arguments["profile"])
        node = await self.host.memory.storage.get_pubsub_node(
            client, JID(arguments["service"]), arguments["node"], with_items=True
        )
        if node is None:
            return None
        return {
            "sync_state": node.sync_state.name if node.sync_state else None,
            "items": len(node.items),
        }

    async def profile_get_items(self, arguments: dict[str, Any]) -> str:
        import cProfile
        import io
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            await self.get_items(arguments)
        finally:
            profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(arguments.get("sort", "tottime")).print_stats(
            int(arguments.get("top", 40))
        )
        return out.getvalue()

    def cache_plugin(self, arguments: dict[str, Any]) -> dict[str, Any]:
        cache = self.host.plugins.get("PUBSUB_CACHE")
        if cache is None:
            return {"module": None}
        analysers = (
            [analyser.name for analyser in cache.cache.analysers]
            if hasattr(cache, "cache")
            else sorted(cache.analysers)
        )
        duplicate: list[str] = []
        if analysers:
            try:
                cache.register_analyser({"name": analysers[0].upper(), "type": "x", "node": "x"})
            except Exception as error:
                duplicate = [cls.__name__ for cls in type(error).__mro__]
        return {
            "module": type(cache).__module__,
            "analysers": analysers,
            "duplicate_error": duplicate,
        }
