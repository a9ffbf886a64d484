"""Run the reference daemon against a test server: in-process or as the real command.

In-process: :func:`start_daemon` (any profiles, any database file), then
:func:`cache_of` for its cache plugin and :func:`sync_of` / :func:`synced` to wait for a
node's sync. As a process: :class:`DaemonProcess`, :func:`running_daemon`, and the CLI
through :func:`run_cli` / :func:`cli_json`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from tx_xmpp import pubsub

from tests.servers.base import XMPPServer, wait_until

if TYPE_CHECKING:
    from twisted.words.protocols.jabber.jid import JID

    from libervia_cache.backend.daemon import Daemon
    from libervia_cache.plugin import PubsubCache
    from libervia_cache.plugin.sync import NodeSync

ATOM = "http://www.w3.org/2005/Atom"


def write_config(
    directory: Path,
    server: XMPPServer,
    profiles: Iterable[str] = ("bob",),
    database: Path | str | None = None,
    **cache_options: Any,
) -> Path:
    """A daemon configuration file for ``profiles`` (accounts of ``server``), its
    database at ``database`` (an SQLite file, default ``cache.db`` in ``directory``; or
    a database URL, e.g. PostgreSQL's) and the ``[pubsub_cache]`` options given (e.g.
    ``sync_page_size=5``)."""
    db_url = (
        database
        if isinstance(database, str)
        else f"sqlite+aiosqlite:///{database or directory / 'cache.db'}"
    )
    lines = [
        "[daemon]",
        f"socket = {directory / 'daemon.sock'}",
        "",
        "[pubsub_cache]",
        f"db_url = {db_url}",
    ]
    lines += [f"{key} = {value}" for key, value in cache_options.items()]
    for user in profiles:
        lines += [
            "",
            f"[profile {user}]",
            f"jid = {server.jid(user)}",
            f"password = {server.accounts[user]}",
            f"host = {server.host}",
            f"port = {server.c2s_port}",
            "tls = required",
            f"tls_ca = {server.ca_file}",
        ]
    path = directory / "libervia-cache.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def atom_entry(item_id: str, title: str, content: str = "", tags: Iterable[str] = ()) -> str:
    """A XEP-0277 Atom entry payload."""
    categories = "".join(f"<category term='{tag}'/>" for tag in tags)
    return (
        f"<entry xmlns='{ATOM}'><id>urn:uuid:{item_id}</id><title>{title}</title>"
        f"<content>{content}</content><published>2026-01-01T00:00:00Z</published>"
        f"<updated>2026-01-01T00:00:00Z</updated>{categories}</entry>"
    )


class DaemonProcess:
    """``libervia-cache daemon`` as a child process, ready once its socket answers."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log_path = config.parent / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(self.config, *args, check=check)

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "libervia_cache", "--config", str(self.config), "daemon"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_until(
            lambda: "daemon ready" in self.log_path.read_text(errors="replace"),
            "the daemon to be ready",
            timeout=60,
            alive=lambda: self.process is not None and self.process.poll() is None,
        )

    def stop(self) -> int:
        assert self.process is not None
        self.process.terminate()
        try:
            code = self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._log.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def run_cli(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``libervia-cache --config CONFIG ARGS...``; return the completed process."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "libervia_cache", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    result.elapsed = time.monotonic() - started  # type: ignore[attr-defined]
    if check and result.returncode != 0:
        raise AssertionError(
            f"libervia-cache {' '.join(args)} exited {result.returncode}: {result.stderr}"
        )
    return result


@contextmanager
def running_daemon(
    directory: Path,
    server: XMPPServer,
    profiles: Iterable[str] = ("bob",),
    database: Path | str | None = None,
    **cache_options: Any,
) -> Iterator[DaemonProcess]:
    """A daemon process for ``profiles`` of ``server``, stopped (cleanly) at the end.

    For module-scoped fixtures: one daemon serves every test of a module.
    """
    daemon = DaemonProcess(
        write_config(directory, server, profiles=profiles, database=database, **cache_options)
    )
    daemon.start()
    try:
        yield daemon
    finally:
        code = daemon.stop()
        assert code == 0, daemon.log()


def cli_json(daemon: DaemonProcess, *args: str) -> Any:
    """Run a command with ``--json``: its stdout must be exactly one JSON document."""
    result = daemon.cli(*args, "--json")
    return json.loads(result.stdout)


async def start_daemon(
    directory: Path,
    server: XMPPServer,
    profiles: Iterable[str] = ("bob",),
    database: Path | str | None = None,
    connect: bool = True,
    **options: Any,
) -> Daemon:
    """The reference daemon in-process, every profile connected (stop it after).

    ``connect=False``: started, no profile connected yet (a test may hold the network
    path first, then connect them with :func:`connect_profiles`).
    """
    from libervia_cache.backend.config import load_config
    from libervia_cache.backend.daemon import Daemon

    profiles = list(profiles)
    config = write_config(directory, server, profiles=profiles, database=database, **options)
    daemon = Daemon(load_config(config))
    await daemon.start(connect=False)
    if connect:
        await connect_profiles(daemon, profiles)
    return daemon


async def connect_profiles(daemon: Daemon, profiles: Iterable[str] = ("bob",)) -> None:
    """Connect ``profiles`` of a daemon started with ``connect=False``."""
    profiles = list(profiles)
    for name in profiles:
        await daemon.connect_profile(daemon.config.profile(name))
    missing = [p for p in profiles if p not in daemon.clients]
    if missing:
        await daemon.stop()
        raise AssertionError(f"{', '.join(missing)} could not connect")


def cache_of(daemon: Daemon) -> PubsubCache:
    """The daemon's cache plugin."""
    cache: PubsubCache = daemon.plugins["PUBSUB_CACHE"]
    return cache


def sync_of(daemon: Daemon, service: JID | str, node: str, profile: str = "bob") -> NodeSync | None:
    """The sync of ``node`` running now, if any."""
    return cache_of(daemon).syncs.running((profile, str(service), node))


async def synced(daemon: Daemon, service: JID | str, node: str, profile: str = "bob") -> None:
    """Wait for the running sync of ``node`` to end (at once if none runs)."""
    sync = sync_of(daemon, service, node, profile)
    if sync is not None:
        await sync.wait()


def cli_argv(config: Path, *args: str) -> list[str]:
    """The command line of ``libervia-cache --config CONFIG ARGS...`` (for custom stdio)."""
    return [sys.executable, "-m", "libervia_cache", "--config", str(config), *args]


def restart_log(daemon: DaemonProcess) -> None:
    """Move the log of a stopped daemon aside, so that the next start waits for its own
    "daemon ready" line (the old log is kept next to it, numbered)."""
    number = 1
    while (kept := daemon.log_path.with_suffix(f".{number}.log")).exists():
        number += 1
    if daemon.log_path.exists():
        daemon.log_path.rename(kept)


def kill_daemon(daemon: DaemonProcess) -> int:
    """SIGKILL the daemon process (no cleanup of any kind) and reap it."""
    assert daemon.process is not None
    daemon.process.kill()
    code = daemon.process.wait()
    daemon._log.close()
    return code


#: seconds a test waits for the cache to apply an event before failing with a message
EVENT_TIMEOUT = 20


class AppliedEvents:
    """Records the events the daemon's cache took into account (applied, or its node made
    suspect) and waits for them, never sleep-and-hope. Servers also send events nobody
    asked for (the last item replayed to a new subscriber): wait for the event you caused,
    by its items (:meth:`wait_for_items`) or by a count taken before acting."""

    def __init__(self, daemon: Daemon) -> None:
        from libervia_cache.plugin import EVENT_APPLIED_POINT

        self.daemon = daemon
        self.events: list[Any] = []
        self._waiters: list[tuple[Callable[[], bool], defer.Deferred[None]]] = []
        daemon.trigger.add(EVENT_APPLIED_POINT, self._applied)

    def _applied(self, client: Any, event: Any) -> bool:
        self.events.append(event)
        for waiter in list(self._waiters):
            condition, deferred = waiter
            if condition():
                self._waiters.remove(waiter)
                deferred.callback(None)
        return True

    def count(self, node: str, kind: type) -> int:
        return sum(1 for e in self.events if e.nodeIdentifier == node and isinstance(e, kind))

    def mentions(self, node: str, item_id: str) -> int:
        """How many applied items events of ``node`` published or retracted ``item_id``."""
        return sum(
            1
            for e in self.events
            if e.nodeIdentifier == node
            and isinstance(e, pubsub.ItemsEvent)
            and any(i.getAttribute("id") == item_id for i in e.items)
        )

    def wait_for_items(self, node: str, item_ids: list[str], what: str) -> defer.Deferred[None]:
        """Wait until one more event mentioning each of ``item_ids`` was applied."""
        targets = {i: self.mentions(node, i) + 1 for i in item_ids}
        return self.wait(lambda: all(self.mentions(node, i) >= n for i, n in targets.items()), what)

    def wait(self, condition: Callable[[], bool], what: str) -> defer.Deferred[None]:
        deferred: defer.Deferred[None] = defer.Deferred()
        if condition():
            deferred.callback(None)
            return deferred
        self._waiters.append((condition, deferred))

        def timed_out(failure: Any) -> None:
            raise AssertionError(f"the cache did not apply {what} within {EVENT_TIMEOUT} s")

        from twisted.internet import reactor

        deferred.addTimeout(EVENT_TIMEOUT, reactor, onTimeoutCancel=lambda *a: None)
        deferred.addErrback(timed_out)
        return deferred

    def remove(self) -> None:
        from libervia_cache.plugin import EVENT_APPLIED_POINT

        self.daemon.trigger.remove(EVENT_APPLIED_POINT, self._applied)
