"""Named trigger points with priorities (implements :class:`hostapi.TriggerManager`).

Plugins hook into the daemon's flows by registering callbacks on named points, like
pluggy hooks. Callbacks run by decreasing priority; equal priorities run in
registration order. A callback stops the flow by returning ``False`` (:meth:`point`,
:meth:`async_point`) or ``(False, value)`` (:meth:`async_return_point`).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

from libervia_cache.hostapi import ReturnPointResult, as_deferred

__all__ = ["TriggerManager"]


class TriggerManager:
    """Registry and runner of trigger callbacks, one ordered list per point name."""

    MIN_PRIORITY = -1000
    MAX_PRIORITY = 1000

    def __init__(self) -> None:
        # Per point: (sort key, callback), sorted by key. The key is (-priority, seq)
        # so that higher priorities come first and ties keep registration order.
        self._points: dict[str, list[tuple[tuple[int, int], Callable[..., Any]]]] = {}
        self._sequence = 0

    def add(self, point_name: str, callback: Callable[..., Any], priority: int = 0) -> None:
        """Register ``callback`` on ``point_name``; higher priorities run first.

        Raises ``ValueError`` if ``priority`` is outside
        [:attr:`MIN_PRIORITY`, :attr:`MAX_PRIORITY`] or if ``callback`` is already
        registered on that point.
        """
        if not self.MIN_PRIORITY <= priority <= self.MAX_PRIORITY:
            raise ValueError(
                f"trigger priority {priority} of {_name(callback)} is out of range "
                f"[{self.MIN_PRIORITY}, {self.MAX_PRIORITY}]"
            )
        entries = self._points.setdefault(point_name, [])
        if any(registered == callback for _, registered in entries):
            raise ValueError(f"{_name(callback)} is already registered on {point_name!r}")
        self._sequence += 1
        bisect.insort(entries, ((-priority, self._sequence), callback), key=lambda e: e[0])

    def remove(self, point_name: str, callback: Callable[..., Any]) -> None:
        """Unregister ``callback``; raises ``KeyError`` if it is not registered."""
        entries = self._points.get(point_name, [])
        for index, (_, registered) in enumerate(entries):
            if registered == callback:
                del entries[index]
                if not entries:
                    del self._points[point_name]
                return
        raise KeyError(f"{_name(callback)} is not registered on {point_name!r}")

    def callbacks(self, point_name: str) -> list[Callable[..., Any]]:
        """The callbacks of ``point_name`` in the order they run (a copy)."""
        return [callback for _, callback in self._points.get(point_name, [])]

    def point(self, point_name: str, *args: Any, **kwargs: Any) -> bool:
        """Run synchronous callbacks in order; the first returning ``False`` stops.

        Returns ``False`` if a callback stopped the flow, else ``True`` (also when no
        callback is registered).
        """
        for callback in self.callbacks(point_name):
            if callback(*args, **kwargs) is False:
                return False
        return True

    async def async_point(self, point_name: str, *args: Any, **kwargs: Any) -> bool:
        """Like :meth:`point`, but callbacks may be coroutine functions or return Deferreds.

        Callbacks run one after the other, each awaited before the next starts.
        """
        for callback in self.callbacks(point_name):
            if await as_deferred(callback, *args, **kwargs) is False:
                return False
        return True

    async def async_return_point(
        self, point_name: str, *args: Any, **kwargs: Any
    ) -> ReturnPointResult:
        """Run callbacks until one answers in place of the normal flow.

        Each callback returns ``(True, None)`` to let the flow go on, or
        ``(False, value)`` to stop it: ``(False, value)`` of the first stopper is
        returned; if none stops, ``(True, None)``. Any other return value is a
        ``TypeError`` naming the callback.
        """
        for callback in self.callbacks(point_name):
            result = await as_deferred(callback, *args, **kwargs)
            if not (isinstance(result, tuple) and len(result) == 2 and type(result[0]) is bool):
                raise TypeError(
                    f"trigger callback {_name(callback)} on {point_name!r} returned "
                    f"{result!r}; expected (True, None) or (False, value)"
                )
            go_on, value = result
            if not go_on:
                return False, value
        return True, None


def _name(callback: Callable[..., Any]) -> str:
    """A readable name of ``callback`` for error messages."""
    name = getattr(callback, "__qualname__", None) or getattr(callback, "__name__", None)
    module = getattr(callback, "__module__", None)
    if name is None:
        return repr(callback)
    return f"{module}.{name}" if module else name
