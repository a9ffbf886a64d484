"""Run the daemon on Twisted's asyncio reactor until SIGINT/SIGTERM.

The asyncio reactor must be installed before this module is imported.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.python.failure import Failure

from libervia_cache.backend.config import DaemonConfig
from libervia_cache.backend.daemon import Daemon

log = logging.getLogger(__name__)
#: The installed reactor (zope interfaces do not type-check without a mypy plugin).
reactor: Any = _reactor


def run_daemon(config: DaemonConfig) -> int:
    """Start the daemon, run the reactor, stop cleanly; return the exit code."""
    daemon = Daemon(config)
    exit_code = 0

    def start() -> None:
        d = defer.Deferred.fromCoroutine(daemon.start())

        def failed(failure: Failure) -> None:
            nonlocal exit_code
            exit_code = 3
            log.error("the daemon could not start: %s", failure.getErrorMessage())
            log.debug("%s", failure.getTraceback())
            reactor.stop()

        d.addCallbacks(lambda __: log.info("daemon ready"), failed)

    def shutdown() -> defer.Deferred[None]:
        log.info("stopping")
        return defer.Deferred.fromCoroutine(daemon.stop())

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", shutdown)
    reactor.run()
    return exit_code
