"""Run the daemon on Twisted's asyncio reactor until SIGINT/SIGTERM: its logs, its
exit code, and what it tells systemd.

Logs go to stderr. On a terminal or into a file, each line carries its time and level;
under systemd (``JOURNAL_STREAM`` names stderr) the journal records the time itself, so
lines carry a syslog priority prefix (``<6>``) instead, which the journal turns into the
entry's priority (``journalctl -p warning`` works). Twisted's own log messages (an
unhandled error in a Deferred, say) go through the same logging. With ``NOTIFY_SOCKET``
(a ``Type=notify`` unit), the daemon tells systemd when it is ready and when it stops.

Exit codes: 0 after a clean stop, 1 when the daemon refuses to start because of the
user's setup (another daemon on the same socket or database), 3 when it cannot start
otherwise. The asyncio reactor must be installed before this module is imported.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Any, TextIO

from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.python.failure import Failure

from libervia_cache.backend.bridge import AlreadyRunning
from libervia_cache.backend.config import DaemonConfig, LogLevels
from libervia_cache.backend.daemon import Daemon
from libervia_cache.backend.plugins import PluginLoadError
from libervia_cache.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USER_ERROR,
    BridgeError,
    kind_of,
    one_line,
)

log = logging.getLogger(__name__)
#: The installed reactor (zope interfaces do not type-check without a mypy plugin).
reactor: Any = _reactor

#: logging level -> syslog priority, for the journal's ``<N>`` prefix
SYSLOG_PRIORITIES = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}

TERMINAL_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"


def writes_to_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is connected to the systemd journal: ``JOURNAL_STREAM`` holds
    the device and inode of the journal's stream, which must be this one's."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, sep, inode = value.partition(":")
    if not sep:
        return False
    try:
        stat = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return f"{stat.st_dev}:{stat.st_ino}" == f"{device}:{inode}"


class JournalFormatter(logging.Formatter):
    """Lines for the journal: no time (the journal has it), a ``<N>`` syslog priority on
    every line of a record (a traceback keeps its priority)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        priority = SYSLOG_PRIORITIES.get(record.levelno, 6 if record.levelno < 30 else 3)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def setup_logging(levels: LogLevels, stream: TextIO | None = None) -> logging.Handler:
    """Send the logs of the daemon, its plugins and Twisted to ``stream`` (stderr), at
    ``levels``; return the handler."""
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    if writes_to_journal(stream):
        handler.setFormatter(JournalFormatter(JOURNAL_FORMAT))
    else:
        handler.setFormatter(logging.Formatter(TERMINAL_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    for name, level in levels.levels().items():
        logging.getLogger(name or None).setLevel(level)
    _twisted_to_logging()
    return handler


_twisted_logging = False


def _twisted_to_logging() -> None:
    """Twisted's log events (unhandled errors in Deferreds...) through ``logging``."""
    global _twisted_logging
    if _twisted_logging:
        return
    _twisted_logging = True
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    observer: Any = STDLibLogObserver(name="twisted")  # an ILogObserver (zope: no mypy)
    globalLogBeginner.beginLoggingTo([observer], discardBuffer=False, redirectStandardIO=False)


def notify_systemd(state: str) -> None:
    """Tell systemd ``state`` (``READY=1``, ``STOPPING=1``...) when it listens
    (``NOTIFY_SOCKET``, set for ``Type=notify`` units); nothing otherwise."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as error:
        log.warning("could not notify systemd (%s): %s", address, error.strerror or error)


#: why a daemon may not start that is not a bug: said in one line, without traceback
EXPECTED_START_ERRORS = (AlreadyRunning, PluginLoadError, BridgeError, OSError)


def start_exit_code(error: BaseException) -> int:
    """The exit code of a daemon that could not start because of ``error``."""
    if isinstance(error, AlreadyRunning) or kind_of(error) == "conflict":
        return EXIT_USER_ERROR
    return EXIT_FAILURE


def run_daemon(config: DaemonConfig, log_level: str | None = None) -> int:
    """Start the daemon, run the reactor, stop cleanly; return the exit code."""
    daemon = Daemon(config, log_level=log_level or config.log_levels.text)
    exit_code = EXIT_OK

    def start() -> None:
        d = defer.Deferred.fromCoroutine(daemon.start())

        def ready(__: Any) -> None:
            connected = sum(1 for c in daemon.connections.values() if c.xmpp.is_connected)
            log.info(
                "daemon ready (%d of %d profile(s) connected)", connected, len(config.profiles)
            )
            notify_systemd(
                f"READY=1\nSTATUS={connected} of {len(config.profiles)} profile(s) connected"
            )

        def failed(failure: Failure) -> None:
            nonlocal exit_code
            error = failure.value
            assert error is not None
            exit_code = start_exit_code(error)
            if isinstance(error, EXPECTED_START_ERRORS):
                log.error("the daemon could not start: %s", one_line(str(error)))
            else:  # a bug: the traceback says where
                log.error("the daemon could not start:\n%s", failure.getTraceback())
            reactor.stop()

        d.addCallbacks(ready, failed)

    def shutdown() -> defer.Deferred[None]:
        log.info("stopping")
        notify_systemd("STOPPING=1")
        return defer.Deferred.fromCoroutine(daemon.stop())

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", shutdown)
    reactor.run()
    return exit_code
