"""Holding the daemon's real network path still at a precise point.

A race test must hold a state while it acts on it (a sync in the middle of its pages, a
payload fetch in flight), not hope that the work is slow enough. :class:`NetworkGate`
wraps the XEP-0060 plugin's network requests of a running daemon: the chosen request
really goes to the server, and its answer is held (or replaced by a failure) until the
test releases it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer, reactor

#: which requests a gate holds: (XEP-0060 plugin method, test on its keyword arguments)
KINDS: dict[str, tuple[str, Callable[[dict[str, Any]], bool]]] = {
    # a sync page (RSM)
    "page": ("get_items_from_network", lambda kwargs: kwargs.get("rsm_request") is not None),
    # the fetch of a notified item's payload (item ids)
    "payload": ("get_items_from_network", lambda kwargs: bool(kwargs.get("item_ids"))),
    "items": ("get_items_from_network", lambda kwargs: True),
    "subscribe": ("subscribe", lambda kwargs: True),
}


class NetworkGate:
    """Holds the ``at``-th request of ``kind`` to ``node`` (None: any node) once answered.

    ``reached`` fires when it is held; ``release()`` lets it go on; ``fail_with`` makes
    it fail instead (after the server answered), once released, or at once with
    ``hold=False``. ``remove()`` puts the plugin back.
    """

    def __init__(
        self,
        xep_0060: Any,
        kind: str = "page",
        at: int = 1,
        node: str | None = None,
        fail_with: BaseException | None = None,
        hold: bool = True,
    ) -> None:
        self.xep_0060 = xep_0060
        self.method, self.matches = KINDS[kind]
        self.original = getattr(xep_0060, self.method)
        self.node = node
        self.at = at
        self.fail_with = fail_with
        self.hold = hold
        self.seen = 0
        self.reached: defer.Deferred[None] = defer.Deferred()
        self._release: defer.Deferred[None] = defer.Deferred()
        setattr(xep_0060, self.method, self._request)

    def _request(self, client: Any, service: Any, node: str, *args: Any, **kwargs: Any) -> Any:
        if not self.matches(kwargs) or (self.node is not None and node != self.node):
            return self.original(client, service, node, *args, **kwargs)
        self.seen += 1
        if self.seen != self.at:
            return self.original(client, service, node, *args, **kwargs)

        async def held() -> Any:
            result = await self.original(client, service, node, *args, **kwargs)
            # fired from the reactor, once this request is parked on the gate: a test
            # resuming inside this coroutine could not cancel it
            reactor.callLater(0, self.reached.callback, None)
            if self.hold:
                await self._release
            if self.fail_with is not None:
                raise self.fail_with
            return result

        return defer.Deferred.fromCoroutine(held())

    def release(self) -> None:
        if not self._release.called:
            self._release.callback(None)

    def remove(self) -> None:
        self.release()
        setattr(self.xep_0060, self.method, self.original)
