"""The one bridge between the Twisted and asyncio worlds.

The daemon runs on Twisted's asyncio reactor: protocol code is Twisted (Deferreds,
tx_xmpp handlers), the store is asyncio (SQLAlchemy asyncio + aiosqlite). Twisted code
cannot ``await`` an asyncio coroutine directly, so the store's public methods are
wrapped with :func:`deferred_method`: calling them returns a Deferred that Twisted code
simply awaits. No thread pool is involved: both worlds share the same event loop.

Cancelling such a Deferred never cancels the database work under it: the coroutine
runs as a shielded task to its end (its transaction commits or rolls back), and only
the caller stops waiting. A transaction interrupted half-way by a cancellation could
otherwise leave a pooled connection inside an open transaction, holding SQLite's write
lock for good. Whoever must not see the work's effect guards it in the database itself
(see the store's sync tokens).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from twisted.internet import defer
from twisted.python import failure

P = ParamSpec("P")
T = TypeVar("T")


def aio(
    coro: Coroutine[Any, Any, T], tasks: set[asyncio.Task[Any]] | None = None
) -> defer.Deferred[T]:
    """Run an asyncio coroutine as a task of the running loop; return a Deferred of it.

    Cancelling the Deferred leaves the task running (see the module docstring). The task
    is added to ``tasks`` while it runs, so that its owner can wait for it on close.
    """
    task = asyncio.ensure_future(coro)
    if tasks is not None:
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    # fired from the task's own done callback: no shielding future in between, and
    # no canceller, so that cancelling the Deferred leaves the task alone (a hop less
    # than Deferred.fromFuture(asyncio.shield(task)), which the hot path notices)
    deferred: defer.Deferred[T] = defer.Deferred()

    def done(task: asyncio.Future[T]) -> None:
        try:
            result = task.result()
        except BaseException:
            if not deferred.called:
                deferred.errback(failure.Failure())
            return
        if not deferred.called:  # else the caller stopped waiting
            deferred.callback(result)

    task.add_done_callback(done)
    return deferred


def deferred_method(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, defer.Deferred[T]]:
    """Decorate an asyncio coroutine method so that calling it returns a Deferred.

    The task is registered in the instance's ``_tasks`` set when it has one.
    """

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> defer.Deferred[T]:
        tasks = getattr(args[0], "_tasks", None) if args else None
        return aio(method(*args, **kwargs), tasks)

    wrapper.__wrapped_coroutine__ = method  # type: ignore[attr-defined]
    return wrapper
