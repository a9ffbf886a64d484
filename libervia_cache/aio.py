"""The one bridge between the Twisted and asyncio worlds.

The daemon runs on Twisted's asyncio reactor: protocol code is Twisted (Deferreds,
tx_xmpp handlers), the store is asyncio (SQLAlchemy asyncio + aiosqlite). Twisted code
cannot ``await`` an asyncio coroutine directly, so the store's public methods are
wrapped with :func:`deferred_method`: calling them returns a Deferred that Twisted code
simply awaits. No thread pool is involved: both worlds share the same event loop.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from twisted.internet import defer

P = ParamSpec("P")
T = TypeVar("T")


def aio(coro: Coroutine[Any, Any, T]) -> defer.Deferred[T]:
    """Run an asyncio coroutine as a task of the running loop; return a Deferred of it."""
    return defer.Deferred.fromFuture(asyncio.ensure_future(coro))


def deferred_method(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, defer.Deferred[T]]:
    """Decorate an asyncio coroutine method so that calling it returns a Deferred."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> defer.Deferred[T]:
        return aio(method(*args, **kwargs))

    wrapper.__wrapped_coroutine__ = method  # type: ignore[attr-defined]
    return wrapper


def as_deferred(func: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
    """Call ``func`` and return a Deferred of its result.

    ``func`` may be a plain function, a coroutine function (run by Twisted, so it may
    await Deferreds) or return a Deferred. Exceptions become failed Deferreds.
    """
    try:
        result = func(*args, **kwargs)
    except Exception:
        return defer.fail()
    if isinstance(result, defer.Deferred):
        return result
    if inspect.iscoroutine(result):
        return defer.Deferred.fromCoroutine(result)
    if isinstance(result, Awaitable):
        return defer.Deferred.fromFuture(asyncio.ensure_future(result))
    return defer.succeed(result)


class SerialQueue:
    """Runs jobs one at a time, in the order they were queued.

    Like ``defer.DeferredLock().run``, without its recursion: a lock whose holders
    finish synchronously hands over to the next waiter from inside the release, so a
    long queue (hundreds of events arriving while the store is busy) ends in a
    ``RecursionError``. Here one consumer loop awaits each job in turn.
    """

    def __init__(self) -> None:
        self._jobs: deque[tuple[Callable[[], Any], defer.Deferred[Any]]] = deque()
        self._running = False

    def run(self, job: Callable[[], Any]) -> defer.Deferred[Any]:
        """Queue ``job`` (plain, coroutine function or Deferred-returning); a Deferred
        of its result."""
        done: defer.Deferred[Any] = defer.Deferred()
        self._jobs.append((job, done))
        if not self._running:
            self._running = True
            defer.Deferred.fromCoroutine(self._consume())
        return done

    async def _consume(self) -> None:
        try:
            while self._jobs:
                job, done = self._jobs.popleft()
                try:
                    result = await as_deferred(job)
                except BaseException:
                    done.errback()
                else:
                    done.callback(result)
        finally:
            self._running = False
