"""Running jobs one at a time: one queue, or one queue per key.

Events of a node must be applied in arrival order (two publications applied
concurrently could be stored in the wrong order), and a sync empties its node as a job
of the same queue, so that an event is applied either before (and then found in the
pages) or after (and then kept, and skipped in pages). Nodes do not wait for each
other: one slow job (a payload fetch from a slow server) holds only its own node.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

from twisted.internet import defer

from libervia_cache.hostapi import as_deferred


class SerialQueue:
    """Runs jobs one at a time, in the order they were queued.

    Like ``defer.DeferredLock().run``, without its recursion: a lock whose holders
    finish synchronously hands over to the next waiter from inside the release, so a
    long queue (hundreds of events arriving while the store is busy) ends in a
    ``RecursionError``. Here one consumer loop awaits each job in turn.
    """

    def __init__(self, on_idle: Callable[[], None] | None = None) -> None:
        self._jobs: deque[tuple[Callable[[], Any], defer.Deferred[Any]]] = deque()
        self._running = False
        self._on_idle = on_idle

    def __len__(self) -> int:
        """Jobs waiting or running."""
        return len(self._jobs) + (1 if self._running else 0)

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
            if self._on_idle is not None:
                self._on_idle()


class KeyedQueues:
    """One :class:`SerialQueue` per key, forgotten once empty."""

    def __init__(self) -> None:
        self._queues: dict[Hashable, SerialQueue] = {}

    def run(self, key: Hashable, job: Callable[[], Any]) -> defer.Deferred[Any]:
        """Run ``job`` after the jobs already queued for ``key``."""
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = SerialQueue(on_idle=lambda: self._forget(key, queue))
        return queue.run(job)

    def _forget(self, key: Hashable, queue: SerialQueue | None) -> None:
        if self._queues.get(key) is queue and queue is not None and not len(queue):
            del self._queues[key]

    def pending(self, key: Hashable) -> int:
        """Jobs waiting or running for ``key``."""
        queue = self._queues.get(key)
        return len(queue) if queue is not None else 0

    def __len__(self) -> int:
        """Keys with jobs."""
        return len(self._queues)
