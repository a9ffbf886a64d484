"""Shared machinery of the benchmarks: the reactor, timing and statistics helpers.

The daemon runs on Twisted's asyncio reactor, so the benchmarks do too: :func:`install`
installs it on a fresh asyncio loop (once per process) and :func:`run` runs a Twisted
coroutine to completion on it, from synchronous code.
"""

from __future__ import annotations

import asyncio
import os
import platform
import resource
import sqlite3
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None


def install() -> asyncio.AbstractEventLoop:
    """Install the asyncio reactor on a new loop (idempotent) and start it running."""
    global _loop
    if _loop is not None:
        return _loop
    from twisted.internet import asyncioreactor

    _loop = asyncio.new_event_loop()
    asyncio.set_event_loop(_loop)
    if "twisted.internet.reactor" in sys.modules:
        raise RuntimeError("a Twisted reactor was installed before the benchmarks' one")
    asyncioreactor.install(_loop)
    from twisted.internet import reactor

    reactor.startRunning(installSignalHandlers=False)
    return _loop


def run(coro: Coroutine[Any, Any, T], timeout: float = 1800.0) -> T:
    """Run a Twisted coroutine (it may await Deferreds) to completion on the loop."""
    loop = install()
    from twisted.internet import defer

    future = defer.Deferred.fromCoroutine(coro).asFuture(loop)
    return loop.run_until_complete(asyncio.wait_for(future, timeout))


def shutdown() -> None:
    """Stop the reactor's thread pool (else the interpreter may hang at exit)."""
    if _loop is None:
        return
    from twisted.internet import reactor

    pool = getattr(reactor, "threadpool", None)
    if pool is not None:
        pool.stop()


async def sleep(seconds: float) -> None:
    """Twisted-friendly sleep."""
    from twisted.internet import reactor, task

    await task.deferLater(reactor, seconds, lambda: None)


async def timings_ms(
    fn: Callable[[], Awaitable[Any]], repeat: int, warmup: int = 20
) -> list[float]:
    """Durations (ms) of ``repeat`` sequential awaits of ``fn()``, after ``warmup`` ones."""
    for _ in range(warmup):
        await fn()
    result = []
    for _ in range(repeat):
        start = time.perf_counter()
        await fn()
        result.append((time.perf_counter() - start) * 1000)
    return result


def timings_ms_sync(fn: Callable[[], Any], repeat: int, warmup: int = 2) -> list[float]:
    """Durations (ms) of ``repeat`` calls of ``fn()``, after ``warmup`` ones."""
    for _ in range(warmup):
        fn()
    result = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        result.append((time.perf_counter() - start) * 1000)
    return result


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile (0-100) of ``values``, nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


def spread(values: list[float]) -> dict[str, float]:
    """Median, p10, p90 and the number of samples, rounded, for ``detail``."""
    return {
        "median_ms": round(median(values), 4),
        "p10_ms": round(percentile(values, 10), 4),
        "p90_ms": round(percentile(values, 90), 4),
        "samples": len(values),
    }


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def machine() -> dict[str, Any]:
    """The machine the figures come from."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(ram_gib, 1),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
    }
