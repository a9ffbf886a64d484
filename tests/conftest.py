"""Shared test machinery.

The daemon runs on Twisted's asyncio reactor, so the tests do too: the reactor is
installed on one asyncio loop at import time, and every ``async def`` test runs on it as
a Twisted coroutine (it may ``await`` Deferreds, and the store's methods, which return
Deferreds). Each async test has a timeout, so a lost event fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet import asyncioreactor

_loop = asyncio.new_event_loop()
asyncio.set_event_loop(_loop)
asyncioreactor.install(_loop)

import pytest  # noqa: E402
from twisted.internet import defer, reactor  # noqa: E402

T = TypeVar("T")

ASYNC_TEST_TIMEOUT = float(os.environ.get("LIBERVIA_CACHE_TEST_TIMEOUT", "120"))

_reactor_started = False


def _ensure_reactor_running() -> None:
    global _reactor_started
    if not _reactor_started:
        reactor.startRunning(installSignalHandlers=False)
        _reactor_started = True


def run(coro: Coroutine[Any, Any, T], timeout: float = ASYNC_TEST_TIMEOUT) -> T:
    """Run a Twisted coroutine to completion on the shared loop (for sync fixtures)."""
    _ensure_reactor_running()
    future = defer.Deferred.fromCoroutine(coro).asFuture(_loop)
    return _loop.run_until_complete(asyncio.wait_for(future, timeout))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    run(pyfuncitem.obj(**kwargs))
    return True


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the reactor's thread pool (``deferToThread``), or the interpreter hangs."""
    if _reactor_started:
        pool = getattr(reactor, "threadpool", None)
        if pool is not None:
            pool.stop()


@pytest.fixture
def event_loop() -> asyncio.AbstractEventLoop:
    """The loop the reactor runs on."""
    return _loop
